"""Counters of the HJ 212 decoder (`aqpipe_hj212_*`), registered once, here.

Incremented by `hj212.decode` (the ingest entry point) once a message has decoded,
so that a frame counts once, whether stored or deliberately not stored.
"""

from __future__ import annotations

from prometheus_client import Counter

BACKFILLED = Counter("aqpipe_hj212_backfilled", "HJ 212 frames with RF=1 (back-filled data) decoded into readings")
NOT_STORED = Counter("aqpipe_hj212_not_stored", "Valid HJ 212 frames that give no reading on purpose "
                     "(commands or systems without a measurement: 2062, 3020, 2111, 9015, ST 44/45...; codes outside the tables as \"other\")", ["cn", "st"])
