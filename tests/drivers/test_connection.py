"""A resource with no instrument behind it: one error naming the role, the resource and the failed
connection, with no warning leaking from the VISA layer; options typed per driver at construction."""

from __future__ import annotations

import importlib.util
import warnings
from pathlib import Path

import pytest
from labqfl.drivers.keysight_33500b import Keysight33500B
from labqfl.drivers.keysight_n7764a import KeysightN7764A
from labqfl.drivers.thorlabs_pro8000 import ThorlabsPRO8000

from labqfl.config import AttenuatorConfig, LaserConfig, PhaseModulatorConfig
from labqfl.errors import ConfigError, InstrumentError, InstrumentTimeout


@pytest.mark.parametrize(("cls", "make_cfg", "yaml", "resource", "role"), [
    (KeysightN7764A, AttenuatorConfig, "keysight_n7764a.yaml", "TCPIP0::10.9.9.9::inst0::INSTR", "C3.attenuator"),
    # the PRO8000 writes first and then reads its error queue: the old error named ':SYST:ERR?'
    (ThorlabsPRO8000, LaserConfig, "thorlabs_pro8000.yaml", "GPIB0::12::INSTR", "laser"),
    (Keysight33500B, PhaseModulatorConfig, "keysight_33500b.yaml", "TCPIP0::10.0.0.99::inst0::INSTR", "C1.phase_modulator"),
])
def test_absent_instrument_names_role_resource_and_connection(sim_library, cls, make_cfg, yaml, resource, role) -> None:  # type: ignore[no-untyped-def]
    cfg = make_cfg(driver=cls.__name__, resource=resource, visa_library=sim_library(yaml), timeout_ms=100)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(InstrumentError) as info:
            cls(role, cfg)
    msg = str(info.value)
    assert "cannot connect" in msg and f"instrument {role!r}" in msg and f"resource {resource!r}" in msg
    assert "SYST:ERR" not in msg and "*IDN?" not in msg and "\n" not in msg
    assert [str(w.message) for w in caught] == []
    # the failed open released the resource registry: a good resource opens afterwards
    good = {"KeysightN7764A": "TCPIP0::10.0.0.23::inst0::INSTR", "ThorlabsPRO8000": "GPIB0::10::INSTR",
            "Keysight33500B": "TCPIP0::10.0.0.11::inst0::INSTR"}[cls.__name__]
    cls(role, cfg.model_copy(update={"resource": good})).close()


def test_silent_instrument_is_a_failed_connection_not_a_command_fault(sim_library) -> None:  # type: ignore[no-untyped-def]
    """A defined resource that answers nothing (here: its identity and error queries are unknown to the device)."""
    lib = sim_library("thorlabs_pro8000.yaml", lambda t: t.replace('- q: ":SYST:ERR?"', '- q: ":SYST:ERRX?"')
                      .replace('- q: "*IDN?"', '- q: "*IDNX?"'))
    cfg = LaserConfig(driver="ThorlabsPRO8000", resource="GPIB0::10::INSTR", visa_library=lib, timeout_ms=100)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(InstrumentTimeout, match=r"cannot connect: no instrument answered at this resource "
                                                    r"\(no reply within 100 ms\).*instrument 'laser', resource 'GPIB0::10::INSTR'"):
            ThorlabsPRO8000("laser", cfg)
    assert [str(w.message) for w in caught] == []


@pytest.mark.parametrize(("cls", "make_cfg", "options", "expect"), [
    (Keysight33500B, PhaseModulatorConfig, {"chanel": 2},
     r"^role 'pm': field 'options\.chanel': unknown option for Keysight33500B; expected one of: channel, sample_rate_hz, max_points, arb_filter; got 2$"),
    (KeysightN7764A, AttenuatorConfig, {"channel": 2}, r"^role 'pm': field 'options\.channel': Input should be 1, 3, 5 or 7 \(option of KeysightN7764A\); got 2$"),
    (ThorlabsPRO8000, LaserConfig, {"max_current_ma": 5.0}, r"max_current_ma \(5\) must be above threshold_ma \(10\)"),
])
def test_driver_refuses_bad_options_before_opening(cls, make_cfg, options, expect) -> None:  # type: ignore[no-untyped-def]
    cfg = make_cfg(driver=cls.__name__, resource="TCPIP0::10.0.0.11::inst0::INSTR", options=options)
    with pytest.raises(ConfigError, match=expect):
        cls("pm", cfg)  # no adapter, no VISA library: it must fail before any I/O


def _closed_port() -> int:
    import socket

    with socket.socket() as s:  # bound and released: nothing listens there now
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.skipif(importlib.util.find_spec("pyvisa_py") is None, reason="pyvisa-py (the 'hardware' extra) is not installed")
@pytest.mark.parametrize("resource", ["TCPIP0::127.0.0.1::{port}::SOCKET", "TCPIP0::127.0.0.1::inst0::INSTR"])
def test_at_py_absent_lan_instrument_is_one_clear_connection_error(tmp_path, resource: str) -> None:  # type: ignore[no-untyped-def]
    """``visa_library = "@py"`` (pyvisa-py, the 'hardware' extra) resolves, and a LAN resource with nothing
    behind it ends the station's opening with one line naming role, resource and the failed connection."""
    from labqfl.config import load_station_config
    from labqfl.errors import StationError
    from labqfl.station import Station

    res = resource.format(port=_closed_port())
    text = (Path(__file__).resolve().parents[2] / "examples" / "station_pyvisa_sim.toml").read_text(encoding="utf-8")
    text = text.replace('resource = "GPIB0::10::INSTR"\nvisa_library = "@sim:thorlabs_pro8000.yaml"',
                        f'resource = "{res}"\nvisa_library = "@py"\ntimeout_ms = 500')
    p = tmp_path / "py.toml"
    p.write_text(text, encoding="utf-8")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(StationError) as info:
            Station(load_station_config(p))
    msg = str(info.value)
    assert msg.startswith(f"role 'laser' (ThorlabsPRO8000 at '{res}') failed to open: cannot connect") and "\n" not in msg
    assert [str(w.message) for w in caught if issubclass(w.category, UserWarning)] == []
