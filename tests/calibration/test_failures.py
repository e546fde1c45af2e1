"""Bad data gives a clear CalibrationError (never a number), and every failure or Ctrl-C leaves
the instruments safe (laser off, detectors disabled, shutters closed, bias back to nominal)."""

from __future__ import annotations

import pytest
from labqfl.calibration import (
    channel_delays,
    dark_counts,
    dead_time_afterpulsing,
    efficiency,
    loop_visibility,
    timing_jitter,
    vpi_bias,
)

from labqfl.errors import CalibrationError, InstrumentError, LabqflError


def _assert_safe(st) -> None:
    assert st.laser.output_enabled is False
    assert st.detector("D0").enabled is False and st.detector("D1").enabled is False
    assert all(st.attenuator(c).shutter_closed for c in st.config.client_names)


def test_calib_error_is_a_labqfl_error() -> None:
    assert issubclass(CalibrationError, LabqflError)


def test_calib_no_light_efficiency(station_factory, calh) -> None:
    st = station_factory()
    st.laser.power_mw = 0.0  # laser "on" but dark
    with pytest.raises(CalibrationError, match="no light"):
        efficiency(calh.ctx_for(st))
    _assert_safe(st)


def test_calib_no_light_jitter_and_delays(station_factory, calh) -> None:
    st = station_factory()
    st.laser.power_mw = 0.0
    with pytest.raises(CalibrationError, match="no light"):
        timing_jitter(calh.ctx_for(st))
    st2 = station_factory()
    st2.laser.power_mw = 0.0
    with pytest.raises(CalibrationError, match="no light"):
        channel_delays(calh.ctx_for(st2))


def test_calib_saturated_detector(station_factory, calh) -> None:
    """A light leak / huge dark rate near 1/τ_d is refused, not 'corrected' into nonsense."""
    def leak(data: dict) -> None:
        data["detectors"]["D0"].update(dark_count_rate_hz=1e8, dead_time_ns=30.0)
    st = station_factory(leak)
    with pytest.raises(CalibrationError, match="saturated"):
        dark_counts(calh.ctx_for(st), integration_s=0.02, bias_steps=())
    _assert_safe(st)


def test_calib_saturated_efficiency(station_factory, calh) -> None:
    """Too much light is dimmed with the source's attenuator (a known ΔA) until the dead-time
    correction is small; a detector that stays saturated whatever the attenuation (a light leak
    or a dark rate near 1/τ_d) is refused."""
    st = station_factory()
    st.attenuator("C1").attenuation_db = 20.0  # 1000× the photons: > 1 click per few pulses
    r = efficiency(calh.ctx_for(st), duration_s=0.01)
    # dimmed by well over 15 dB from the 20 dB set above: 39.7 dB at the embedded 10 s point (mean μ of the
    # clients' mix ≈ 0.024 per pulse), just over 40 at the 10^9-slot point before it (≈ 0.032, 1.2 dB brighter)
    assert r.raw["reference"]["attenuation_measure_db"] > 35.0
    assert st.attenuator("C1").attenuation_db == 20.0  # restored afterwards
    calh.assert_recovers(r)

    def leak(data: dict) -> None:
        data["detectors"]["D0"].update(dark_count_rate_hz=1e8, dead_time_ns=30.0)
    st2 = station_factory(leak)
    with pytest.raises(CalibrationError, match="saturated"):
        efficiency(calh.ctx_for(st2), duration_s=0.01)
    _assert_safe(st2)


def test_calib_no_fringe(station_factory, calh) -> None:
    def novis(data: dict) -> None:
        data["loop"]["visibility"] = 1e-4
    st = station_factory(novis)
    with pytest.raises(CalibrationError, match="no interference fringe"):
        vpi_bias(calh.ctx_for(st), ["C2"], n_points=21, integration_s=0.005)
    _assert_safe(st)
    st2 = station_factory(novis)
    with pytest.raises(CalibrationError, match="no interference fringe"):
        loop_visibility(calh.ctx_for(st2), n_points=12, point_duration_s=0.02, single_duration_s=0.1)


class _Flaky:
    """Wraps the tagger's count_rates: raises ``exc`` on call number ``after`` + 1."""

    def __init__(self, tagger, exc: BaseException, after: int) -> None:
        self.inner = tagger.count_rates
        self.exc, self.after, self.calls = exc, after, 0

    def __call__(self, *a, **k):
        self.calls += 1
        if self.calls > self.after:
            raise self.exc
        return self.inner(*a, **k)


def test_calib_injected_instrument_failure_leaves_station_safe(station_factory, calh, monkeypatch) -> None:
    st = station_factory()
    bias0 = st.detector("D0").bias
    monkeypatch.setattr(st.time_tagger, "count_rates",
                        _Flaky(st.time_tagger, InstrumentError("timeout", instrument="time_tagger"), after=1))
    seen: list[float] = []
    cls = type(st.detector("D0"))
    orig = cls.__dict__["bias"]  # the instrument's bias setting (a descriptor)

    class Spy:  # record the biases the procedure sets, then set them as usual
        def __get__(self, obj, objtype=None):
            return orig.__get__(obj, objtype)

        def __set__(self, obj, value):
            seen.append(value)
            orig.__set__(obj, value)

    monkeypatch.setattr(cls, "bias", Spy())
    with pytest.raises(CalibrationError) as ei:
        dead_time_afterpulsing(calh.ctx_for(st), n_intervals=5000)
    assert max(seen) > bias0  # the bias had been raised before the failure
    msg = str(ei.value)
    assert "dead_time_afterpulsing failed" in msg and "timeout" in msg and "safe state" in msg
    _assert_safe(st)
    assert st.detector("D0").bias == pytest.approx(bias0)  # raised bias was brought back down
    assert st.phase_modulator("C1").output_enabled is False


def test_calib_ctrl_c_leaves_station_safe(station_factory, calh, monkeypatch) -> None:
    st = station_factory()
    monkeypatch.setattr(st.time_tagger, "count_rates", _Flaky(st.time_tagger, KeyboardInterrupt(), after=3))
    with pytest.raises(KeyboardInterrupt):
        vpi_bias(calh.ctx_for(st), ["C2"], n_points=21, integration_s=0.005)
    _assert_safe(st)
    assert getattr(st.phase_modulator("C2"), "dc_voltage", None) is None  # DC drive cleared


def test_calib_unexpected_bug_is_wrapped(station_factory, calh, monkeypatch) -> None:
    st = station_factory()
    monkeypatch.setattr(st.time_tagger, "count_rates", _Flaky(st.time_tagger, ZeroDivisionError("boom"), after=0))
    with pytest.raises(CalibrationError, match="ZeroDivisionError: boom"):
        efficiency(calh.ctx_for(st))
    _assert_safe(st)
