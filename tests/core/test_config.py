"""Station configuration: the embedded default, good files, and each kind of bad file."""

from __future__ import annotations

import pytest

from labqfl.config import load_station_config, parse_station_config
from labqfl.errors import ConfigError


def test_embedded_default_is_simulated_four_client_sagnac():
    cfg = load_station_config()
    assert cfg.client_names == ["C1", "C2", "C3", "C4"]
    assert cfg.all_simulated
    assert len(cfg.pairs()) == 6
    assert cfg.pairs()[0] == ("C1", "C2")


def test_roles_cover_every_instrument():
    cfg = load_station_config()
    roles = cfg.roles()
    assert list(roles)[:1] == ["laser"]
    for c in cfg.client_names:
        assert f"{c}.phase_modulator" in roles and f"{c}.attenuator" in roles
    for r in ("D0", "D1", "time_tagger", "power_meter"):
        assert r in roles
    assert cfg.role("D1") is cfg.detectors["D1"]
    with pytest.raises(ConfigError, match="no role 'D2'"):
        cfg.role("D2")


def test_good_file_round_trips(station_file):
    cfg = load_station_config(station_file({"visibility = 0.99": "visibility = 0.975"}))
    assert cfg.loop.visibility == 0.975


@pytest.mark.parametrize(
    ("edit", "expect"),
    [
        ({"visibility = 0.99": "visibility = 1.5"}, r"field 'loop\.visibility'.*less than or equal to 1.*got 1\.5"),
        ({"efficiency = 0.8 ": "efficiency = -0.1 "}, r"field 'detectors\.D0\.efficiency'.*got -0\.1"),
        ({"rep_rate_hz = 100e6": 'rep_rate_hz = "fast"'}, r"field 'laser\.rep_rate_hz'.*got 'fast'"),
        ({"intensity_probs = [0.8, 0.1, 0.1]": "intensity_probs = [0.8, 0.1, 0.2]"}, r"clients\.0.*sum to 1"),
        ({"intensity_probs = [0.8, 0.1, 0.1]": "intensity_probs = [0.9, 0.1]"}, r"one probability per intensity"),
        ({'name = "C2"': 'name = "C1"'}, r"client names must be unique"),
        ({"[2.0, 2.0, 2.0, 2.0, 2.0]": "[2.0, 2.0]"}, r"segments_km has 2 entries; expected 5"),
        ({"sync_channel = 1": "sync_channel = 2"}, r"channels must be distinct"),
        ({"dead_time_ns = 30.0": "dead_tme_ns = 30.0"}, r"field 'detectors\.D0\.dead_tme_ns': unknown field"),
        ({'[detectors.D0]\ndriver = "sim"': '[detectors.D0]\ndriver = "IDQuantiqueID120"'}, r"needs a 'resource'"),
    ],
)
def test_bad_field_gives_one_line_naming_file_field_and_value(station_file, edit, expect):
    path = station_file(edit)
    with pytest.raises(ConfigError, match=expect) as info:
        load_station_config(path)
    msg = str(info.value)
    assert "\n" not in msg
    assert msg.startswith(str(path))


def test_not_toml(station_file):
    p = station_file(text="name = \n[[[")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_station_config(p)


def test_missing_and_directory(tmp_path):
    with pytest.raises(ConfigError, match="station file not found"):
        load_station_config(tmp_path / "nope.toml")
    with pytest.raises(ConfigError, match="is a directory"):
        load_station_config(tmp_path)


def test_missing_clients_is_named():
    with pytest.raises(ConfigError, match=r"field 'clients': Field required"):
        parse_station_config({"name": "x"}, "mem")


def test_sixteen_clients_parse():
    clients = [{"name": f"C{k}", "seed": k} for k in range(1, 17)]
    cfg = parse_station_config({"clients": clients, "loop": {"segments_km": [1.0] * 17}})
    assert len(cfg.pairs()) == 16 * 15 // 2
