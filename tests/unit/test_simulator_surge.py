"""The simulator's outlets exceed their permit limits at their load peaks, and only then."""

from __future__ import annotations

import random
from datetime import datetime, timedelta, timezone
from pathlib import Path

from aqpipe.registry import Registry
from aqpipe.simulator import CST, OUTLETS, SURGE_FACTOR, stack_values, surging

REGISTRY = Registry.load(Path(__file__).resolve().parents[2] / "deploy" / "config")


def _corrected_hour(outlet: str, fuel: str, hour_start: datetime, started: datetime | None) -> float:
    rng = random.Random(7)
    name = SURGE_FACTOR[fuel][0]
    ref = REGISTRY.outlets[outlet].ref_o2
    minutes = [hour_start + timedelta(minutes=m) for m in range(60)]
    vals = [stack_values(fuel, t, rng, surging(fuel, t, started)) for t in minutes]
    avg = sum(v[name] for v in vals) / 60
    o2 = sum(v["o2"] for v in vals) / 60
    return avg * (21 - ref) / (21 - o2)


def test_outlets_exceed_their_permit_at_their_peaks_and_comply_otherwise():
    day = datetime(2026, 11, 24, tzinfo=CST)
    for outlet, fuel in OUTLETS:
        name = SURGE_FACTOR[fuel][0]
        limit = REGISTRY.outlets[outlet].limits[name]
        peak = {"coal": 7, "gas": 8}[fuel]
        assert _corrected_hour(outlet, fuel, day + timedelta(hours=peak), None) > limit
        assert _corrected_hour(outlet, fuel, day + timedelta(hours=peak + 3), None) < limit


def test_the_coal_outlet_exceeds_around_the_simulator_start():
    started = datetime(2026, 11, 24, 13, 30, tzinfo=timezone.utc)
    assert surging("coal", started - timedelta(hours=1), started)
    assert surging("coal", started + timedelta(minutes=30), started)
    assert not surging("coal", started + timedelta(hours=2), started)
    assert not surging("gas", started, started)
