"""Connect as the Station tab shows it (review s31, items 6 and 11): a failed connect leaves the header
"not connected" with the error (not "connecting…") and is reported before the first-use warm-up; a
simulated station opens in its safe state like a real one; a detector's bias has its type's unit."""

from __future__ import annotations

from labqfl.gui.controller import Controller
from labqfl.gui.core import TestbedCore
from labqfl.gui.main_window import MainWindow
from labqfl.gui.workers.warmup import MESSAGE as WARM_UP_MESSAGE

from labqfl.errors import StationError


def test_a_failed_connect_resets_the_header_with_the_error(qtbot, small_config, tmp_path) -> None:  # type: ignore[no-untyped-def]
    def broken(cfg, base):  # type: ignore[no-untyped-def]
        raise StationError("role 'laser' (X at 'ASRL1') failed to open: no reply")

    core = TestbedCore(small_config, station_factory=broken, data_dir=tmp_path / "data", runs_dir=tmp_path / "runs")
    ctl = Controller(core=core)
    w = MainWindow(ctl)
    qtbot.addWidget(w)
    steps: list[str] = []
    ctl.progress.connect(lambda task, _f, msg: steps.append(msg) if task == "station" else None)
    sp = w.station_panel
    try:
        sp.connect_btn.click()
        qtbot.waitUntil(lambda: bool(w.errors), timeout=10_000)
        qtbot.wait(250)  # the drains after the error
        assert w.errors[-1][0] == "Connect failed"
        assert "connecting" not in sp.state_label.text() and "connect failed" in sp.state_label.text()
        assert "failed to open" in sp.state_label.toolTip()
        assert sp.connect_btn.isEnabled() and not sp.disconnect_btn.isEnabled()
        assert WARM_UP_MESSAGE not in steps  # the instruments open first: a bad address is told at once
    finally:
        ctl.shutdown(5.0)


def test_a_simulated_station_connects_in_its_safe_state(core: TestbedCore, events) -> None:  # type: ignore[no-untyped-def]
    core.connect().result(60)
    st = core.station
    assert not st.laser.output_enabled
    assert not st.detector("D0").enabled and not st.detector("D1").enabled
    assert all(st.attenuator(c).shutter_closed for c in st.config.client_names)
    assert not any(st.phase_modulator(c).output_enabled for c in st.config.client_names)
    settings = events.kinds("settings")[-1]
    bias = next(r for r in settings["D0"] if r["name"] == "bias")
    assert st.config.detectors["D0"].kind == "snspd" and bias["unit"] == "µA"  # not "µA or V"
    # Start arms them (Live ▸ Start): the laser emits only then
    core.start_acquisition()
    events.wait(lambda: bool(events.kinds("rates")))
    assert st.laser.output_enabled and st.detector("D0").enabled
    core.stop_acquisition()
    events.wait(lambda: not core.busy("acquisition"))
    assert not st.laser.output_enabled
