"""SingleQuantumEos: the WebSQ protocol of Single Quantum's own ``WebSQControl.py`` ("[W] <method>", see the
driver's module docstring), exact bytes with expected_protocol, and the whole behaviour against the
protocol-level emulator on loopback (pyvisa-py)."""

from __future__ import annotations

import importlib.util
import json

import pytest
from labqfl.drivers.singlequantum_eos import SingleQuantumEos
from pymeasure.test import expected_protocol

from labqfl.config import DetectorConfig
from labqfl.errors import InstrumentError, InstrumentQueueError, InstrumentReplyError

RES = "TCPIP0::192.168.1.1::12000::SOCKET"
LP = b'{"request": "labelProps", "value": "None"}'
needs_pyvisa_py = pytest.mark.skipif(importlib.util.find_spec("pyvisa_py") is None,
                                     reason="pyvisa-py (the 'hardware' extra) is not installed")


def dump(bias: list[float], enable: bool, *, before: bytes = b"") -> bytes:
    """The controller's answer to ``labelProps`` ([W] ``SQTalk.get_label``/``add_labelProps``): one
    ``{"label": L, "value": {"value": v}}`` per label, each ended by ``\\x17`` ([W] ``SQTalk.run``)."""
    labels = {"NumberOfDetectors": 2, "BiasCurrent": bias, "TriggerLevel": [25.0, 25.0], "DetectorEnable": enable,
              "InptMeasurementPeriod": 100}
    return before + b"".join(json.dumps({"label": k, "value": {"value": v}}).encode() + b"\x17" for k, v in labels.items())


def opening(bias: list[float], enable: bool) -> list[tuple[bytes | None, bytes | None]]:
    # two labelProps to learn the answer's length, then the one that reads NumberOfDetectors
    return [(LP, dump(bias, enable)), (LP, dump(bias, enable)), (LP, dump(bias, enable))]


def cfg(**options: object) -> DetectorConfig:
    return DetectorConfig(driver="SingleQuantumEos", resource=RES, bias_current_ua=0.5,
                          options={"channel": 2, "bias_step_ua": 0.5, "bias_ramp_ua_per_s": 10_000.0, **options})


def test_eos_exact_protocol_arm_and_safe_state() -> None:
    """[W] ``enable_detectors``: ``{"command": "DetectorEnable", "label": "DetectorEnable", "value": true}``;
    [W] ``set_bias_current``: ``{"command": "SetAllBiasCurrents", "label": "BiasCurrent", "value": [...]}``
    (µA, all channels at once: this role changes only its own entry); every command is confirmed by
    reading the label back; the controller's broadcast of the new value is read on the way."""
    en_on = b'{"command": "DetectorEnable", "label": "DetectorEnable", "value": true}'
    en_off = b'{"command": "DetectorEnable", "label": "DetectorEnable", "value": false}'
    set_half = b'{"command": "SetAllBiasCurrents", "label": "BiasCurrent", "value": [0.0, 0.5]}'
    set_zero = b'{"command": "SetAllBiasCurrents", "label": "BiasCurrent", "value": [0.0, 0.0]}'
    # no latch check here: it reads the counts port, a second connection expected_protocol does not model
    # (the check is tested against the emulator below)
    with expected_protocol(lambda a: SingleQuantumEos("D1", cfg(latch_check=False), adapter=a), [
        *opening([0.0, 0.0], False),
        # arm: DetectorEnable on (confirmed), bias of channel 2 ramped 0 -> 0.5 µA
        (LP, dump([0.0, 0.0], False)), (en_on, None),
        (LP, dump([0.0, 0.0], True, before=b'{"label": "DetectorEnable", "value": true}\x17')),
        (LP, dump([0.0, 0.0], True)), (LP, dump([0.0, 0.0], True)), (set_half, None), (LP, dump([0.0, 0.5], True)),
        # close(): safe state = bias ramped 0.5 -> 0 µA, then DetectorEnable off (every channel at 0)
        (LP, dump([0.0, 0.5], True)), (LP, dump([0.0, 0.5], True)), (set_zero, None), (LP, dump([0.0, 0.0], True)),
        (LP, dump([0.0, 0.0], True)), (en_off, None), (LP, dump([0.0, 0.0], False)),
    ]) as d:
        assert d.identity().startswith("Single Quantum") and d.n_detectors == 2
        d.enabled = True
        d.close()


