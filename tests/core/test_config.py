"""Station configuration: the embedded default, good files, and each kind of bad file."""

from __future__ import annotations

import tomllib

import pytest

from labqfl.config import default_station_text, load_station_config, parse_station_config
from labqfl.errors import ConfigError
from labqfl.runs import dump_toml


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


def test_good_file_round_trips(tmp_path):
    data = tomllib.loads(default_station_text())
    data["loop"]["visibility"] = 0.975
    p = tmp_path / "good.toml"
    p.write_text(dump_toml(data), encoding="utf-8")
    cfg = load_station_config(p)
    assert cfg.loop.visibility == 0.975
    assert cfg.model_dump(exclude={"loop"}) == load_station_config().model_dump(exclude={"loop"})


def _edit(data: dict, path: str, value) -> None:
    """Set ``a.b.0.c`` in a nested dict/list; value ``DELETE`` removes the key."""
    *head, last = path.split(".")
    node = data
    for part in head:
        node = node[int(part)] if isinstance(node, list) else node[part]
    if value == "DELETE":
        del node[last]
    elif isinstance(node, list):
        node[int(last)] = value
    else:
        node[last] = value


@pytest.mark.parametrize(
    ("edits", "expect"),
    [
        ({"loop.visibility": 1.5}, r"field 'loop\.visibility'.*less than or equal to 1.*got 1\.5"),
        ({"detectors.D0.efficiency": -0.1}, r"field 'detectors\.D0\.efficiency'.*got -0\.1"),
        ({"laser.rep_rate_hz": "fast"}, r"field 'laser\.rep_rate_hz'.*got 'fast'"),
        ({"clients.0.intensity_probs": [0.8, 0.1, 0.2]}, r"clients\.0.*sum to 1"),
        ({"clients.0.intensity_probs": [0.9, 0.1]}, r"one probability per intensity"),
        ({"clients.1.name": "C1"}, r"client names must be unique"),
        ({"loop.segments_km": [2.0, 2.0]}, r"segments_km has 2 entries; expected 5"),
        ({"time_tagger.sync_channel": 2}, r"channels must be distinct"),
        ({"detectors.D0.dead_tme_ns": 30.0}, r"field 'detectors\.D0\.dead_tme_ns': unknown field"),
        ({"detectors.D0.driver": "IDQuantiqueID120"}, r"needs a 'resource'"),
        ({"clients.2.seed": "DELETE"}, r"field 'clients\.2\.seed': Field required"),
    ],
)
def test_bad_field_gives_one_line_naming_file_field_and_value(tmp_path, edits, expect):
    data = tomllib.loads(default_station_text())
    for path, value in edits.items():
        _edit(data, path, value)
    path = tmp_path / "station.toml"
    path.write_text(dump_toml(data), encoding="utf-8")
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
