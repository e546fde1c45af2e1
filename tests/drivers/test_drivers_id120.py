"""IDQuantiqueID120: real driver class against its pyvisa-sim device and a protocol fake."""

from __future__ import annotations

import pytest
from labqfl.drivers.idquantique_id120 import IDQuantiqueID120
from pymeasure.test import expected_protocol

from labqfl.config import DetectorConfig
from labqfl.errors import (
    InstrumentError,
    InstrumentQueueError,
    InstrumentReplyError,
    InstrumentTimeout,
)


@pytest.fixture
def cfg(sim_library) -> DetectorConfig:  # type: ignore[no-untyped-def]
    return DetectorConfig(driver="IDQuantiqueID120", resource="ASRL1::INSTR",
                          visa_library=sim_library("idquantique_id120.yaml"), timeout_ms=150)


@pytest.fixture
def det(cfg: DetectorConfig):  # type: ignore[no-untyped-def]
    d = IDQuantiqueID120("D0", cfg)
    yield d
    d.close()


def test_id120_open_identity_and_settings_roundtrip(det: IDQuantiqueID120) -> None:
    assert det.identity().startswith("ID Quantique,ID120,")
    det.enabled = True
    det.efficiency = 0.25
    det.bias = 3.5
    det.dead_time_ns = 2000
    det.gated = True
    det.gate_width_ns = 1.25
    det.gate_delay_ps = 4321
    assert (det.enabled, det.efficiency, det.bias, det.dead_time_ns) == (True, 0.25, 3.5, 2000.0)
    assert (det.gated, det.gate_width_ns, det.gate_delay_ps) == (True, 1.25, 4321.0)
    assert det.temperature_k == pytest.approx(233.15)
    assert 900 / 0.002 <= det.count_rate_hz(0.002) <= 1100 / 0.002
    snap = det.snapshot()
    assert snap["settings"]["dead_time_ns"] == {"value": 2000.0, "unit": "ns"}
    assert snap["settings"]["temperature_k"]["unit"] == "K"


@pytest.mark.parametrize("setting,value", [
    ("efficiency", 0.9), ("efficiency", 0.01), ("bias", -1), ("bias", 25), ("dead_time_ns", 100),
    ("gate_width_ns", 0.1), ("gate_delay_ps", -5), ("enabled", "yes"), ("gated", 2), ("bias", float("nan")),
])
def test_id120_out_of_range_is_value_error(det: IDQuantiqueID120, setting: str, value: object) -> None:
    with pytest.raises(ValueError, match=setting):
        setattr(det, setting, value)


def test_id120_error_queue_and_timeout(det: IDQuantiqueID120) -> None:
    with pytest.raises(InstrumentQueueError) as ei:
        det.link.write("DET:EFF 95")  # past the driver's validation: the device refuses it
    msg = str(ei.value)
    assert "Command error" in msg and "'D0'" in msg and "ASRL1::INSTR" in msg and "DET:EFF 95" in msg
    assert det.efficiency == 0.10  # unchanged
    with pytest.raises(InstrumentTimeout, match="DET:NOPE"):
        det.link.query("DET:NOPE?")
    with pytest.raises(InstrumentQueueError):  # the unknown query left an entry in the queue
        det.status()
    assert det.status()["connected"] is True


@pytest.mark.filterwarnings("ignore:read string doesn't end with termination")
@pytest.mark.parametrize("reply_eom", ["\\n", "\\r"])
def test_id120_wrong_termination_is_reported(sim_library, reply_eom: str) -> None:  # type: ignore[no-untyped-def]
    lib = sim_library("idquantique_id120.yaml", lambda t: t.replace('r: "\\r\\n"', f'r: "{reply_eom}"'))
    cfg = DetectorConfig(driver="IDQuantiqueID120", resource="ASRL1::INSTR", visa_library=lib, timeout_ms=100)
    with pytest.raises((InstrumentReplyError, InstrumentTimeout), match="termination"):
        IDQuantiqueID120("D0", cfg)


