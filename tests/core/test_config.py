"""Station configuration: the embedded default, good files, and each kind of bad file."""

from __future__ import annotations

import tomllib
from pathlib import Path

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
        ({"detectors.D0.driver": "SingleQuantumEos"}, r"field 'detectors\.D0\.resource'.*needs a 'resource'.*got none"),
        ({"clients.2.seed": "DELETE"}, r"field 'clients\.2\.seed': Field required"),
        # pairs: an empty list loaded and failed at acquire ("schedule needs at least one pair", no file);
        # a pair given twice, in either order, showed twice and collapsed into one
        ({"schedule.pairs": []}, r"field 'schedule\.pairs': no pair scheduled; expected 'all' or at least one pair"),
        ({"schedule.pairs": ["C1-C2", "C2-C1"]}, r"lists the pair of C2 and C1 twice; expected each pair once"),
        ({"schedule.pairs": ["C1-C2", "C1-C9"]}, r"schedule pair \(C1, C9\) must name two different clients"),
        ({"schedule.pairs": ["C1+C2"]}, r"pair 'C1\+C2' is not of the form 'Ci-Cj'"),
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


def test_pairs_may_be_written_as_the_cli_names_them(tmp_path):
    """``pairs = ["C1-C2", "C3-C4"]`` (as `station show` and `--pair` write pairs) was refused with an error
    that blamed the valid pair; it means the same as ``[["C1", "C2"], ["C3", "C4"]]``."""
    data = tomllib.loads(default_station_text())
    data["schedule"]["pairs"] = ["C1-C2", "C3-C4"]
    path = tmp_path / "station.toml"
    path.write_text(dump_toml(data), encoding="utf-8")
    assert load_station_config(path).pairs() == [("C1", "C2"), ("C3", "C4")]


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


# -- every role against its driver's declaration (typed options, ranges, spectral range) -------------
EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "station_pyvisa_sim.toml"
ID120_D0 = {"detectors.D0.driver": "IDQuantiqueID120", "detectors.D0.resource": "USB0::0x1DDC::0x0330::SIM0001::INSTR",
            "detectors.D0.visa_library": "@sim:idquantique_id120.yaml", "detectors.D0.dead_time_ns": 80_000.0,
            "detectors.D0.temperature_k": 233.15}
#: the N7764A is calibrated for 1260-1640 nm only: an 850 nm station takes simulated attenuators
SIM_ATTENUATORS = {**{f"clients.{k}.attenuator.driver": "sim" for k in range(4)},
                   **{f"clients.{k}.attenuator.options": "DELETE" for k in range(4)}}


