"""Station: building roles, typed access, snapshot, check, safe state, close order, refusals."""

from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path

import pytest

from labqfl.config import StationConfig, load_station_config
from labqfl.errors import ConfigError, StationError
from labqfl.instruments import (
    PhaseModulator,
    PhotonDetector,
    PowerMeter,
    PulsedLaser,
    TimeTagger,
    VariableAttenuator,
)
from labqfl.station import Station

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "station_pyvisa_sim.toml"


def test_station_all_real_drivers(real_drivers_station_file: Path, fake_timetagger_sdk) -> None:  # type: ignore[no-untyped-def]
    cfg = load_station_config(real_drivers_station_file)
    with Station.open(cfg, base_dir=real_drivers_station_file.parent) as st:
        assert st.roles == list(cfg.roles())
        assert isinstance(st.laser, PulsedLaser) and isinstance(st.power_meter, PowerMeter)
        assert isinstance(st.phase_modulator("C2"), PhaseModulator)
        assert isinstance(st.attenuator("C4"), VariableAttenuator)
        assert isinstance(st.detector("D1"), PhotonDetector) and isinstance(st.time_tagger, TimeTagger)
        st.laser.output_enabled = True
        st.attenuator("C1").attenuation_db = 7.5
        snap = st.snapshot()
        json.dumps(snap)
        assert snap["roles"]["C1.attenuator"]["settings"]["attenuation_db"] == {"value": 7.5, "unit": "dB"}
        assert snap["roles"]["laser"]["settings"]["output_enabled"]["value"] is True
        rep = st.check()
        assert rep["ok"] and set(rep["roles"]) == set(cfg.roles())
        assert st.safe_state() == {}
        assert st.laser.output_enabled is False and st.attenuator("C1").shutter_closed is True
        with pytest.raises(ConfigError, match="no detector"):
            st.detector("D2")
        with pytest.raises(ConfigError, match="no role"):
            st["C9.attenuator"]
        inst = list(st.instruments.values())
    assert st.closed and all(i.closed for i in inst)
    st.close()  # idempotent