def test_id120_close_idempotent_reconnect_and_double_open(cfg: DetectorConfig) -> None:
    d = IDQuantiqueID120("D0", cfg)
    d.enabled = True
    with pytest.raises(InstrumentError, match="already open by instrument 'D0'"):
        IDQuantiqueID120("D0-again", cfg)
    d.reconnect()
    assert d.enabled is True
    d.close()
    d.close()
    assert d.closed
    with pytest.raises(InstrumentError, match="not connected"):
        _ = d.enabled
    d2 = IDQuantiqueID120("D0", cfg)  # resource released by close()
    assert d2.enabled is False  # close() put the detector in its safe state
    d2.close()


def test_id120_two_threads(det: IDQuantiqueID120, threads) -> None:  # type: ignore[no-untyped-def]
    def work(i: int) -> None:
        for _k in range(25):
            det.dead_time_ns = 1000 + 100 * i
            assert det.temperature_k > 0
            assert det.identity().startswith("ID Quantique")
            det.bias = 1.0 + i
    threads(work)
    assert det.bias in (1.0, 2.0)


def test_id120_exact_protocol() -> None:
    cfg = DetectorConfig(driver="IDQuantiqueID120", resource="ASRL9::INSTR")
    ok = (b"SYST:ERR?", b'0,"No error"')
    with expected_protocol(lambda a: IDQuantiqueID120("D0", cfg, adapter=a), [
        (b"*IDN?", b"ID Quantique,ID120,1,2"),
        (b"DET:ENAB 1", None), ok,
        (b"DET:EFF 25", None), ok,
        (b"DET:BIAS 3.50", None), ok,
        (b"DET:DEAD 2000", None), ok,
        (b"DET:MODE GATE", None), ok,
        (b"DET:GATE:WIDT 1.25", None), ok,
        (b"DET:GATE:DEL 4321", None), ok,
        (b"DET:ENAB?", b"1"), (b"DET:EFF?", b"25"), (b"DET:TEMP?", b"-40.5"),
        (b"DET:INT 1", None), ok, (b"DET:COUN?", b"7"),
        (b"DET:ENAB 0", None), ok,  # close(): safe state
    ]) as d:
        d.enabled, d.efficiency, d.bias, d.dead_time_ns = True, 0.25, 3.5, 2000
        d.gated, d.gate_width_ns, d.gate_delay_ps = True, 1.25, 4321
        assert d.enabled and d.efficiency == 0.25 and d.temperature_k == pytest.approx(232.65)
        assert d.count_rate_hz(0.001) == pytest.approx(7000.0)
        d.close()


def test_id120_serial_garbage_and_bad_replies() -> None:
    cfg = DetectorConfig(driver="IDQuantiqueID120", resource="ASRL9::INSTR")
    with expected_protocol(lambda a: IDQuantiqueID120("D0", cfg, adapter=a), [
        (b"*IDN?", b"ID Quantique,ID120,1,2"),
        (b"DET:TEMP?", b"\xff\xfe\x81"),
        (b"DET:BIAS?", b"#x!"),
        (b"DET:ENAB?", b"maybe"),
        (b"DET:DEAD?", b"12\x0334"),
        (b"DET:ENAB 0", None), (b"SYST:ERR?", b"garbage"),
    ]) as d:
        with pytest.raises(InstrumentReplyError, match="serial garbage"):
            _ = d.temperature_k
        with pytest.raises(InstrumentReplyError, match="expected a number"):
            _ = d.bias
        with pytest.raises(InstrumentReplyError, match="expected 0/1"):
            _ = d.enabled
        with pytest.raises(InstrumentReplyError, match="control characters"):
            _ = d.dead_time_ns
        d.close()  # safe-state failure (bad error-queue reply) is logged, close still completes
        assert d.closed