def test_eos_exact_protocol_controller_error_and_refused_value() -> None:
    """[W] ``SQTalk.check_error``: a label containing "Error" is the controller refusing something."""
    set_one = b'{"command": "SetAllBiasCurrents", "label": "BiasCurrent", "value": [0.0, 1.0]}'
    with expected_protocol(lambda a: SingleQuantumEos("D1", cfg(), adapter=a), [
        *opening([0.0, 0.0], False),
        (set_one, None), (LP, dump([0.0, 0.0], False, before=b'{"label": "Error", "value": "bias out of range"}\x17')),
        (set_one, None), (LP, dump([0.0, 0.0], False)),
        (LP, b'not json\x17'),
    ]) as d:
        with pytest.raises(InstrumentQueueError, match="bias out of range.*'D1'"):
            d._command("SetAllBiasCurrents", "BiasCurrent", [0.0, 1.0])
        with pytest.raises(InstrumentReplyError, match=r"controller kept BiasCurrent = \[0.0, 0.0\]; expected \[0.0, 1.0\]"):
            d._command("SetAllBiasCurrents", "BiasCurrent", [0.0, 1.0])
        with pytest.raises(InstrumentReplyError, match="is not JSON"):
            _ = d.bias_currents_ua


@pytest.mark.parametrize("setting,value", [
    ("bias", -0.1), ("bias", 91.0), ("gated", True), ("gate_width_ns", 1.0), ("gate_delay_ps", 1.0),
    ("trigger_level_mv", 5000.0), ("enabled", "on"), ("efficiency", 0.0),
])
def test_eos_out_of_range_is_value_error_before_any_io(setting: str, value: object) -> None:
    with expected_protocol(lambda a: SingleQuantumEos("D1", cfg(), adapter=a), opening([0.0, 0.0], False)) as d:
        with pytest.raises(ValueError, match=setting):
            setattr(d, setting, value)


@needs_pyvisa_py
def test_eos_two_roles_on_one_controller_against_the_emulator() -> None:
    from labqfl.sim_backends.websq import WebSQEmulator

    with WebSQEmulator(2) as emu:
        def make(role: str, ch: int, bias: float) -> SingleQuantumEos:
            return SingleQuantumEos(role, DetectorConfig(
                driver="SingleQuantumEos", resource=emu.resource, visa_library="@py", timeout_ms=2000,
                bias_current_ua=bias, options={"channel": ch, "counts_port": emu.counts_port, "bias_step_ua": 1.0,
                                               "bias_ramp_ua_per_s": 10_000.0, "trigger_level_mv": 30.0}))
        d0, d1 = make("D0", 1, 3.0), make("D1", 2, 2.0)
        try:
            assert d0.link.adapter is d1.link.adapter and d0.lock is d1.lock  # one session for both nanowires
            d0.apply_operating_point(None)  # type: ignore[arg-type]
            assert emu.trigger_mv == [30.0, 25.0] and d0.enabled is False
            d0.enabled = True
            d1.enabled = True
            assert emu.enabled and emu.bias_ua == [3.0, 2.0]
            # stepwise: at most 1 µA per step, one channel at a time
            assert emu.bias_history == [[1.0, 0.0], [2.0, 0.0], [3.0, 0.0], [3.0, 1.0], [3.0, 2.0]]
            assert d0.count_rate_hz(0.02) == pytest.approx(300.0) and d1.count_rate_hz(0.02) == pytest.approx(200.0)
            assert d0.temperature_k == pytest.approx(2.51)
            d0.safe_state()  # D0 down, D1 still armed: the bias supply stays on
            assert emu.bias_ua == [0.0, 2.0] and emu.enabled is True
            d1.close()  # the last armed channel down: bias supply off
            assert emu.bias_ua == [0.0, 0.0] and emu.enabled is False
            assert emu.bias_history[-1] == [0.0, 0.0] and [0.0, 1.0] in emu.bias_history
        finally:
            d0.close()
            d1.close()


@needs_pyvisa_py
def test_eos_channel_beyond_the_controller_is_refused() -> None:
    from labqfl.sim_backends.websq import WebSQEmulator

    with WebSQEmulator(2) as emu:
        c = DetectorConfig(driver="SingleQuantumEos", resource=emu.resource, visa_library="@py", timeout_ms=2000,
                           options={"channel": 3})
        with pytest.raises(InstrumentError, match="options.channel = 3, but the controller has 2 detectors"):
            SingleQuantumEos("D0", c)


# -- review s31 A4/B3: label shapes checked; the safe state ends with DetectorEnable false -------------------
EN_OFF = b'{"command": "DetectorEnable", "label": "DetectorEnable", "value": false}'