def test_station_closes_in_reverse_order(real_drivers_station_file: Path, fake_timetagger_sdk, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    st = Station(load_station_config(real_drivers_station_file))
    order: list[str] = []
    for role, inst in st.instruments.items():
        orig = inst.close
        monkeypatch.setattr(inst, "close", lambda r=role, o=orig: (order.append(r), o()))
    st.close()
    assert order == list(reversed(st.roles))


def test_station_refuses_two_roles_on_one_channel_or_on_a_single_role_instrument(tmp_path: Path, voa_role) -> None:  # type: ignore[no-untyped-def]
    text = EXAMPLE.read_text(encoding="utf-8").replace(voa_role(3), voa_role(1))
    p = tmp_path / "dup.toml"
    p.write_text(text, encoding="utf-8")
    with pytest.raises(StationError, match="roles 'C1.attenuator' and 'C2.attenuator' both use channel 1 of resource "
                                           "'TCPIP0::10.0.0.21::inst0::INSTR'.*expected a different options.channel"):
        Station(load_station_config(p))
    # tolerant (station check): the second role is reported failed, the first one still opens
    st = Station(load_station_config(p), tolerant=True)
    try:
        assert "C1.attenuator" in st and "both use channel 1" in st.failures["C2.attenuator"]
        assert "C3.attenuator" in st and "C4.attenuator" in st
    finally:
        st.close()
    # a single-role driver (the power meter) on a resource another role already uses: refused
    text = EXAMPLE.read_text(encoding="utf-8").replace(
        'resource = "GPIB0::10::INSTR"\nvisa_library = "@sim:thorlabs_pro8000.yaml"',
        'resource = "TCPIP0::10.0.0.21::inst0::INSTR"\nvisa_library = "@sim:keysight_n7764a.yaml"')
    p.write_text(text, encoding="utf-8")
    with pytest.raises(StationError, match="roles 'laser' and 'C1.attenuator' both use resource .*give each role its own"):
        Station(load_station_config(p))


def test_one_four_channel_voa_serves_four_clients() -> None:
    st = Station(load_station_config(EXAMPLE))
    try:
        voas = [st.attenuator(c) for c in ("C1", "C2", "C3", "C4")]
        assert [v.channel for v in voas] == [1, 3, 5, 7]  # type: ignore[union-attr]
        # one session and one lock for the four roles: their commands never interleave
        assert len({id(v.link.adapter) for v in voas}) == 1 and len({id(v.lock) for v in voas}) == 1  # type: ignore[union-attr]
        for k, v in enumerate(voas):
            v.attenuation_db = 5.0 + k  # type: ignore[union-attr]
        assert [v.attenuation_db for v in voas] == [5.0, 6.0, 7.0, 8.0]  # type: ignore[union-attr]
        voas[0].close()  # one role leaving keeps the session for the others
        voas[3].attenuation_db = 9.5  # type: ignore[union-attr]
        assert voas[3].attenuation_db == 9.5  # type: ignore[union-attr]
    finally:
        st.close()
    # the session closed with its last role: the unit opens again
    Station(load_station_config(EXAMPLE)).close()


def test_station_wrong_driver_kind_and_unknown_driver(tmp_path: Path, real_drivers_station_file: Path, fake_timetagger_sdk) -> None:  # type: ignore[no-untyped-def]
    base = real_drivers_station_file.read_text(encoding="utf-8")
    p = tmp_path / "bad.toml"
    # refused when the file loads, before any instrument is opened
    p.write_text(base.replace('driver = "ThorlabsPRO8000"', 'driver = "ThorlabsPM100USB"', 1), encoding="utf-8")
    with pytest.raises(ConfigError, match=r"field 'laser\.driver' \(role laser\): ThorlabsPM100USB is a PowerMeter "
                                          r"driver; expected a PulsedLaser driver"):
        load_station_config(p)
    # a config built without the load-time checks is still refused by the Station, per role
    cfg = StationConfig.model_validate(tomllib.loads(p.read_text(encoding="utf-8")))
    st = Station(cfg, tolerant=True)
    try:
        assert "expected a PulsedLaser driver" in st.failures["laser"]
        with pytest.raises(StationError, match="role 'laser' is not available"):
            _ = st.laser
    finally:
        st.close()
    p.write_text(base.replace('driver = "KeysightN7764A"', 'driver = "AcmeVOA9000"', 1), encoding="utf-8")
    with pytest.raises(ConfigError, match=r"field 'clients\.0\.attenuator\.driver' \(role C1.attenuator\): unknown "
                                          r"driver; expected 'sim' or one of: .*KeysightN7764A.*; got 'AcmeVOA9000'"):
        load_station_config(p)


def test_station_failure_closes_opened_roles(tmp_path: Path, real_drivers_station_file: Path, fake_timetagger_sdk, voa_role) -> None:  # type: ignore[no-untyped-def]
    text = real_drivers_station_file.read_text(encoding="utf-8").replace(voa_role(7), voa_role(7, "TCPIP0::10.0.0.99::inst0::INSTR"))
    p = tmp_path / "missing.toml"
    p.write_text(text, encoding="utf-8")
    with pytest.raises(StationError, match=r"role 'C4.attenuator'.*10\.0\.0\.99"):
        Station(load_station_config(p))
    # everything opened before C4.attenuator was released again: the same resources open fine now
    st = Station(load_station_config(p), tolerant=True)
    assert "C3.attenuator" in st and "C4.attenuator" in st.failures
    st.close()


def test_station_relative_sim_path_resolved_against_station_file(tmp_path: Path) -> None:
    yaml_src = ROOT / "sim_backends" / "visa" / "keysight_n7764a.yaml"
    (tmp_path / "devs").mkdir()
    (tmp_path / "devs" / "voa.yaml").write_text(yaml_src.read_text(encoding="utf-8"), encoding="utf-8")
    text = EXAMPLE.read_text(encoding="utf-8").replace('visa_library = "@sim:keysight_n7764a.yaml"',
                                                      'visa_library = "devs/voa.yaml@sim"')
    p = tmp_path / "rel.toml"
    p.write_text(text, encoding="utf-8")
    st = Station(load_station_config(p), base_dir=p.parent, tolerant=True)
    try:
        assert all(f"C{k}.attenuator" in st for k in range(1, 5))
    finally:
        st.close()


def test_only_the_station_imports_drivers() -> None:
    pattern = re.compile(r"^\s*(from\s+labqfl\.drivers\b|import\s+labqfl\.drivers\b|from\s+labqfl\s+import\s+.*\bdrivers\b)", re.M)
    offenders = []
    for folder in ("labqfl", "sim_backends", "calibration", "gui"):
        for f in (ROOT / folder).rglob("*.py"):
            if f == ROOT / "labqfl" / "station.py":
                continue
            if pattern.search(f.read_text(encoding="utf-8", errors="replace")):
                offenders.append(str(f.relative_to(ROOT)))
    assert offenders == [], f"only labqfl/station.py may import labqfl.drivers; also found in {offenders}"
