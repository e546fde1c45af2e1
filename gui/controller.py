"""Qt adapter of :class:`labqfl.gui.core.TestbedCore`: commands in, queued signals out.

:class:`Controller` is a ``QObject`` (no widgets, no ``QtWidgets`` import). It owns the core —
the station and the worker threads for acquisition, distillation, calibration and training — and
drains the core's event queue on a ``QTimer`` every :data:`TICK_MS` ms, so the GUI is updated at
most ``1000 / TICK_MS`` times per second whatever the data volume: per tick it emits one batch of
count-rate points, the latest per-pair metrics, the latest key pools, and the new log records.
Worker threads never touch Qt objects; all signals are emitted on the controller's (GUI) thread
and reach widgets in other threads as queued connections.

Commands return at once; instrument I/O runs on the core's station thread, never on the caller's.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

from labqfl.gui.core import TASKS, TestbedCore, TrainingOptions
from PySide6.QtCore import QObject, QTimer, Signal, Slot

from labqfl.config import StationConfig
from labqfl.contracts.types import DEFAULT_ENGINE

#: Drain interval [ms]: the GUI gets at most 10 updates per second.
TICK_MS = 100
#: Log records forwarded per tick at most (the rest wait for the next tick).
MAX_LOG_PER_TICK = 500


class Controller(QObject):
    """The GUI's view of the testbed. See the module docstring.

    Signals (payloads are plain Python objects; units as in :mod:`labqfl.gui.core`):
    """

    connectedChanged = Signal(bool)
    stationInfo = Signal(object)          # {station, description, roles, pairs, detectors, distill_available, ...}
    settingsSnapshot = Signal(object)     # {role: [{name, unit, doc, writable, value}]}
    settingApplied = Signal(str, str, object)
    settingRejected = Signal(str, str, str)
    countRates = Signal(object)           # [(t_s, {D0: Hz, D1: Hz, sync: Hz}), ...] new points since last tick
    pairMetrics = Signal(object)          # {t_s, pairs: {pair: {qber_x, qber_y, key_rate_bps, ...}}}
    keyPools = Signal(object)             # {pair: {pool: bits}}
    keyProvenance = Signal(object)        # {pair: labqfl.provenance.store_pair_provenance(...)} of the stored blocks
    acquisitionStatus = Signal(object)    # {t_s, tags, blocks, wall_s}
    calibrationResult = Signal(object)
    trainingStarted = Signal(object)
    trainingRound = Signal(object)        # {metrics: {...}, clients: {...}, available_bits: {...}}
    trainingFinished = Signal(object)
    logRecords = Signal(object)           # [{time, level, levelno, name, source, message}, ...]
    errorOccurred = Signal(str, str)      # title, one-line message
    progress = Signal(str, float, str)    # task, fraction in [0, 1] or -1 (unknown), message
    busyChanged = Signal(str, bool)
    safeStateReached = Signal(object)     # {role: error} of roles that failed to go safe
    shutdownFinished = Signal()

    def __init__(self, config: StationConfig | None = None, *, core: TestbedCore | None = None,
                 base_dir: Path | None = None, data_dir: Path | None = None, runs_dir: Path | None = None,
                 parent: QObject | None = None, tick_ms: int = TICK_MS) -> None:
        super().__init__(parent)
        self.core = core if core is not None else TestbedCore(config, base_dir=base_dir, data_dir=data_dir,
                                                              runs_dir=runs_dir)
        self.busy: dict[str, bool] = dict.fromkeys(TASKS, False)
        self.connected = False
        self.station_info: dict[str, Any] = {}
        self.ticks = 0
        self._shutting_down = False
        self._shutdown_thread: threading.Thread | None = None
        self._timer = QTimer(self)
        self._timer.setInterval(tick_ms)
        self._timer.timeout.connect(self.drain)
        self._timer.start()

    @property
    def config(self) -> StationConfig:
        return self.core.config

    # -- commands (all non-blocking) ---------------------------------------------------------------
    @Slot()
    def connect_station(self) -> None:
        self.core.connect()

    @Slot()
    def disconnect_station(self) -> None:
        self.core.disconnect()

    @Slot(str, str, object)
    def set_setting(self, role: str, name: str, value: Any) -> None:
        self.core.set_setting(role, name, value)

    @Slot()
    def refresh_settings(self) -> None:
        self.core.refresh_settings()

    @Slot()
    def safe_state(self) -> None:
        self.core.safe_state()

    def start_acquisition(self, *, distill: dict[str, Any] | None = None, arm: bool = True) -> None:
        self.core.start_acquisition(distill=distill, arm=arm)

    @Slot()
    def stop_acquisition(self) -> None:
        self.core.stop_acquisition()

    def start_distillation(self, block_bits: int | None = None, engine: str = DEFAULT_ENGINE) -> None:
        self.core.start_distillation(block_bits, engine)

    @Slot()
    def stop_distillation(self) -> None:
        self.core.stop_distillation()

    def calibrations(self) -> tuple[list[Any], str]:
        return self.core.calibrations()

    def run_calibration(self, name: str, **kwargs: Any) -> None:
        self.core.run_calibration(name, **kwargs)

    @Slot()
    def cancel_calibration(self) -> None:
        self.core.cancel_calibration()

    def start_training(self, options: TrainingOptions | None = None) -> None:
        self.core.start_training(options)

    @Slot()
    def stop_training(self) -> None:
        self.core.stop_training()

    @Slot()
    def refresh_pools(self) -> None:
        self.core.refresh_pools()

    def shutdown_async(self) -> None:
        """Stop everything and make the instruments safe on a helper thread; emits
        :attr:`shutdownFinished` when done (the GUI thread keeps running meanwhile)."""
        if self._shutting_down:
            return
        self._shutting_down = True
        self._shutdown_thread = threading.Thread(target=self.core.shutdown, name="labqfl-shutdown", daemon=True)
        self._shutdown_thread.start()

    def shutdown(self, timeout_s: float = 30.0) -> dict[str, str]:
        """Blocking shutdown (tests, exit paths without an event loop), then a final drain."""
        self._shutting_down = True
        failed = self.core.shutdown(timeout_s)
        self.drain()
        self._timer.stop()
        return failed

    def live_threads(self, wait_s: float = 0.0) -> list[str]:
        """Names of the threads of this controller and its core still running after waiting up to
        ``wait_s`` seconds for them (see :meth:`TestbedCore.live_threads`); empty once the
        shutdown is complete."""
        deadline = time.monotonic() + wait_s
        th = self._shutdown_thread
        if th is not None and th is not threading.current_thread():
            th.join(wait_s)
        alive = [th.name] if th is not None and th.is_alive() else []
        return alive + self.core.live_threads(max(0.0, deadline - time.monotonic()))

    # -- event pump ---------------------------------------------------------------------------------
    @Slot()
    def drain(self) -> None:
        """Turn queued core events into signals, coalesced: one emission per kind per tick."""
        self.ticks += 1
        events = self.core.drain()
        if not events:
            return
        rates: list[tuple[float, dict[str, float]]] = []
        logs: list[dict[str, Any]] = []
        latest: dict[str, Any] = {}
        ordered: list[tuple[str, Any]] = []
        for ev in events:
            k, d = ev.kind, ev.data
            if k == "rates":
                rates.append((d["t_s"], d["rates_hz"]))
            elif k == "log":
                logs.append(d)
            elif k in ("pairs", "pools", "pool_provenance", "acq_status", "settings"):
                if k == "pairs" and d.get("final"):
                    ordered.append((k, d))  # a final snapshot is never coalesced away
                else:
                    latest[k] = d
            else:
                ordered.append((k, d))
        if len(logs) > MAX_LOG_PER_TICK:
            dropped = len(logs) - MAX_LOG_PER_TICK
            logs = logs[-MAX_LOG_PER_TICK:]
            logs.insert(0, {"time": logs[0]["time"], "level": "WARNING", "levelno": 30, "name": "labqfl.gui",
                            "source": "", "message": f"{dropped} log records skipped (more than {MAX_LOG_PER_TICK} in 0.1 s)"})
        if "settings" in latest:
            self.settingsSnapshot.emit(latest.pop("settings"))
        for k, d in ordered:
            self._emit(k, d)
        if rates:
            self.countRates.emit(rates)
        if "pairs" in latest:
            self.pairMetrics.emit(latest["pairs"])
        if "pools" in latest:
            self.keyPools.emit(latest["pools"])
        if "pool_provenance" in latest:
            self.keyProvenance.emit(latest["pool_provenance"])
        if "acq_status" in latest:
            self.acquisitionStatus.emit(latest["acq_status"])
        if logs:
            self.logRecords.emit(logs)

    def _emit(self, kind: str, d: Any) -> None:
        if kind == "connected":
            self.connected = True
            self.station_info = d
            self.stationInfo.emit(d)
            self.connectedChanged.emit(True)
        elif kind == "disconnected":
            self.connected = False
            self.connectedChanged.emit(False)
        elif kind == "setting_applied":
            self.settingApplied.emit(*d)
        elif kind == "setting_rejected":
            self.settingRejected.emit(*d)
        elif kind == "pairs":
            self.pairMetrics.emit(d)
        elif kind == "calibration_result":
            self.calibrationResult.emit(d)
        elif kind == "train_started":
            self.trainingStarted.emit(d)
        elif kind == "train_round":
            self.trainingRound.emit(d)
        elif kind == "train_finished":
            self.trainingFinished.emit(d)
        elif kind == "error":
            self.errorOccurred.emit(*d)
        elif kind == "progress":
            task, frac, msg = d
            self.progress.emit(task, -1.0 if frac is None else float(frac), msg)
        elif kind == "busy":
            task, b = d
            self.busy[task] = b
            self.busyChanged.emit(task, b)
        elif kind == "safe":
            self.safeStateReached.emit(d)
        elif kind == "shutdown":
            self._timer.stop()
            self.shutdownFinished.emit()


__all__ = ["Controller", "TICK_MS"]