@pytest.mark.parametrize(
    ("base", "edits", "expect"),
    [
        # a typo in an option name: was accepted, and the AWG silently used channel 1
        ("example", {"clients.0.phase_modulator.options": {"chanel": 2}},
         r"field 'clients\.0\.phase_modulator\.options\.chanel' \(role C1\.phase_modulator\): unknown option for "
         r"Keysight33500B; expected one of: channel, sample_rate_hz, max_points, arb_filter; got 2$"),
        ("example", {"clients.0.phase_modulator.options": {"channel": 3}},
         r"field 'clients\.0\.phase_modulator\.options\.channel' \(role C1\.phase_modulator\): Input should be 1 or 2 "
         r"\(option of Keysight33500B\); got 3$"),
        ("example", {"clients.1.phase_modulator.options": {"sample_rate_hz": 1e9}},
         r"options\.sample_rate_hz' \(role C2\.phase_modulator\): Input should be less than or equal to 250000000.*got 1000000000\.0$"),
        # a wrong type: refused at load, naming the field
        ("example", {**ID120_D0, "detectors.D0.options": {"threshold_mv": "fast"}},
         r"field 'detectors\.D0\.options\.threshold_mv' \(role D0\): Input should be a valid number \(option of "
         r"IDQuantiqueID120\); got 'fast'$"),
        ("example", {"clients.2.attenuator.options": {"channel": 2}},
         r"field 'clients\.2\.attenuator\.options\.channel' \(role C3\.attenuator\): Input should be 1, 3, 5 or 7.*got 2$"),
        ("example", {"laser.options": {"ld_slot": 2, "tec_slot": 2}},
         r"field 'laser\.options' \(role laser\): ld_slot and tec_slot are both 2; expected two different slots"),
        ("example", {"laser.options": {"threshold_ma": "10"}},
         r"field 'laser\.options\.threshold_ma' \(role laser\): Input should be a valid number.*got '10'$"),
        # config values outside the driver's own ranges: v_pi_v = 50 passed `station show`
        ("example", {"clients.1.phase_modulator.v_pi_v": 50.0},
         r"field 'clients\.1\.phase_modulator\.v_pi_v' \(role C2\.phase_modulator\): outside what Keysight33500B can "
         r"set; expected 0\.1 to 20 V; got 50\.0$"),
        ("example", {"laser.power_mw": 12.0},
         r"field 'laser\.power_mw' \(role laser\): outside what ThorlabsPRO8000 can set; expected 0 to 9 mW; got 12\.0$"),
        ("example", {**ID120_D0, "laser.wavelength_nm": 850.0, "detectors.D0.dead_time_ns": 30.0, **SIM_ATTENUATORS},
         r"field 'detectors\.D0\.dead_time_ns' \(role D0\): outside what IDQuantiqueID120 can set; expected 40000 to "
         r"1e\+09 ns; got 30\.0$"),
        ("example", {"time_tagger.driver": "SwabianTimeTagger", "time_tagger.trigger_level_v": 3.0},
         r"field 'time_tagger\.trigger_level_v' \(role time_tagger\): outside what SwabianTimeTagger can set; "
         r"expected -2\.5 to 2\.5 V; got 3\.0$"),
        ("example", {"time_tagger.driver": "SwabianTimeTagger", "time_tagger.options": {"serial": 1910000}},
         r"field 'time_tagger\.options\.serial' \(role time_tagger\): Input should be a valid string.*got 1910000$"),
        # a silicon SPAD on a 1550 nm station is blind: refused by the driver's declared spectral range
        ("example", ID120_D0,
         r"field 'detectors\.D0\.driver' \(role D0\): IDQuantiqueID120 works from 350 to 1000 nm, which excludes the "
         r"laser wavelength 1550 nm \(laser\.wavelength_nm\); expected a driver for 1550 nm or 'sim'; got 'IDQuantiqueID120'$"),
        ("example", {"laser.wavelength_nm": 850.0},
         r"field 'clients\.0\.attenuator\.driver' \(role C1\.attenuator\): KeysightN7764A works from 1260 to 1640 nm"),
        ("example", {"clients.0.attenuator.driver": "AcmeVOA9000"},
         r"field 'clients\.0\.attenuator\.driver' \(role C1\.attenuator\): unknown driver; expected 'sim' or one of: "
         r".*KeysightN7764A.*; got 'AcmeVOA9000'$"),
        ("example", {"power_meter.driver": "Keysight33500B"},
         r"field 'power_meter\.driver' \(role power_meter\): Keysight33500B is a PhaseModulator driver; expected a "
         r"PowerMeter driver or 'sim'; got 'Keysight33500B'$"),
        # simulated roles have typed options too
        ("default", {"clients.0.attenuator.options": {"nominal_attenuaton_db": 30.0}},
         r"field 'clients\.0\.attenuator\.options\.nominal_attenuaton_db' \(role C1\.attenuator\): unknown option for "
         r"the simulated instrument; expected one of: nominal_attenuation_db; got 30\.0$"),
        ("default", {"detectors.D1.options": {"dark_bias_scale": -1.0}},
         r"field 'detectors\.D1\.options\.dark_bias_scale' \(role D1\): Input should be greater than 0.*got -1\.0$"),
        ("default", {"laser.options": {"power": 1}},
         r"field 'laser\.options\.power' \(role laser\): unknown option for the simulated instrument; expected no "
         r"options \(it takes none\); got 1$"),
    ],
)
def test_bad_role_value_gives_one_line_naming_file_field_value_and_expectation(tmp_path, base, edits, expect):
    data = tomllib.loads(EXAMPLE.read_text(encoding="utf-8") if base == "example" else default_station_text())
    for path, value in edits.items():
        _edit(data, path, value)
    path = tmp_path / "station.toml"
    path.write_text(dump_toml(data), encoding="utf-8")
    with pytest.raises(ConfigError, match=expect) as info:
        load_station_config(path)
    msg = str(info.value)
    assert "\n" not in msg and msg.startswith(f"{path}: field '")
    assert "expected" in msg or "Input should be" in msg


def test_driver_declarations_accept_good_stations(tmp_path):
    """The checks can pass: the example loads, and silicon SPADs load on an 850 nm station."""
    cfg = load_station_config(EXAMPLE)
    assert cfg.clients[0].phase_modulator.options == {"channel": 1, "sample_rate_hz": 100e6}
    data = tomllib.loads(EXAMPLE.read_text(encoding="utf-8"))
    for path, value in {**ID120_D0, "laser.wavelength_nm": 850.0, "detectors.D0.options": {"threshold_mv": 30.0},
                        **SIM_ATTENUATORS}.items():
        _edit(data, path, value)
    p = tmp_path / "visible.toml"
    p.write_text(dump_toml(data), encoding="utf-8")
    assert load_station_config(p).detectors["D0"].driver == "IDQuantiqueID120"
