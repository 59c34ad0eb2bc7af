"""The gateway's Prometheus metrics (`aqpipe_hj212_gateway_*`), registered once, here."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

CONNECTIONS = Gauge("aqpipe_hj212_gateway_connections", "Open logger connections")
ACCEPTED = Counter("aqpipe_hj212_gateway_connection_attempts_total", "Logger connections accepted or refused (max_connections)", ["result"])
DISCONNECTS = Counter("aqpipe_hj212_gateway_disconnects_total", "Closed logger connections by cause", ["reason"])
BYTES_IN = Counter("aqpipe_hj212_gateway_received_bytes_total", "Bytes received from loggers")
GARBAGE = Counter("aqpipe_hj212_gateway_garbage_bytes_total", "Bytes skipped outside any frame (resync)")
PUBLISHED = Counter("aqpipe_hj212_gateway_published_frames_total", "Valid frames published and acknowledged by the broker")
INVALID = Counter("aqpipe_hj212_gateway_invalid_frames_total", "Frames not published, by reason", ["reason"])
REPLIES = Counter("aqpipe_hj212_gateway_replies_total", "Replies sent to loggers, by command", ["cn"])
PUBLISH_FAILED = Counter("aqpipe_hj212_gateway_publish_failures_total", "Publishes the broker refused (PUBACK reason code)")
PENDING = Gauge("aqpipe_hj212_gateway_pending_publishes", "Publishes awaiting the broker's PUBACK")
PUBACK_SECONDS = Histogram(
    "aqpipe_hj212_gateway_puback_seconds", "Time from publish to the broker's PUBACK",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
MQTT_CONNECTED = Gauge("aqpipe_hj212_gateway_mqtt_connected", "1 while the gateway is connected to the broker")
REJECTED = Counter("aqpipe_hj212_gateway_rejected", "Frames refused by access control, not published: "
                   "auth (wrong or missing PW), unknown_mn (MN not in the registry)", ["reason"])
