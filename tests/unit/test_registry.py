from __future__ import annotations

from pathlib import Path

import pytest

from aqpipe.errors import ConfigError
from aqpipe.registry import Registry

ROOT = Path(__file__).resolve().parents[2]


def test_the_shipped_registry_maps_each_mn_to_its_station_or_outlet():
    r = Registry.load(ROOT / "deploy" / "config")
    assert len(r.stations) == 20 and len(r.outlets) == 4
    assert r.by_mn("91620503MA00300000000001") == ("stack", "91620503MA003-DA001")
    assert r.by_mn("nope") is None
    assert r.outlets["91620503MA002-DA001"].ref_o2 == 3.5  # gas boiler: reference O2 3.5 %


def test_an_mn_given_to_two_devices_is_refused(tmp_path):
    (tmp_path / "stations.toml").write_text('[[station]]\nid = "a"\nmn = "MN1"\n')
    (tmp_path / "outlets.toml").write_text('[[outlet]]\nid = "b"\nmn = "MN1"\n')
    with pytest.raises(ConfigError) as e:
        Registry.load(tmp_path)
    assert "MN1" in str(e.value)


def test_an_unknown_key_in_a_registry_file_names_the_file_and_the_key(tmp_path):
    (tmp_path / "outlets.toml").write_text('[[outlet]]\nid = "b"\nfule = "coal"\n')
    with pytest.raises(ConfigError) as e:
        Registry.load(tmp_path)
    assert "outlets.toml" in e.value.key and "fule" in e.value.key
