"""labqfl.instruments.settings: the Setting descriptor (rule, SCPI get/set, values map, processing),
the declaration list derived from it, and that every implementation uses its interface's Settings
instead of hand-written properties."""

from __future__ import annotations

import inspect
from typing import Any

import labqfl.drivers as drivers_pkg
import labqfl.sim_backends.instruments as sim_pkg
import labqfl.sim_backends.recording as recording_mod
import numpy as np
import pytest

from labqfl.errors import InstrumentReplyError
from labqfl.instruments import Instrument, Setting, SettingError, interfaces
from labqfl.instruments.settings import Rejected, boolean, in_range, one_of, per_channel, rule


class _Wire(Instrument):
    """An instrument whose 'link' records what the descriptors send and answers from a dict."""

    channel = 3
    span = 5.0
    level = Setting("V", "output level", validator=in_range(-1.0, lambda s: s.span, "V")).scpi(
        "SOUR{channel}:VOLT?", "SOUR{channel}:VOLT {value:.3f}")
    shutter = Setting("", "closed", validator=boolean()).scpi(
        "OUTP{channel}?", "OUTP{channel} {value}", cast=bool, get_process=lambda on: not on,
        set_process=lambda closed: 0 if closed else 1)
    mode = Setting("", "lock point", validator=one_of(["null", "peak"])).scpi(
        "MODE?", "MODE {value}", cast=str.upper, values={"null": "NULL", "peak": "PEAK"})
    wavelength_nm = Setting("nm", "wavelength", validator=in_range(1000.0, 1700.0, "nm")).scpi(
        "WAV?", "WAV {value:.6e}", get_process=lambda m: m * 1e9, set_process=lambda nm: nm * 1e-9)
    temperature_k = Setting("K", "sensor temperature", writable=False).scpi("TEMP?")

    def __init__(self) -> None:
        super().__init__("bench.awg", "sim")
        self.sent: list[str] = []
        self.replies: dict[str, Any] = {}

    def identity(self) -> str:
        return "test,wire"

    def safe_state(self) -> None:
        pass

    def _setting_query(self, command: str, cast: Any) -> Any:
        self.sent.append(command)
        reply = self.replies[command]
        return reply if cast in (float, int, bool) else cast(reply)

    def _setting_write(self, command: str) -> None:
        self.sent.append(command)


def test_setting_writes_its_scpi_after_validation_and_reads_it_back() -> None:
    w = _Wire()
    w.level, w.shutter, w.mode, w.wavelength_nm = 2.5, True, "peak", 1550.0
    assert w.sent == ["SOUR3:VOLT 2.500", "OUTP3 0", "MODE PEAK", "WAV 1.550000e-06"]
    w.replies = {"SOUR3:VOLT?": 2.5, "OUTP3?": False, "MODE?": "peak", "WAV?": 1.55e-6, "TEMP?": 290.0}
    assert (w.level, w.shutter, w.mode, w.temperature_k) == (2.5, True, "peak", 290.0)
    assert w.wavelength_nm == pytest.approx(1550.0)


def test_a_refused_value_sends_nothing_and_names_instrument_setting_value_and_range() -> None:
    w = _Wire()
    for name, bad, expected in [("level", 6.0, "-1 to 5 V"), ("level", "x", "a number, -1 to 5 V"),
                                ("level", True, "a number, -1 to 5 V"), ("level", float("nan"), "-1 to 5 V"),
                                ("shutter", 1, "True or False"), ("mode", "NULL", "one of ['null', 'peak']")]:
        with pytest.raises(SettingError) as err:
            setattr(w, name, bad)
        assert str(err.value) == f"bench.awg: {name} = {bad!r} is out of range; expected {expected}"
        assert isinstance(err.value, ValueError)
    assert w.sent == []
    w.span = 10.0  # a range that follows the instrument's state
    w.level = 6.0
    assert w.sent == ["SOUR3:VOLT 6.000"]


def test_readings_refuse_writes_and_unknown_replies_are_reported() -> None:
    w = _Wire()
    with pytest.raises(AttributeError, match="bench.awg: temperature_k is a reading"):
        w.temperature_k = 3.0
    w.replies = {"MODE?": "quad"}
    with pytest.raises(InstrumentReplyError, match=r"unexpected reply 'QUAD'; expected one of \['NULL', 'PEAK'\]"):
        _ = w.mode


def test_via_reads_through_the_getter_and_writes_only_validated_values_through_the_setter() -> None:
    """``Setting.via(fget, fset)``: an implementation's own getter and setter under the
    interface's rule (the declaration form that type checkers follow: one binding per name)."""

    class Ramp:
        name = "D0"

        def __init__(self) -> None:
            self.written: list[float] = []

        def _get_bias(self) -> float:
            return self.written[-1] if self.written else 0.0

        def _set_bias(self, v: float) -> None:
            self.written.append(v)

        bias = interfaces.PhotonDetector.bias.within(0.0, 2.0).via(_get_bias, _set_bias)
        efficiency = interfaces.PhotonDetector.efficiency.via(lambda s: 0.5)

    r = Ramp()
    r.bias = 1.5
    assert (r.bias, r.written) == (1.5, [1.5])
    with pytest.raises(SettingError, match=r"D0: bias = 2\.5 is out of range; expected 0 to 2"):
        r.bias = 2.5
    assert r.written == [1.5]
    assert r.efficiency == 0.5
    with pytest.raises(NotImplementedError, match="cannot write the setting 'efficiency'"):
        r.efficiency = 0.4
    assert interfaces.PhotonDetector.bias.fget is None  # the interface's declaration is untouched


