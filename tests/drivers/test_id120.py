"""IDQuantiqueID120: the USB-TMC command set of the open Instrumental driver ("[I] <attribute>", see the
driver's module docstring; the vendor manual was not available), against expected_protocol and its
pyvisa-sim device."""

from __future__ import annotations

import pytest
from labqfl.drivers.idquantique_id120 import IDQuantiqueID120
from pymeasure.test import expected_protocol

from labqfl.config import DetectorConfig
from labqfl.errors import InstrumentError, InstrumentReplyError, InstrumentTimeout

RES = "USB0::0x1DDC::0x0330::SIM0001::INSTR"
FAST = {"bias_ramp_v_per_s": 10_000.0, "bias_step_v": 50.0}


@pytest.fixture
def cfg(sim_library) -> DetectorConfig:  # type: ignore[no-untyped-def]
    return DetectorConfig(driver="IDQuantiqueID120", resource=RES, visa_library=sim_library("idquantique_id120.yaml"),
                          timeout_ms=150, kind="spad", bias_current_ua=120.0, dead_time_ns=80_000.0,
                          temperature_k=228.15, options=FAST)


@pytest.fixture
def det(cfg: DetectorConfig):  # type: ignore[no-untyped-def]
    d = IDQuantiqueID120("D0", cfg)
    yield d
    d.close()


def test_id120_exact_protocol_settings() -> None:
    """[I] ``identify``: ``*IDN?``; [I] ``deadtime``: ``DEADTIME:TIME`` (µs, step 40); [I] ``set_temp``:
    ``REG:TEMP_SET_POINT`` (m°C, step 1000); [I] ``threshold``: ``THRESHOLD:VOLTAGE`` (µV, step 500);
    [I] ``temp``: ``REG:MEASURED_TEMP?`` (m°C); [I] ``bias``: ``BIAS:VOLTAGE?`` (µV)."""
    cfg = DetectorConfig(driver="IDQuantiqueID120", resource=RES, kind="spad", bias_current_ua=120.0)
    with expected_protocol(lambda a: IDQuantiqueID120("D0", cfg, adapter=a), [
        (b"*IDN?", b"ID Quantique,ID120,2008,2.1"),
        (b"DEADTIME:TIME 80", None),
        (b"REG:TEMP_SET_POINT -45000", None),
        (b"THRESHOLD:VOLTAGE 25000", None),
        (b"DEADTIME:TIME?", b"80"), (b"REG:MEASURED_TEMP?", b"-44870"), (b"THRESHOLD:VOLTAGE?", b"25000"),
        (b"BIAS:VOLTAGE?", b"0"),
    ]) as d:
        d.dead_time_ns = 80_000  # 80 µs
        d.temperature_setpoint_k = 228.15
        d.threshold_mv = 25.0
        assert d.dead_time_ns == 80_000.0 and d.temperature_k == pytest.approx(228.28)
        assert d.threshold_mv == 25.0 and d.bias_voltage_v == 0.0


def test_id120_exact_protocol_arm_ramps_bias_and_safe_state_ramps_down() -> None:
    """[I] ``run``: ``REG:RUN TRUE|FALSE``; [I] ``bias``: ``BIAS:VOLTAGE <µV>`` in steps of at most
    ``bias_step_v`` (here 50 V) up to the operating bias and back to 0 V; [I] ``integration_time`` and
    [I] ``freq``: ``COUNTERS:INTEGRATION_TIME <ms>`` then ``COUNTERS:DETECTION_FREQ?`` [Hz]."""
    cfg = DetectorConfig(driver="IDQuantiqueID120", resource=RES, kind="spad", bias_current_ua=120.0, options=FAST)
    with expected_protocol(lambda a: IDQuantiqueID120("D0", cfg, adapter=a), [
        (b"*IDN?", b"ID Quantique,ID120,2008,2.1"),
        (b"REG:RUN TRUE", None), (b"BIAS:VOLTAGE?", b"0"),
        (b"BIAS:VOLTAGE 40000000", None), (b"BIAS:VOLTAGE 80000000", None), (b"BIAS:VOLTAGE 120000000", None),
        (b"REG:RUN?", b"TRUE"),
        (b"COUNTERS:INTEGRATION_TIME 200", None), (b"COUNTERS:DETECTION_FREQ?", b"1234"),
        # close(): safe state = bias ramped down, then stopped
        (b"BIAS:VOLTAGE?", b"120000000"),
        (b"BIAS:VOLTAGE 80000000", None), (b"BIAS:VOLTAGE 40000000", None), (b"BIAS:VOLTAGE 0", None),
        (b"REG:RUN FALSE", None),
    ]) as d:
        d.enabled = True
        assert d.enabled
        assert d.count_rate_hz(0.2) == 1234.0
        d.close()
        assert d.closed


