"""The GUI's logic without any Qt: the station, its worker threads, and an event queue.

:class:`TestbedCore` owns the :class:`~labqfl.station.Station` and every long-running job —
acquisition, distillation, calibration, federated training — each on its own worker thread.
Commands (``connect``, ``set_setting``, ``start_acquisition``, …) return at once; nothing they
start touches instruments on the caller's thread. Results come back as :class:`Event` s on
:attr:`TestbedCore.events` (a thread-safe queue); the Qt adapter
(:class:`labqfl.gui.controller.Controller`) drains that queue at a bounded rate and turns events
into queued signals. Tests drive this class directly, without a display.

This module is the plumbing: the event queue, the worker threads, busy states, shutdown. Each
task's work is a module of :mod:`labqfl.gui.workers` that the core delegates to: ``station``
(connect, settings, safe state), ``acquisition`` (streaming and live distillation),
``calibration``, ``training``.

Event kinds (``Event.kind`` → ``Event.data``):

``connected`` {station, description, roles: {role: {driver, simulated, kind}}, failures,
distill_available, distill_reason} · ``disconnected`` {} · ``settings`` {role: [setting rows]}
· ``setting_applied`` (role, name, value) · ``setting_rejected`` (role, name, message) ·
``rates`` {t_s, rates_hz: {D0, D1, sync}} (acquired time t_s [s], rates [Hz]) · ``pairs``
{t_s, pairs: {pair: metrics}, acquisition: ID of the acquisition being distilled, dropped: the
slotting's dropped-slot counters by cause} · ``pools`` {pair: {pool: bits}} · ``pool_provenance``
{pair: provenance of the blocks in Ci's store (:func:`labqfl.provenance.store_pair_provenance`)} · ``acq_status`` {t_s,
tags, wall_s, blocks, frames_lost: {client: frames it did not play}} · ``calibrations`` [procedure
descriptions] · ``calibration_result`` {...} ·
``train_started`` / ``train_round`` / ``train_finished`` {...} · ``log`` {time, level, name,
source, message} · ``error`` (title, message) · ``progress`` (task, fraction or None, message) ·
``busy`` (task, bool) · ``safe`` {role: error} (after a safe-state) · ``shutdown`` {}.

Units: times in seconds, rates in Hz or bit/s, key amounts in bits.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
import traceback
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from labqfl.gui.workers.acquisition import EMIT_INTERVAL_S, AcquisitionTask, key_pools, pair_metrics
from labqfl.gui.workers.calibration import CalibrationSpec, CalibrationTask, discover_calibrations
from labqfl.gui.workers.common import log, one_line
from labqfl.gui.workers.station import StationTask, format_value, parse_setting_value, setting_rows
from labqfl.gui.workers.training import TrainingOptions, TrainingTask

from labqfl.app.station import arm
from labqfl.config import StationConfig, load_station_config
from labqfl.contracts.types import DEFAULT_ENGINE
from labqfl.errors import LabqflError
from labqfl.log import ROOT, KeyMaterialFilter

#: Jobs whose busy state the core reports.
TASKS = ("station", "acquisition", "distillation", "calibration", "training")
#: Logger-name prefix of instrument loggers (see :func:`labqfl.log.instrument_logger`).
INSTRUMENT_PREFIX = f"{ROOT}.instr."
#: Every role in its operating state for acquisition (the application layer's recipe, shared with ``labqfl run``).
arm_station = arm


@dataclass(frozen=True)
class Event:
    """One message from a worker thread to the GUI."""

    kind: str
    data: Any = None


class _LogHandler(logging.Handler):
    """Copies ``labqfl.*`` log records into the core's event queue (key material filtered)."""

    def __init__(self, core: TestbedCore) -> None:
        super().__init__(logging.DEBUG)
        self.core = core
        self.addFilter(KeyMaterialFilter())

    def emit(self, record: logging.LogRecord) -> None:
        try:
            msg = record.getMessage()
        except Exception:  # a bad format string must not break logging
            msg = str(record.msg)
        name = record.name
        source = name[len(INSTRUMENT_PREFIX):] if name.startswith(INSTRUMENT_PREFIX) else ""
        self.core.post("log", {"time": record.created, "level": record.levelname, "levelno": record.levelno,
                               "name": name, "source": source, "message": msg})