def test_settings_list_is_derived_from_the_descriptors() -> None:
    assert [s.name for s in _Wire.SETTINGS] == ["level", "shutter", "mode", "wavelength_nm", "temperature_k"]
    assert [(s.unit, s.writable) for s in _Wire.SETTINGS][-1] == ("K", False)
    names = [s.name for s in interfaces.PhotonDetector.SETTINGS]
    assert names == ["enabled", "efficiency", "bias", "dead_time_ns", "gated", "gate_width_ns", "gate_delay_ps",
                     "temperature_k"]


def test_a_setting_without_a_way_to_read_it_is_abstract() -> None:
    class Half(interfaces.PowerMeter):
        def identity(self) -> str:
            return ""

        def power_w(self) -> float:
            return 0.0

    with pytest.raises(TypeError, match="abstract"):
        Half("pm")  # type: ignore[abstract]


def test_validators() -> None:
    assert boolean()(None, np.bool_(True)) is True
    assert in_range(1, 10, integer=True)(None, 4.0) == 4 and in_range(0, 9, round_to_int=True)(None, 2.6) == 3
    with pytest.raises(Rejected, match="an integer 1 to 10"):
        in_range(1, 10, integer=True)(None, 2.5)
    with pytest.raises(Rejected, match="above 0 up to 1"):
        in_range(0, 1, lo_open=True)(None, 0.0)
    pc = per_channel(in_range(-1, 1, "V"), lambda s: [1, 2])
    assert pc(None, {2: 0.5}) == {2: 0.5}
    with pytest.raises(Rejected) as err:
        pc(None, {7: 0.5})
    assert (err.value.item, err.value.value) == ("[7]", 0.5) and "channel 7 is not one" in err.value.expected
    with pytest.raises(Rejected, match="a mapping"):
        pc(None, [0.5])

    def even(_inst: Any, v: Any) -> int:
        if int(v) % 2:
            raise Rejected("an even number")
        return int(v)

    assert rule(even)(None, 4) == 4


def _implementations() -> list[type]:
    mods = [m for _, m in inspect.getmembers(drivers_pkg, inspect.ismodule)] + [sim_pkg, recording_mod]
    classes = {c for m in mods for _, c in inspect.getmembers(m, inspect.isclass)
               if issubclass(c, Instrument) and c.__module__.startswith(("labqfl.drivers", "labqfl.sim_backends"))}
    return sorted(classes, key=lambda c: c.__qualname__)


def test_every_driver_and_simulated_instrument_is_covered() -> None:
    names = {c.__name__ for c in _implementations()}
    assert {"Keysight33500B", "KeysightN7764A", "ThorlabsPRO8000", "ThorlabsPM100USB", "IDQuantiqueID120",
            "SingleQuantumEos", "SwabianTimeTagger", "SwabianPulseStreamer", "SwabianPulseStreamerClock",
            "GenericMZIntensityModulator", "SimulatedLaser", "SimulatedDetector", "SimulatedTimeTagger",
            "ReplayTimeTagger"} <= names


@pytest.mark.parametrize("cls", _implementations(), ids=lambda c: c.__name__)
def test_no_implementation_hand_writes_a_declared_setting(cls: type) -> None:
    """Every declared setting of a driver or a simulated instrument is a Setting descriptor all the
    way down its classes (an implementation adds a getter/setter or SCPI strings to the
    interface's Setting; it never shadows it with a property carrying its own checks)."""
    declared = {s.name for s in cls.SETTINGS}  # type: ignore[attr-defined]
    for klass in cls.__mro__:
        for name in declared & set(vars(klass)):
            assert isinstance(vars(klass)[name], Setting), f"{klass.__qualname__}.{name} is a {type(vars(klass)[name]).__name__}"
    interface_settings = {s.name for base in cls.__mro__ if base.__module__ == interfaces.__name__
                          for s in base.SETTINGS}  # type: ignore[attr-defined]
    assert interface_settings <= declared


@pytest.mark.parametrize(("driver", "field", "setting"), [
    ("Keysight33500B", "v_pi_v", "v_pi_v"), ("Keysight33500B", "gate_delay_ps", "gate_delay_ps"),
    ("IDQuantiqueID120", "dead_time_ns", "dead_time_ns"), ("IDQuantiqueID120", "temperature_k", "temperature_setpoint_k"),
    ("SwabianTimeTagger", "trigger_level_v", "trigger_levels_v"), ("SwabianTimeTagger", "sync_divider", "event_dividers"),
    ("SwabianTimeTagger", "dead_times_ps", "dead_times_ps"), ("ThorlabsPRO8000", "rep_rate_hz", "rep_rate_hz"),
])
def test_config_ranges_are_the_settings_ranges(driver: str, field: str, setting: str) -> None:
    cls = getattr(drivers_pkg, driver)
    opts = cls.Options()
    assert cls.config_limits(opts)[field] == getattr(cls, setting).limits(cls)
