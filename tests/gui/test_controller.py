"""The Qt adapter without widgets: signals, bounded update rate, a responsive event loop."""

from __future__ import annotations

import time
from typing import Any

import pytest
from labqfl.gui.controller import TICK_MS, Controller
from PySide6.QtCore import QTimer


@pytest.fixture
def ctl(qtbot, small_config, tmp_path):  # type: ignore[no-untyped-def]
    c = Controller(small_config, data_dir=tmp_path / "data", runs_dir=tmp_path / "runs")
    yield c
    c.shutdown(20.0)


def _connect(qtbot, ctl: Controller) -> None:  # type: ignore[no-untyped-def]
    with qtbot.waitSignal(ctl.connectedChanged, timeout=60_000) as blocker:
        ctl.connect_station()
    assert blocker.args == [True]


def test_connect_emits_station_info_and_settings(qtbot, ctl: Controller) -> None:  # type: ignore[no-untyped-def]
    snaps: list[Any] = []
    ctl.settingsSnapshot.connect(snaps.append)
    _connect(qtbot, ctl)
    qtbot.waitUntil(lambda: bool(snaps), timeout=10_000)
    assert ctl.connected and ctl.station_info["pairs"] == ["C1-C2"]
    assert set(snaps[-1]) == set(ctl.config.roles())


def test_setting_signals(qtbot, ctl: Controller) -> None:  # type: ignore[no-untyped-def]
    _connect(qtbot, ctl)
    with qtbot.waitSignal(ctl.settingRejected, timeout=10_000) as rej:
        ctl.set_setting("laser", "rep_rate_hz", "-5")
    assert rej.args[:2] == ["laser", "rep_rate_hz"] and "rep_rate_hz" in rej.args[2]
    with qtbot.waitSignal(ctl.settingApplied, timeout=10_000) as ok:
        ctl.set_setting("D1", "enabled", False)
    assert ok.args == ["D1", "enabled", False]


def test_plots_update_at_a_bounded_rate_and_the_loop_stays_responsive(qtbot, ctl: Controller, assert_loop_responsive) -> None:  # type: ignore[no-untyped-def]
    _connect(qtbot, ctl)
    emissions: list[float] = []
    points: list[int] = []
    ctl.countRates.connect(lambda pts: (emissions.append(time.monotonic()), points.append(len(pts))))
    ctl.pairMetrics.connect(lambda _p: emissions.append(time.monotonic()))
    ticks: list[float] = []
    probe = QTimer()
    probe.setInterval(10)
    probe.timeout.connect(lambda: ticks.append(time.monotonic()))
    probe.start()
    ctl.start_distillation(block_bits=2000)
    qtbot.waitUntil(lambda: len(points) > 0, timeout=60_000)  # data flowing (slow on a loaded machine)
    t0 = time.monotonic()
    p0, e0 = len(points), len(emissions)
    qtbot.wait(2500)
    elapsed = time.monotonic() - t0
    n_rate, n_emit = len(points) - p0, len(emissions) - e0  # emissions within the measured window only
    probe.stop()
    ctl.stop_acquisition()
    qtbot.waitUntil(lambda: not ctl.busy["acquisition"] and not ctl.busy["distillation"], timeout=60_000)
    # the GUI thread kept serving timers while acquisition + distillation ran
    assert len(ticks) > 0.1 * elapsed / 0.010
    assert_loop_responsive(ticks, elapsed)
    # at most one count-rate and one pair-metrics emission per controller tick
    assert n_rate <= elapsed / (TICK_MS / 1000) + 2
    assert n_emit <= 2 * (elapsed / (TICK_MS / 1000) + 2)


def test_worker_error_becomes_error_signal(qtbot, ctl: Controller) -> None:  # type: ignore[no-untyped-def]
    with qtbot.waitSignal(ctl.errorOccurred, timeout=10_000) as err:
        ctl.start_acquisition()  # not connected
    assert err.args[0] == "Cannot start acquisition" and "Connect" in err.args[1]


def test_calibration_without_station_is_refused_with_a_reason(qtbot, ctl: Controller) -> None:  # type: ignore[no-untyped-def]
    specs, why = ctl.calibrations()
    name = specs[0].name if specs else "anything"
    with qtbot.waitSignal(ctl.errorOccurred, timeout=10_000) as err:
        ctl.run_calibration(name)
    assert err.args[0] == "Cannot calibrate"
    assert ("Connect" in err.args[1]) if specs else (why in err.args[1] or name in err.args[1])


def test_log_records_carry_their_instrument(qtbot, ctl: Controller) -> None:  # type: ignore[no-untyped-def]
    recs: list[dict[str, Any]] = []
    ctl.logRecords.connect(recs.extend)
    _connect(qtbot, ctl)
    ctl.core.station.laser.log.warning("test message from the laser")
    qtbot.waitUntil(lambda: any(r["source"] == "laser" and "test message" in r["message"] for r in recs), timeout=5000)