@pytest.mark.parametrize("bias", [[10.0], [10.0, "n/a"], [10.0, None]])
def test_eos_safe_state_switches_detector_enable_off_when_bias_current_is_malformed(bias: list) -> None:
    """[W] ``enable_detectors``: a ``BiasCurrent`` that is not one number per detector is one InstrumentReplyError
    naming the label, and the safe state still sends ``DetectorEnable`` false (it removes every nanowire's bias)."""
    with expected_protocol(lambda a: SingleQuantumEos("D1", cfg(), adapter=a), [
        *opening([0.0, 10.0], True),
        (LP, dump(bias, True)),  # type: ignore[arg-type]
        (EN_OFF, None), (LP, dump([0.0, 0.0], False)),
        # close(): already at 0 µA, every channel at 0 µA: DetectorEnable false (again)
        (LP, dump([0.0, 0.0], False)), (LP, dump([0.0, 0.0], False)), (EN_OFF, None), (LP, dump([0.0, 0.0], False)),
    ]) as d:
        with pytest.raises(InstrumentReplyError, match=r"safe state: unexpected BiasCurrent = .*expected a list of 2 "
                                                       r"numbers.*DetectorEnable false\) was switched off anyway"):
            d.safe_state()
        d.close()


def test_eos_detector_enable_must_be_a_json_boolean() -> None:
    """[W] ``enable_detectors`` sends a JSON boolean; the string "false" read back is refused, not taken as armed."""
    with expected_protocol(lambda a: SingleQuantumEos("D1", cfg(), adapter=a), [
        *opening([0.0, 0.0], False),
        (LP, dump([0.0, 0.0], False).replace(b'"DetectorEnable", "value": {"value": false}',
                                              b'"DetectorEnable", "value": {"value": "false"}')),
    ]) as d:
        with pytest.raises(InstrumentReplyError, match="unexpected DetectorEnable = 'false'; expected a JSON boolean"):
            _ = d.enabled


# -- review s36 M3: a latched nanowire (biased, counting nothing) is reset once, then refused -----------------
@needs_pyvisa_py
def test_eos_latched_channel_is_reset_once_and_refused_if_it_stays_latched() -> None:
    """After arming, the channel's counts are read over the latch window from the counts port ([W] ``SQCounts.run``;
    period [W] ``set_measurement_periode``): a biased channel that counts nothing is latched, its bias
    ramped to 0 µA and back ([W] ``set_bias_current``). The emulator latches a channel biased above its switching
    current (here 2.5 µA: D1 at 3 µA latches again on every ramp up) or on demand, and frees it at 0 µA."""
    from labqfl.sim_backends.websq import WebSQEmulator

    with WebSQEmulator(2, switching_current_ua=2.5) as emu:
        def make(role: str, ch: int, bias: float) -> SingleQuantumEos:
            return SingleQuantumEos(role, DetectorConfig(
                driver="SingleQuantumEos", resource=emu.resource, visa_library="@py", timeout_ms=2000,
                bias_current_ua=bias, dark_count_rate_hz=50.0,
                options={"channel": ch, "counts_port": emu.counts_port, "bias_step_ua": 1.0,
                         "bias_ramp_ua_per_s": 10_000.0}))
        d0, d1 = make("D0", 1, 2.0), make("D1", 2, 3.0)
        try:
            d0.enabled = True  # 200 counts/s (the emulator's 100 /s per µA): not latched
            assert emu.period_ms == 100  # the check's window put back to the controller's period
            assert emu.latched == [False, False] and d0.count_rate_hz(0.02) == pytest.approx(200.0)
            # latched while armed (a bright pulse): the next reading resets it once and counts again
            emu.latch(1)
            assert d0.count_rate_hz(0.02) == pytest.approx(200.0)
            assert emu.latched == [False, False] and [0.0, 0.0] in emu.bias_history
            # above its switching current: latched after the reset too -> refused in one line, bias at 0 µA
            with pytest.raises(InstrumentError) as err:
                d1.enabled = True
            line = str(err.value)
            assert "\n" not in line
            # no count over the screening (0.2 s) and confirmation (1.64 s) windows, twice (review s36 lab2 L1)
            assert line.startswith("D1: channel 2 latched: no count over 1.84 s at 3 µA after its bias was ramped "
                                   "to 0 µA and back (a working channel of at least 5 dark counts/s"), line
            assert emu.bias_ua == [2.0, 0.0] and emu.latched == [False, False]
            ups = [b for b in emu.bias_history if b[1] == 3.0]
            assert len(ups) == 2  # armed once, reset once, then left at 0
        finally:
            d0.close()
            d1.close()