class TestbedCore:
    """Station + worker threads + event queue (see the module docstring).

    ``config``: the station (default: the embedded simulated station); ``base_dir``: folder of
    the station file (for relative pyvisa-sim paths); ``data_dir``: key-store folder (default: the
    key store's own default); ``runs_dir``: where calibration and training run folders go.
    ``station_factory(config, base_dir)`` builds the station (tests inject failing stations).
    """

    __test__ = False  # not a pytest test class despite the name

    def __init__(self, config: StationConfig | None = None, *, base_dir: Path | None = None,
                 data_dir: Path | None = None, runs_dir: Path | None = None,
                 station_factory: Callable[[StationConfig, Path | None], Any] | None = None,
                 log_level: int = logging.INFO) -> None:
        self.config = config if config is not None else load_station_config()
        self.base_dir = base_dir
        self.data_dir = data_dir
        self.runs_dir = runs_dir
        self.events: queue.Queue[Event] = queue.Queue()
        self.station: Any = None
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="labqfl-station")
        self._busy: dict[str, bool] = dict.fromkeys(TASKS, False)
        self._lock = threading.RLock()
        #: every worker thread this core started (see :meth:`live_threads`)
        self._threads: list[threading.Thread] = []
        self._closed = False
        self._station_task = StationTask(self, station_factory)
        self._acquisition_task = AcquisitionTask(self)
        self._calibration_task = CalibrationTask(self)
        self._training_task = TrainingTask(self)
        self._handler = _LogHandler(self)
        root = logging.getLogger(ROOT)
        root.addHandler(self._handler)
        if root.level == logging.NOTSET or root.level > log_level:
            root.setLevel(log_level)
        self._handler.setLevel(log_level)

    # -- events ---------------------------------------------------------------------------------
    def post(self, kind: str, data: Any = None) -> None:
        self.events.put(Event(kind, data))

    def drain(self, max_events: int | None = None) -> list[Event]:
        """All queued events (at most ``max_events``), oldest first, without blocking."""
        out: list[Event] = []
        while max_events is None or len(out) < max_events:
            try:
                out.append(self.events.get_nowait())
            except queue.Empty:
                break
        return out

    def _error(self, title: str, exc: BaseException | str) -> None:
        msg = exc if isinstance(exc, str) else one_line(exc)
        log.error("%s: %s", title, msg)
        if not isinstance(exc, str | LabqflError | ValueError):
            log.debug("%s", "".join(traceback.format_exception(exc)))
        self.post("error", (title, msg))

    def _set_busy(self, task: str, busy: bool) -> None:
        with self._lock:
            if self._busy.get(task) == busy:
                return
            self._busy[task] = busy
        self.post("busy", (task, busy))

    def busy(self, task: str) -> bool:
        return self._busy.get(task, False)

    def _thread(self, target: Callable[..., None], args: tuple[Any, ...], name: str) -> threading.Thread:
        """A worker thread (not started), remembered for :meth:`live_threads`. Daemon, so that a
        worker stuck in instrument I/O cannot keep the process alive; :meth:`shutdown` joins them."""
        th = threading.Thread(target=target, args=args, name=name, daemon=True)
        with self._lock:
            self._threads = [t for t in self._threads if t.is_alive()] + [th]
        return th

    def live_threads(self, wait_s: float = 0.0) -> list[str]:
        """Names of the worker threads of this core that are still running — acquisition,
        distillation, calibration, training and the station thread — after waiting up to
        ``wait_s`` seconds in all for them to end. Empty after a complete :meth:`shutdown`."""
        deadline = time.monotonic() + wait_s
        with self._lock:
            threads = list(self._threads)
        threads += list(getattr(self._executor, "_threads", ()))  # the station thread (if it ever ran)
        for th in threads:
            if th.is_alive() and th is not threading.current_thread():
                th.join(max(0.0, deadline - time.monotonic()))
        return [th.name for th in threads if th.is_alive()]

    @property
    def connected(self) -> bool:
        return self.station is not None

    def _submit(self, fn: Callable[[], Any], title: str) -> Future[Any]:
        """Run ``fn`` on the station thread; errors become ``error`` events."""
        def job() -> Any:
            try:
                return fn()
            except Exception as exc:
                self._error(title, exc)
                return None
        if self._closed:
            f: Future[Any] = Future()
            f.set_result(None)
            return f
        return self._executor.submit(job)

    # -- station (labqfl.gui.workers.station) ---------------------------------------------------------
    def connect(self) -> Future[Any]:
        """Open the station (on the station thread); posts ``connected`` and ``settings``."""
        return self._station_task.connect()

    def disconnect(self) -> Future[Any]:
        """Stop acquisition, put every instrument in its safe state and close the station."""
        return self._station_task.disconnect()

    def refresh_settings(self) -> Future[Any]:
        return self._station_task.refresh_settings()

    def set_setting(self, role: str, name: str, value: Any) -> Future[Any]:
        """Write one setting (text is parsed like the current value). Posts ``setting_applied``
        with the value read back, or ``setting_rejected`` with the instrument's message."""
        return self._station_task.set_setting(role, name, value)

    def safe_state(self) -> Future[Any]:
        """Stop acquisition and put every instrument in its safe state (station stays open)."""
        return self._station_task.safe_state()

    # -- acquisition + distillation (labqfl.gui.workers.acquisition) ---------------------------------
    def distill_available(self) -> tuple[bool, str]:
        """Whether live distillation is possible on this station, and why not."""
        return self._acquisition_task.distill_available()

    def start_acquisition(self, *, distill: dict[str, Any] | None = None, arm: bool = True,
                          block_s: float | None = None) -> None:
        """Stream tags until :meth:`stop_acquisition`. ``distill`` (``{"block_bits", "engine"}``)
        also runs the post-processing pipeline on the stream; ``arm`` switches the instruments to
        their operating state first (:func:`arm_station`)."""
        self._acquisition_task.start_acquisition(distill=distill, arm=arm, block_s=block_s)

    def stop_acquisition(self) -> None:
        """Stop streaming at the next tag block; instruments go to safe state at once (a running
        distillation still distils the data already acquired, then ends)."""
        self._acquisition_task.stop_acquisition()

    def start_distillation(self, block_bits: int | None = None, engine: str = DEFAULT_ENGINE) -> None:
        """Attach the pipeline to the stream (restarts the acquisition so slots count from 0).
        ``block_bits`` None or 0: the block-size rule (:mod:`labqfl.qkd.blocksize`)."""
        self._acquisition_task.start_distillation(block_bits, engine)

    def stop_distillation(self) -> None:
        """Detach the pipeline and stop it at the end of the stage in progress: a key block being
        distilled is abandoned at both ends (nothing of it stored), the rest of the data is not
        distilled; the acquisition goes on."""
        self._acquisition_task.stop_distillation()

    def refresh_pools(self) -> Future[Any]:
        return self._acquisition_task.refresh_pools()

    # -- calibration (labqfl.gui.workers.calibration) ------------------------------------------------
    def calibrations(self) -> tuple[list[CalibrationSpec], str]:
        return self._calibration_task.calibrations()

    def run_calibration(self, name: str, **kwargs: Any) -> None:
        """Run one calibration procedure on its own thread (acquisition must be stopped)."""
        self._calibration_task.run_calibration(name, **kwargs)

    def cancel_calibration(self) -> None:
        """Stop the running calibration at its next step (settings restored, safe state)."""
        self._calibration_task.cancel_calibration()

    # -- training (labqfl.gui.workers.training) ------------------------------------------------------
    def start_training(self, options: TrainingOptions | None = None) -> None:
        """Run federated training (:func:`labqfl.fl.training.run_federated`) on its own thread."""
        self._training_task.start_training(options)

    def stop_training(self) -> None:
        """Stop training after the current round."""
        self._training_task.stop_training()

    # -- shutdown ----------------------------------------------------------------------------------
    @staticmethod
    def _join(th: threading.Thread | None, timeout: float) -> bool:
        if th is None or th is threading.current_thread():
            return True
        th.join(timeout)
        return not th.is_alive()

    def shutdown(self, timeout_s: float = 30.0) -> dict[str, str]:
        """Stop every job, put instruments in their safe state and close the station (blocking;
        call it from a non-UI thread or at exit). Returns safe-state failures by role."""
        if self._closed:
            return {}
        self._closed = True
        self._acquisition_task.stop_all()
        self.cancel_calibration()
        self.stop_training()
        deadline = time.monotonic() + timeout_s
        acq_th, distill_th = self._acquisition_task.threads()
        for th in (acq_th, self._calibration_task.thread):
            self._join(th, max(0.1, deadline - time.monotonic()))
        failed: dict[str, str] = {}
        st, self.station = self.station, None
        if st is not None:
            try:
                failed = st.safe_state()
                self.post("safe", failed)
            finally:
                st.close()
            log.info("station %s: instruments in safe state and closed", self.config.name)
            self.post("disconnected", {})
        # the instruments are safe first; the distillation stops at the end of the stage in
        # progress (stop_all): a key block being distilled is abandoned at both ends, nothing of
        # it stored (one past privacy amplification is stored at both ends first)
        if distill_th is not None and distill_th.is_alive():
            self.post("progress", ("distillation", None, "closing: instruments in safe state; stopping the "
                                   "distillation at the end of its current stage (the key block in progress is "
                                   "abandoned, nothing of it stored)…"))
            self._join(distill_th, max(0.1, deadline - time.monotonic()))
        # training stops at the end of its current round; it may be taking keys from the stores
        self._join(self._training_task.thread, max(0.1, deadline - time.monotonic()))
        self._executor.shutdown(wait=False, cancel_futures=True)
        for th in list(getattr(self._executor, "_threads", ())):
            self._join(th, max(0.1, deadline - time.monotonic()))
        logging.getLogger(ROOT).removeHandler(self._handler)
        self.post("shutdown", {"safe_failures": failed})
        return failed


__all__ = ["EMIT_INTERVAL_S", "TASKS", "Event", "TestbedCore", "TrainingOptions", "CalibrationSpec", "arm_station",
           "discover_calibrations", "format_value", "key_pools", "one_line", "pair_metrics", "parse_setting_value",
           "setting_rows"]
