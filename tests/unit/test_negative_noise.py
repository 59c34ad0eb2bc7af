"""ingest.negative_noise (ug/m3) and ingest.negative_noise_mg (mg/m3) bound what a negative
concentration may read before it is rejected."""

from __future__ import annotations

import json

import pytest

from aqpipe.config import load_config
from aqpipe.decode import MessageDecoder
from aqpipe.errors import Reason, RejectedReading
from aqpipe.registry import Registry

NOW_NS = 1_780_000_000 * 1_000_000_000


def _decoder(**env: str) -> MessageDecoder:
    cfg = load_config(None, {f"AQPIPE_INGEST__{k.upper()}": v for k, v in env.items()})
    return MessageDecoder.from_config(cfg, Registry.empty())


def _payload(**values: float) -> bytes:
    return json.dumps({"station": "S1", "time": "2026-05-28T12:00:00+08:00", "values": values}).encode()


@pytest.mark.parametrize("values, env, rejected", [
    ({"pm25": -4.0}, {}, False),  # default 5 ug/m3
    ({"pm25": -6.0}, {}, True),
    ({"pm25": -4.0}, {"negative_noise": "2"}, True),
    ({"pm25": -6.0}, {"negative_noise": "10"}, False),
    ({"co": -0.4}, {}, False),  # default 0.5 mg/m3
    ({"co": -0.4}, {"negative_noise_mg": "0.1"}, True),
    ({"co": -0.4}, {"negative_noise": "0"}, False),  # the ug/m3 bound does not apply to mg/m3
])
def test_the_configured_noise_bound_decides_a_negative_concentration(values, env, rejected):
    decoder = _decoder(**env)
    if rejected:
        with pytest.raises(RejectedReading) as e:
            decoder.decode("aq/v1/ambient/S1", _payload(**values), NOW_NS)
        assert e.value.reason is Reason.NEGATIVE
    else:
        [reading] = decoder.decode("aq/v1/ambient/S1", _payload(**values), NOW_NS)
        assert reading.values == values
