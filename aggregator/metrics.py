"""Prometheus metrics of the aggregator (`aqpipe_*`), served on metrics.port."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

ROLLUPS = Counter("aqpipe_rollups_total", "Rollup points written to InfluxDB", ["kind"])
AGGREGATE_SECONDS = Histogram(
    "aqpipe_aggregate_seconds", "Time to compute and write one batch of dirty rollups",
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120),
)
DIRTY = Gauge("aqpipe_aggregator_dirty_rollups", "Rollups waiting to be (re)computed")
WAITING_FOR_INGEST = Counter("aqpipe_aggregator_waits_total",
                             "Batches postponed because InfluxDB did not yet hold readings seen on MQTT")
GAVE_UP_WAITING = Counter("aqpipe_aggregator_missing_readings_total",
                          "Input hours computed without readings seen on MQTT but not stored (max_wait_s passed)")
INCOMPLETE = Gauge("aqpipe_aggregator_incomplete_rollups",
                   "Rollups written complete=false, re-checked until their readings land or lateness_hours pass")
ERRORS = Counter("aqpipe_aggregator_errors_total", "Failed batches (query or write), retried", ["kind"])
MQTT_CONNECTED = Gauge("aqpipe_aggregator_mqtt_connected", "1 while the aggregator is connected to the broker")