def test_id120_against_pyvisa_sim_operating_point_and_safe_state(det: IDQuantiqueID120) -> None:
    assert det.identity().startswith("ID Quantique,ID120,")
    det.apply_operating_point(None)  # type: ignore[arg-type] # the ID120 reads only its own role config
    assert (det.dead_time_ns, det.temperature_setpoint_k, det.threshold_mv) == (80_000.0, pytest.approx(228.15), 25.0)
    assert det.bias_voltage_v == 0.0 and det.enabled is False  # disarmed until a procedure arms it
    det.enabled = True
    assert det.enabled and det.bias_voltage_v == 120.0
    assert 900 <= det.count_rate_hz(0.2) <= 1100
    st = det.status()
    assert st["bias_fault"] is False and st["state"] == "RUNNING" and "error_queue" not in st
    det.safe_state()
    assert det.enabled is False and det.bias_voltage_v == 0.0


@pytest.mark.parametrize("setting,value", [
    ("bias", -1), ("bias", 251), ("dead_time_ns", 100), ("temperature_setpoint_k", 300.0), ("threshold_mv", 2000),
    ("gated", True), ("gate_width_ns", 1.0), ("gate_delay_ps", 5.0), ("enabled", "yes"), ("bias", float("nan")),
    ("efficiency", 1.5),
])
def test_id120_out_of_range_is_value_error(det: IDQuantiqueID120, setting: str, value: object) -> None:
    with pytest.raises(ValueError, match=setting):
        setattr(det, setting, value)


def test_id120_bad_replies_and_timeout() -> None:
    cfg = DetectorConfig(driver="IDQuantiqueID120", resource=RES)
    with expected_protocol(lambda a: IDQuantiqueID120("D0", cfg, adapter=a), [
        (b"*IDN?", b"ID Quantique,ID120,1,2"),
        (b"REG:RUN?", b"maybe"),
        (b"BIAS:VOLTAGE?", b"#x!"),
        (b"BIAS:VOLTAGE?", b"0"), (b"REG:RUN FALSE", None),  # close(): safe state
    ]) as d:
        with pytest.raises(InstrumentReplyError, match="expected TRUE or FALSE"):
            _ = d.enabled
        with pytest.raises(InstrumentReplyError, match="expected a number"):
            _ = d.bias_voltage_v
        d.close()


def test_id120_unknown_query_times_out_and_double_open_refused(det: IDQuantiqueID120, cfg: DetectorConfig) -> None:
    with pytest.raises(InstrumentTimeout, match="REG:NOPE"):
        det.link.query("REG:NOPE?")
    with pytest.raises(InstrumentError, match="already open by instrument 'D0'"):
        IDQuantiqueID120("D0-again", cfg)


def test_id120_refused_at_1550_nm() -> None:
    from labqfl.config import parse_station_config
    from labqfl.errors import ConfigError

    data = {"clients": [{"name": "C1", "seed": 1}, {"name": "C2", "seed": 2}], "loop": {"segments_km": [1, 1, 1]},
            "detectors": {"D0": {"driver": "IDQuantiqueID120", "resource": RES, "kind": "spad", "dead_time_ns": 80_000,
                                 "temperature_k": 228.15, "bias_current_ua": 120.0}, "D1": {}}}
    with pytest.raises(ConfigError, match=r"IDQuantiqueID120 works from 350 to 1000 nm.*1550 nm"):
        parse_station_config(data, "s.toml")
    data["laser"] = {"wavelength_nm": 850.0}
    assert parse_station_config(data, "s.toml").detectors["D0"].driver == "IDQuantiqueID120"


