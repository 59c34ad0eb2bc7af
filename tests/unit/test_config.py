"""Configuration: TOML + AQPIPE_* environment, errors that name the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from aqpipe.config import load_config
from aqpipe.errors import ConfigError

ROOT = Path(__file__).resolve().parent.parent.parent


def test_no_file_gives_the_defaults_make_run_starts():
    cfg = load_config(None, {})
    assert (cfg.mqtt.host, cfg.mqtt.port) == ("127.0.0.1", 1883)
    assert cfg.influx.url == "http://127.0.0.1:8086" and cfg.influx.api == "v1" and cfg.influx.database == "aq"
    assert cfg.metrics.port == 9108 and cfg.data_dir == Path("./data")


def test_the_shipped_sample_config_is_valid_and_equals_the_defaults():
    sample = load_config(ROOT / "deploy" / "config" / "aqpipe.toml", {})
    defaults = load_config(None, {})
    assert sample.model_dump(exclude={"source"}) == defaults.model_dump(exclude={"source"})


def test_environment_overrides_the_file_with_double_underscore_sections(tmp_path):
    f = tmp_path / "aqpipe.toml"
    f.write_text('[mqtt]\nport = 1884\n[influx]\ndatabase = "from_file"\n')
    cfg = load_config(f, {"AQPIPE_MQTT__PORT": "1990", "AQPIPE_DATA_DIR": "/var/lib/aqpipe", "AQPIPE_INFLUX__API": "v2",
                          "AQPIPE_INFLUX__BUCKET": "aq", "AQPIPE_INFLUX__ORG": "bureau"})
    assert cfg.mqtt.port == 1990 and cfg.data_dir == Path("/var/lib/aqpipe")
    assert cfg.influx.database == "from_file" and cfg.influx.api == "v2" and cfg.influx.bucket == "aq"


def test_config_path_comes_from_aqpipe_config_when_no_flag(tmp_path):
    f = tmp_path / "x.toml"
    f.write_text("[metrics]\nport = 0\n")
    assert load_config(None, {"AQPIPE_CONFIG": str(f)}).metrics.port == 0


@pytest.mark.parametrize("toml,env,key", [
    ("[mqtt]\nport = 'abc'\n", {}, "mqtt.port"),
    ("", {"AQPIPE_INFLUX__API": "v3"}, "influx.api"),
    ("[influx]\nbatchsize = 10\n", {}, "influx.batchsize"),
    ("[influx]\napi = 'v2'\n", {}, "influx"),
    ("[mqtt]\npassword = 'hunter2'\n", {}, "mqtt.password"),
    ("[influx]\ntoken = 'abc'\n", {}, "influx.token"),
    ("[mqtt\n", {}, "aqpipe.toml"),
])
def test_a_bad_setting_is_reported_with_its_key(tmp_path, toml, env, key):
    f = tmp_path / "aqpipe.toml"
    f.write_text(toml)
    with pytest.raises(ConfigError) as e:
        load_config(f, env)
    assert key in e.value.key
    assert "hunter2" not in str(e.value)


def test_secret_from_environment_or_file_is_read_but_never_dumped(tmp_path):
    token = tmp_path / "token"
    token.write_text("s3cret\n")
    cfg = load_config(None, {"AQPIPE_MQTT__PASSWORD": "pw", "AQPIPE_INFLUX__TOKEN_FILE": str(token)})
    assert cfg.mqtt.secret() == "pw" and cfg.influx.secret() == "s3cret"
    assert "pw" not in repr(cfg.mqtt) and "s3cret" not in cfg.model_dump_json()


def test_missing_config_file_is_an_error_not_a_silent_default(tmp_path):
    with pytest.raises(ConfigError):
        load_config(tmp_path / "nope.toml", {})
