"""Prometheus metrics of the alerts service (`aqpipe_alert*`), served on metrics.port."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

NOTIFICATIONS = Counter("aqpipe_alert_notifications_total",
                        "Alert notifications by channel and result (sent, retried, failed)", ["channel", "result"])
FIRING = Gauge("aqpipe_alerts_firing", "Alert series currently firing", ["rule"])
EVALUATIONS = Counter("aqpipe_alert_evaluations_total", "Rule evaluations (one per rule and record or check)", ["rule"])
TRANSITIONS = Counter("aqpipe_alert_transitions_total", "Alert state changes notified", ["rule", "state"])
RECORD_SECONDS = Histogram("aqpipe_alert_record_seconds",
                           "Time from a derived record's arrival to its effect committed (before the ack)",
                           buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10))
ERRORS = Counter("aqpipe_alert_errors_total", "Records or checks that failed and will be retried", ["kind"])
MQTT_CONNECTED = Gauge("aqpipe_alerts_mqtt_connected", "1 while the alerts service is connected to the broker")