# -- review s31 A3/B3: the safe state ends with REG:RUN FALSE; out-of-range replies refused ---------------
def test_id120_safe_state_stops_the_module_when_the_bias_read_back_is_bad() -> None:
    """[I] ``bias``/``run``: a garbage ``BIAS:VOLTAGE?`` reply still ends with ``BIAS:VOLTAGE`` ramped down from
    the last bias written (here 120 V, in 50 V steps) and ``REG:RUN FALSE``; the read failure is raised after."""
    cfg = DetectorConfig(driver="IDQuantiqueID120", resource=RES, kind="spad", bias_current_ua=120.0, options=FAST)
    with expected_protocol(lambda a: IDQuantiqueID120("D0", cfg, adapter=a), [
        (b"*IDN?", b"ID Quantique,ID120,2008,2.1"),
        (b"REG:RUN TRUE", None), (b"BIAS:VOLTAGE?", b"0"),
        (b"BIAS:VOLTAGE 40000000", None), (b"BIAS:VOLTAGE 80000000", None), (b"BIAS:VOLTAGE 120000000", None),
        (b"BIAS:VOLTAGE?", b"ERR"),
        (b"BIAS:VOLTAGE 80000000", None), (b"BIAS:VOLTAGE 40000000", None), (b"BIAS:VOLTAGE 0", None),
        (b"REG:RUN FALSE", None),
        (b"BIAS:VOLTAGE?", b"0"), (b"REG:RUN FALSE", None),  # close()
    ]) as d:
        d.enabled = True
        with pytest.raises(InstrumentReplyError, match=r"safe state: unexpected reply 'ERR'; expected a number; the "
                                                       r"module \(REG:RUN FALSE\) was switched off anyway"):
            d.safe_state()
        d.close()


def test_id120_safe_state_without_a_known_bias_goes_straight_to_zero() -> None:
    """No bias written in this session and the read fails: ``BIAS:VOLTAGE 0`` at once, then ``REG:RUN FALSE``."""
    cfg = DetectorConfig(driver="IDQuantiqueID120", resource=RES)
    with expected_protocol(lambda a: IDQuantiqueID120("D0", cfg, adapter=a), [
        (b"*IDN?", b"ID Quantique,ID120,2008,2.1"),
        (b"BIAS:VOLTAGE?", b""), (b"BIAS:VOLTAGE 0", None), (b"REG:RUN FALSE", None),
    ]) as d:
        d.close()  # close logs the failure and still releases the session
        assert d.closed


@pytest.mark.parametrize("query,reply,match", [
    (b"COUNTERS:DETECTION_FREQ?", b"-5", "reply '-5' is out of range; expected at least 0 Hz"),
    (b"BIAS:VOLTAGE?", b"999000000000", "out of range; expected 0 to 2.5e\\+08 µV"),
])
def test_id120_out_of_range_replies_are_refused(query: bytes, reply: bytes, match: str) -> None:
    """[I] ``freq`` (a count rate, >= 0) and [I] ``bias`` (0 … 250 000 000 µV)."""
    cfg = DetectorConfig(driver="IDQuantiqueID120", resource=RES)
    steps = [(b"COUNTERS:INTEGRATION_TIME 200", None)] if query.startswith(b"COUNTERS") else []
    with expected_protocol(lambda a: IDQuantiqueID120("D0", cfg, adapter=a), [
        (b"*IDN?", b"ID Quantique,ID120,2008,2.1"), *steps, (query, reply),
    ]) as d:
        with pytest.raises(InstrumentReplyError, match=match):
            if steps:
                d.count_rate_hz(0.2)
            else:
                _ = d.bias_voltage_v
