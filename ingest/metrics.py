"""Prometheus metrics of the ingest service (`aqpipe_*`), served on metrics.port."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

RECEIVED = Counter("aqpipe_received_messages_total", "MQTT messages received", ["kind"])
READINGS_WRITTEN = Counter("aqpipe_written_readings_total", "Readings accepted by InfluxDB")
DEADLETTERED = Counter("aqpipe_deadletter_total", "Messages written to the dead-letter store", ["reason"])
BATCH_SECONDS = Histogram(
    "aqpipe_batch_write_seconds", "Time to make one batch durable (write incl. retries)",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)
WRITE_ERRORS = Counter("aqpipe_write_errors_total", "Failed InfluxDB write attempts", ["kind"])
MQTT_CONNECTED = Gauge("aqpipe_mqtt_connected", "1 while connected to the MQTT broker")
MQTT_RECONNECTS = Counter("aqpipe_mqtt_connects_total", "Successful MQTT (re)connections")
IN_FLIGHT = Gauge("aqpipe_inflight_messages", "Messages received and not yet acknowledged")

SPOOLED = Counter("aqpipe_spooled_readings_total", "Readings written to the disk spool (InfluxDB unavailable)")
DRAINED = Counter("aqpipe_spool_drained_readings_total", "Readings moved from the spool into InfluxDB")
SPOOL_BYTES = Gauge("aqpipe_spool_bytes", "Bytes waiting in the disk spool")
SPOOL_SEGMENTS = Gauge("aqpipe_spool_segments", "Segment files in the disk spool")
SPOOL_OLDEST_AGE = Gauge("aqpipe_spool_oldest_age_seconds", "Age of the oldest spooled batch (0 when empty)")
SPOOL_FULL = Gauge("aqpipe_spool_full", "1 while the spool is full and acknowledgements are held back")
