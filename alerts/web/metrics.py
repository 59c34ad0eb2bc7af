"""Prometheus metrics of `aqpipe web` (`aqpipe_web_*`), served on metrics.port."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

REQUESTS = Counter("aqpipe_web_requests_total", "HTTP requests answered by aqpipe web", ["method", "status"])
LATENCY = Histogram("aqpipe_web_request_seconds", "Time to answer one request",
                    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5))
LOGINS = Counter("aqpipe_web_logins_total", "Login attempts by result (ok, failed, throttled)", ["result"])
