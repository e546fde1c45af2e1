"""The GUI's logic without any Qt: the station, its worker threads, and an event queue.

:class:`TestbedCore` owns the :class:`~labqfl.station.Station` and every long-running job —
acquisition, distillation, calibration, federated training — each on its own worker thread.
Commands (``connect``, ``set_setting``, ``start_acquisition``, …) return at once; nothing they
start touches instruments on the caller's thread. Results come back as :class:`Event` s on
:attr:`TestbedCore.events` (a thread-safe queue); the Qt adapter
(:class:`labqfl.gui.controller.Controller`) drains that queue at a bounded rate and turns events
into queued signals. Tests drive this class directly, without a display.

Event kinds (``Event.kind`` → ``Event.data``):

``connected`` {station, description, roles: {role: {driver, simulated, kind}}, failures,
distill_available, distill_reason} · ``disconnected`` {} · ``settings`` {role: [setting rows]}
· ``setting_applied`` (role, name, value) · ``setting_rejected`` (role, name, message) ·
``rates`` {t_s, rates_hz: {D0, D1, sync}} (acquired time t_s [s], rates [Hz]) · ``pairs``
{t_s, pairs: {pair: metrics}, acquisition: ID of the acquisition being distilled} · ``pools``
{pair: {pool: bits}} · ``acq_status`` {t_s, tags, wall_s, blocks} · ``calibrations`` [procedure
descriptions] · ``calibration_result`` {...} ·
``train_started`` / ``train_round`` / ``train_finished`` {...} · ``log`` {time, level, name,
source, message} · ``error`` (title, message) · ``progress`` (task, fraction or None, message) ·
``busy`` (task, bool) · ``safe`` {role: error} (after a safe-state) · ``shutdown`` {}.

Units: times in seconds, rates in Hz or bit/s, key amounts in bits.
"""

from __future__ import annotations

import ast
import logging
import math
import queue
import threading
import time
import traceback
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from labqfl.app.station import arm
from labqfl.config import StationConfig, load_station_config
from labqfl.errors import LabqflError
from labqfl.instruments.base import Instrument
from labqfl.log import ROOT, KeyMaterialFilter, get_logger

log = get_logger("labqfl.gui")

#: Jobs whose busy state the core reports.
TASKS = ("station", "acquisition", "distillation", "calibration", "training")
#: Logger-name prefix of instrument loggers (see :func:`labqfl.log.instrument_logger`).
INSTRUMENT_PREFIX = f"{ROOT}.instr."
#: Wall time between two count-rate / pair-metrics events from the acquisition thread [s].
EMIT_INTERVAL_S = 0.1


@dataclass(frozen=True)
class Event:
    """One message from a worker thread to the GUI."""

    kind: str
    data: Any = None


class _Cancelled(Exception):
    """Raised inside a worker (from a progress callback) to stop it at a safe point."""


def one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text and not isinstance(exc, LabqflError) else (text[0] if text else type(exc).__name__)


# -- settings ----------------------------------------------------------------------------------
def setting_rows(inst: Instrument) -> list[dict[str, Any]]:
    """Every declared setting of ``inst``: name, unit, doc, writable, value (or error)."""
    rows: list[dict[str, Any]] = []
    for s in inst.SETTINGS:
        row: dict[str, Any] = {"name": s.name, "unit": s.unit, "doc": s.doc, "writable": s.writable}
        try:
            v = inst.get_setting(s.name)
            if isinstance(v, np.ndarray):
                v = v.tolist()
            elif isinstance(v, np.generic):
                v = v.item()
            row["value"] = v
        except Exception as exc:  # an unreadable setting is shown, not fatal
            row["value"] = None
            row["error"] = one_line(exc)
        rows.append(row)
    return rows


def format_value(value: Any) -> str:
    """Text shown for a setting value (floats with 6 significant digits)."""
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, float):
        return f"{value:.6g}"
    if value is None:
        return "—"
    return str(value)


def parse_setting_value(text: Any, current: Any) -> Any:
    """Turn user input into a value of the same kind as ``current``.

    bool: on/off, true/false, 1/0, yes/no; int/float: a number (ints must be whole); list/dict: a
    Python literal such as ``[2, 3]`` or ``{2: 0.5}``. Raises ``ValueError`` with one line saying
    what was expected. Range checks are the instrument's (its setter raises ``ValueError``).
    """
    if not isinstance(text, str):
        if isinstance(current, bool) and not isinstance(text, bool):
            raise ValueError(f"expected on/off, got {text!r}")
        return text
    t = text.strip()
    if isinstance(current, bool):
        low = t.lower()
        if low in ("on", "true", "1", "yes"):
            return True
        if low in ("off", "false", "0", "no"):
            return False
        raise ValueError(f"expected on/off, got {t!r}")
    if isinstance(current, int):
        try:
            f = float(t)
        except ValueError:
            raise ValueError(f"expected a whole number, got {t!r}") from None
        if not f.is_integer():
            raise ValueError(f"expected a whole number, got {t!r}")
        return int(f)
    if isinstance(current, float) or current is None:
        try:
            f = float(t)
        except ValueError:
            raise ValueError(f"expected a number, got {t!r}") from None
        if not math.isfinite(f):
            raise ValueError(f"expected a finite number, got {t!r}")
        return f
    if isinstance(current, list | dict | tuple):
        try:
            v = ast.literal_eval(t)
        except (ValueError, SyntaxError):
            kind = "a list like [1, 2]" if isinstance(current, list | tuple) else "a mapping like {2: 0.5}"
            raise ValueError(f"expected {kind}, got {t!r}") from None
        if type(v) is not type(current) and not (isinstance(current, tuple) and isinstance(v, list)):
            raise ValueError(f"expected a {type(current).__name__}, got a {type(v).__name__}")
        return v
    return t


#: Every role in its operating state for acquisition (the application layer's recipe, shared with ``labqfl run``).
arm_station = arm


# -- distillation metrics -------------------------------------------------------------------------
def pair_metrics(distiller: Any, t_s: float) -> dict[str, dict[str, Any]]:
    """Live per-pair numbers of a running :class:`~labqfl.qkd.pipeline.Distiller` (no key bits).

    ``qber_x``: error rate of the last reconciled key block (X basis, exact after error
    correction); ``qber_y``: Y-basis test error rate so far (public test data, updated every tag
    block); ``key_rate_bps``: final (secret) key bits so far / acquired time ``t_s``;
    ``block_fill``: sifted bits waiting for the next block / block size; ``first_key_eta_s``:
    seconds of data until the pair's next block closes (blocks are a fixed number of the pair's
    slots; 0 once the pair has key).
    """
    block_bits = distiller.settings.block_bits
    out: dict[str, dict[str, Any]] = {}
    for name, st in distiller.pairs.items():
        r = st.result
        tc, te = r.test_clicks, r.test_errors_x2
        last = r.blocks[-1] if r.blocks else None
        out[name] = {
            "sifted_bits": int(r.sifted_bits),
            "pending_bits": int(st.n_bits),
            "block_fill": min(1.0, st.n_bits / block_bits) if block_bits else 0.0,
            "qber_x": float(last.qber_key) if last is not None else None,
            "qber_y": te.get("Y", 0) / 2 / tc["Y"] if tc.get("Y") else None,
            "blocks": len(r.blocks),
            "aborted_blocks": sum(b.abort for b in r.blocks),
            "last_abort": last.abort_reason if last is not None and last.abort else "",
            "final_key_bits": int(r.final_key_bits),
            "delivered_bits": int(r.delivered_bits),
            "key_rate_bps": r.final_key_bits / t_s if t_s > 0 else 0.0,
            "first_key_eta_s": 0.0 if r.final_key_bits > 0 else max(
                (st.block_index + 1) * distiller.block_slots[name] * len(distiller.pairs)
                / distiller.cfg.laser.rep_rate_hz - t_s, 0.0),
        }
    return out


def key_pools(config: StationConfig, data_dir: Path | None) -> dict[str, dict[str, int]]:
    """Free key bits per pair and pool from the key stores under ``data_dir`` (pair "Ci-Cj" read
    from Ci's store; stores that do not exist yet count as empty and are not created)."""
    from labqfl.keystore import KeyStore, list_node_stores, node_store_path

    have = set(list_node_stores(data_dir))
    out: dict[str, dict[str, int]] = {f"{a}-{b}": {} for a, b in config.pairs()}
    for a in config.client_names:
        if a not in have:
            continue
        store = KeyStore(node_store_path(a, data_dir), node=a, create=False)
        try:
            acc = store.accounting()
        finally:
            store.close()
        for pair, entry in acc.items():
            if pair.split("-")[0] == a and pair in out:
                out[pair] = {k: int(v) for k, v in entry.get("available", {}).items()}
    return out


# -- calibrations ------------------------------------------------------------------------------
@dataclass(frozen=True)
class CalibrationSpec:
    """A calibration group the GUI can launch (``labqfl calibrate GROUP``)."""

    name: str
    title: str
    description: str


#: Titles and one-line descriptions of the groups of :func:`labqfl.calibration.calibrate`.
CALIBRATION_TEXT = {
    "detector": ("Detectors", "Dead time and afterpulsing, dark counts versus bias, gate delay, timing jitter and "
                 "detection efficiency of D0 and D1 (laser off / attenuated light; power meter as reference)."),
    "delays": ("Channel delays", "Delay of each detector channel after the laser sync, from the folded click-time "
               "histogram (coarse search, then a Gaussian peak fit)."),
    "vpi": ("Phase modulators Vπ", "Half-wave voltage Vπ and bias phase of every client's phase modulator from a "
            "fringe scan (DC voltage sweep against a reference client)."),
    "visibility": ("Loop visibility", "Interference visibility of a pair of clients from a phase scan."),
    "all": ("All", "Detectors, channel delays, phase modulators and visibility, in that order."),
}


def discover_calibrations() -> tuple[list[CalibrationSpec], str]:
    """Calibration groups of :mod:`labqfl.calibration`, or ``([], reason)`` when unavailable."""
    try:
        from labqfl.app.calibrate import groups

        names = groups()
    except Exception as exc:  # pragma: no cover - depends on the installation
        return [], f"labqfl.calibration is not available: {one_line(exc)}"
    specs = []
    for g in names:
        title, desc = CALIBRATION_TEXT.get(g, (g, ""))
        specs.append(CalibrationSpec(g, title, desc))
    return specs, ""


# -- training ----------------------------------------------------------------------------------
@dataclass
class TrainingOptions:
    """Federated-training job (same meaning as the options of ``labqfl train``)."""

    task: str = "mnist-qnn"
    clients: int = 4
    rounds: int = 10
    q: int = 8
    keys: str = "csprng"
    seed: int = 0
    graph: str = "all"
    k: int = 0
    samples_per_client: int = 100
    test_size: int = 400

    def settings(self, keystore_dir: Path | None = None) -> Any:
        """The application layer's :class:`~labqfl.app.training.TrainingSettings` for these options
        (task defaults for local training and clip; keys from the stores under ``keystore_dir``)."""
        from labqfl.app.training import TrainingSettings

        return TrainingSettings(task=self.task, clients=self.clients, rounds=self.rounds, q=self.q, keys=self.keys,
                                seed=self.seed, graph=self.graph, k=self.k, samples_per_client=self.samples_per_client,
                                test_size=self.test_size, keystore_dir=keystore_dir, preflight=False)


class _QueueFeed:
    """The tag blocks the acquisition thread queues for the distillation thread, as an iterator
    that ends at the acquisition segment's :class:`END` (its length, and whether to discard the
    partial data instead of finishing). The queue is bounded: a lagging pipeline slows the
    acquisition thread (back-pressure) and :meth:`drain` keeps it from blocking on a dead one."""

    @dataclass(frozen=True)
    class END:
        t_s: float
        discard: bool

    def __init__(self, q: queue.Queue[Any]) -> None:
        self.q = q
        self.end: _QueueFeed.END | None = None

    def __iter__(self) -> _QueueFeed:
        return self

    def __next__(self) -> Any:
        if self.end is not None:
            raise StopIteration
        item = self.q.get()
        if isinstance(item, _QueueFeed.END):
            self.end = item
            raise StopIteration
        return item

    @property
    def discard(self) -> bool:
        return self.end is not None and self.end.discard

    @property
    def end_t_s(self) -> float:
        return self.end.t_s if self.end is not None else 0.0

    def drain(self) -> None:
        """Take (and drop) every block up to the segment's end."""
        for _ in self:
            pass


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
        self._factory = station_factory or _default_station
        self.events: queue.Queue[Event] = queue.Queue()
        self.station: Any = None
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="labqfl-station")
        self._busy: dict[str, bool] = dict.fromkeys(TASKS, False)
        self._lock = threading.RLock()
        self._acq_thread: threading.Thread | None = None
        self._acq_stop = threading.Event()
        self._distill_request: dict[str, Any] | None = None
        self._distill_stop = threading.Event()
        self._distill_thread: threading.Thread | None = None
        self._distill_queue: queue.Queue[Any] | None = None
        self._cal_thread: threading.Thread | None = None
        self._cal_cancel = threading.Event()
        self._train_thread: threading.Thread | None = None
        self._train_stop = threading.Event()
        #: every worker thread this core started (see :meth:`live_threads`)
        self._threads: list[threading.Thread] = []
        self._closed = False
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

    # -- station ----------------------------------------------------------------------------------
    def connect(self) -> Future[Any]:
        """Open the station (on the station thread); posts ``connected`` and ``settings``."""
        def job() -> None:
            if self.station is not None:
                return
            self._set_busy("station", True)
            self.post("progress", ("station", None, f"opening station {self.config.name!r}…"))
            try:
                st = self._factory(self.config, self.base_dir)
            finally:
                self._set_busy("station", False)
            self.station = st
            roles = {}
            for role, ic in self.config.roles().items():
                inst = st.instruments.get(role)
                roles[role] = {"driver": ic.driver, "simulated": ic.simulated,
                               "kind": type(inst).__name__ if inst is not None else None,
                               "error": st.failures.get(role) if hasattr(st, "failures") else None}
            ok, why = self.distill_available()
            log.info("station %s connected: %d roles", self.config.name, len(st.instruments))
            self.post("connected", {"station": self.config.name, "description": self.config.description,
                                    "roles": roles, "failures": dict(getattr(st, "failures", {})),
                                    "distill_available": ok, "distill_reason": why,
                                    "pairs": [f"{a}-{b}" for a, b in self.config.pairs()],
                                    "detectors": list(self.config.detectors)})
            self.post("settings", self._settings())
            self.post("progress", ("station", 1.0, "station connected"))
            self._post_pools()
        return self._submit(job, "Connect failed")

    def disconnect(self) -> Future[Any]:
        """Stop acquisition, put every instrument in its safe state and close the station."""
        self.stop_acquisition()
        self._cal_cancel.set()

        def job() -> None:
            self._join(self._acq_thread, 30.0)
            self._join(self._distill_thread, 30.0)
            self._join(self._cal_thread, 30.0)
            self._close_station()
        return self._submit(job, "Disconnect failed")

    def _close_station(self) -> None:
        st, self.station = self.station, None
        if st is None:
            return
        failed = st.safe_state()
        self.post("safe", failed)
        st.close()
        log.info("station %s: instruments in safe state and closed", self.config.name)
        self.post("disconnected", {})

    def _settings(self) -> dict[str, list[dict[str, Any]]]:
        st = self.station
        if st is None:
            return {}
        return {role: setting_rows(inst) for role, inst in st.instruments.items()}

    def refresh_settings(self) -> Future[Any]:
        def job() -> None:
            if self.station is not None:
                self.post("settings", self._settings())
        return self._submit(job, "Reading settings failed")

    def set_setting(self, role: str, name: str, value: Any) -> Future[Any]:
        """Write one setting (text is parsed like the current value). Posts ``setting_applied``
        with the value read back, or ``setting_rejected`` with the instrument's message."""
        def job() -> None:
            st = self.station
            if st is None:
                self.post("setting_rejected", (role, name, "not connected"))
                return
            try:
                inst = st[role]
                spec = next((s for s in inst.SETTINGS if s.name == name), None)
                if spec is None:
                    raise ValueError(f"{role} has no setting {name!r}")
                if not spec.writable:
                    raise ValueError(f"{role}.{name} is read-only")
                current = inst.get_setting(name)
                new = parse_setting_value(value, current)
                setattr(inst, name, new)
                back = inst.get_setting(name)
            except (ValueError, TypeError, LabqflError) as exc:
                msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                log.warning("setting %s.%s rejected: %s", role, name, msg)
                self.post("setting_rejected", (role, name, msg))
                return
            if isinstance(back, np.generic):
                back = back.item()
            log.info("setting %s.%s = %s", role, name, format_value(back))
            self.post("setting_applied", (role, name, back))
        return self._submit(job, f"Setting {role}.{name} failed")

    def safe_state(self) -> Future[Any]:
        """Stop acquisition and put every instrument in its safe state (station stays open)."""
        self.stop_acquisition()

        def job() -> None:
            self._join(self._acq_thread, 30.0)
            if self.station is not None:
                failed = self.station.safe_state()
                self.post("safe", failed)
                log.info("station %s: safe state", self.config.name)
                self.post("settings", self._settings())
        return self._submit(job, "Safe state failed")

    # -- acquisition + distillation ------------------------------------------------------------
    def distill_available(self) -> tuple[bool, str]:
        """Live distillation needs the clients' modulation logs, which only the simulated time
        tagger provides during a live run (real runs: record, then ``labqfl distill``)."""
        if not self.config.all_simulated:
            return False, ("live distillation needs the clients' modulation logs, available live only on the "
                           "simulated station; record real runs and distil them with `labqfl distill`")
        return True, ""

    def start_acquisition(self, *, distill: dict[str, Any] | None = None, arm: bool = True,
                          block_s: float | None = None) -> None:
        """Stream tags until :meth:`stop_acquisition`. ``distill`` (``{"block_bits", "engine"}``)
        also runs the post-processing pipeline on the stream; ``arm`` switches the instruments to
        their operating state first (:func:`arm_station`)."""
        with self._lock:
            if self.station is None:
                self._error("Cannot start acquisition", "the station is not connected; press Connect first")
                return
            if self.busy("calibration"):
                self._error("Cannot start acquisition", "a calibration is running; wait for it to finish")
                return
            if self._acq_thread is not None and self._acq_thread.is_alive():
                if distill is not None:
                    self.start_distillation(**distill)
                return
            if distill is not None:
                ok, why = self.distill_available()
                if not ok:
                    self._error("Cannot distil", why)
                    distill = None
            self._acq_stop.clear()
            self._distill_request = distill
            self._acq_thread = self._thread(self._acquire, (arm, block_s), "labqfl-acquisition")
            self._set_busy("acquisition", True)
            self._acq_thread.start()

    def stop_acquisition(self) -> None:
        """Stop streaming (and distillation) at the next block; instruments go to safe state."""
        self._acq_stop.set()

    def start_distillation(self, block_bits: int | None = None, engine: str = "cascade") -> None:
        """Attach the pipeline to the stream (restarts the acquisition so slots count from 0).
        ``block_bits`` None or 0: the block-size rule (:mod:`labqfl.qkd.blocksize`)."""
        ok, why = self.distill_available()
        if not ok:
            self._error("Cannot distil", why)
            return
        req = {"block_bits": int(block_bits) if block_bits else None, "engine": engine}
        with self._lock:
            running = self._acq_thread is not None and self._acq_thread.is_alive()
            if not running:
                self.start_acquisition(distill=req)
                return
            self._distill_request = req
            self._distill_stop.clear()

    def stop_distillation(self) -> None:
        """Detach the pipeline; the partial block is processed if large enough (``finish``)."""
        with self._lock:
            self._distill_request = None
            self._distill_stop.set()

    def _acquire(self, arm: bool, block_s: float | None) -> None:
        """The acquisition thread: the application layer's :class:`~labqfl.app.acquire.Acquisition`
        (every role armed, tags streamed and counted, safe state at the end), in segments that
        restart when a distillation is attached or detached."""
        from labqfl.app.acquire import Acquisition

        acq: Acquisition | None = None
        wall0 = time.perf_counter()
        try:
            acq = Acquisition(self.station, block_s=block_s, arm=arm)
            if arm:
                acq.arm()
                self.post("settings", self._settings())
            log.info("acquisition started (blocks of %g s)", acq.block_s)
            while not self._acq_stop.is_set():
                self._acquire_segment(acq, wall0)
        except Exception as exc:
            self._error("Acquisition failed", exc)
        finally:
            try:
                failed = acq.safe_state() if acq is not None else None
                if failed is not None:
                    self.post("safe", failed)
                    self.post("settings", self._settings())
            except Exception as exc:
                self._error("Safe state after acquisition failed", exc)
            t_acq, n_tags, n_blocks = (acq.t_s, acq.n_tags, acq.n_blocks) if acq is not None else (0.0, 0, 0)
            log.info("acquisition stopped after %.3g s of data (%d tags); instruments in safe state", t_acq, n_tags)
            self.post("acq_status", {"t_s": t_acq, "tags": n_tags, "blocks": n_blocks,
                                     "wall_s": time.perf_counter() - wall0})
            self._set_busy("acquisition", False)

    def _acquire_segment(self, acq: Any, wall0: float) -> None:
        """One open-ended segment of the acquisition (slots from 0), with the distillation requested
        at its start, if any; ends on stop, or when a distillation is attached or detached."""
        want_distill = self._distill_request
        self._distill_stop.clear()
        stream = acq.start()  # the tagger's acquisition begins: the station's logs and ID are this segment's
        feeder: queue.Queue[Any] | None = None
        try:
            feeder = self._start_distiller(want_distill, acq.station) if want_distill is not None else None
            last_emit = time.perf_counter()
            for blk in stream:
                if feeder is not None:
                    feeder.put(blk)  # blocks when the pipeline lags: back-pressure
                now = time.perf_counter()
                if now - last_emit >= EMIT_INTERVAL_S:
                    span, clicks = acq.take_window()
                    self.post("rates", {"t_s": acq.t_s, "rates_hz": {k: v / span for k, v in clicks.items()}})
                    self.post("acq_status", {"t_s": acq.t_s, "tags": acq.n_tags, "blocks": acq.n_blocks,
                                             "wall_s": now - wall0})
                    last_emit = now
                if self._acq_stop.is_set():
                    break
                if feeder is not None and self._distill_stop.is_set():
                    break  # distillation stopped: keep acquiring without it
                if feeder is None and self._distill_request is not None:
                    break  # distillation requested: restart the stream with it
        finally:
            stream.close()
            if feeder is not None:
                self._finish_distiller(feeder, acq.segment_t_s, discard=self._closed)

    def _start_distiller(self, req: dict[str, Any], station: Any) -> queue.Queue[Any] | None:
        """A distillation thread for the acquisition the time tagger has just started. The
        station supplies the clients' modulation logs and the acquisition ID (as for
        ``labqfl run``), so block IDs derive from the acquisition and the key stores refuse
        to take the same raw data twice."""
        from labqfl.app.distill import DistillOptions, TagSource, distill_settings

        cfg = self.config
        q: queue.Queue[Any] = queue.Queue(maxsize=16)
        feed = _QueueFeed(q)
        try:
            source = TagSource.from_station(station, feed)
        except LabqflError as exc:
            self._error("Cannot distil", exc)
            self._distill_request = None
            return None
        try:  # block_bits None: the block-size rule for an open-ended stream
            options = DistillOptions(engine=str(req["engine"]), block_bits=req["block_bits"])
            settings, plan = distill_settings(cfg, options, None, what="live distillation", hint="")
            if plan is not None:
                self.post("progress", ("distillation", None, plan.summary()))
        except LabqflError as exc:
            self._error("Cannot distil", exc)
            self._distill_request = None
            return None
        self._distill_queue = q
        th = self._thread(self._distill, (feed, source, settings), "labqfl-distillation")
        self._distill_thread = th
        self._set_busy("distillation", True)
        th.start()
        return q

    def _finish_distiller(self, q: queue.Queue[Any], seg_t: float, discard: bool) -> None:
        q.put(_QueueFeed.END(seg_t, discard))

    def _distill(self, feed: _QueueFeed, source: Any, settings: Any) -> None:
        """The distillation thread: :meth:`labqfl.app.distill.DistillSession.run` on the blocks the
        acquisition thread queues, posting live pair metrics and key pools as blocks close."""
        from labqfl.app.distill import DistillSession
        from labqfl.runs import RunRecord

        cfg, acq_id = self.config, source.acquisition_id
        session: DistillSession | None = None
        bs = cfg.simulation.block_duration_s
        t_s, last_emit = 0.0, 0.0
        try:
            run = RunRecord.create("gui-distill", cfg, self.runs_dir)
            run_name = run.name
            run.close()
            session = DistillSession(cfg, settings, data_dir=self.data_dir, run_id=run_name)
            log.info("distillation of acquisition %s started: blocks of %d sifted bits, %s", acq_id,
                     settings.block_bits, settings.engine)

            def on_block(k: int, closed: list[Any]) -> None:
                nonlocal t_s, last_emit
                t_s = k * bs
                now = time.perf_counter()
                if closed or now - last_emit >= EMIT_INTERVAL_S:
                    self.post("pairs", {"t_s": t_s, "pairs": pair_metrics(session.distiller, t_s), "acquisition": acq_id})
                    last_emit = now
                if closed:
                    self._post_pools()

            results = session.run(  # shutting down or discarded: the backlog is dropped, no partial results
                source, total_slots=lambda: int(round(feed.end_t_s * cfg.laser.rep_rate_hz)), on_block=on_block,
                stop=lambda: self._closed or feed.discard,
                on_finish=lambda: self.post("progress", ("distillation", None, "processing the last partial block…")))
            if results is not None:
                t_s = feed.end_t_s
            feed.drain()
            self.post("pairs", {"t_s": t_s, "pairs": pair_metrics(session.distiller, t_s), "acquisition": acq_id,
                                "final": True})
        except Exception as exc:
            self._error("Distillation failed", exc)
            feed.drain()  # so the acquisition thread never blocks on a dead pipeline
        finally:
            if session is not None:
                session.close()
            self._post_pools()
            log.info("distillation stopped")
            self._set_busy("distillation", False)

    def _post_pools(self) -> None:
        try:
            self.post("pools", key_pools(self.config, self.data_dir))
        except Exception as exc:
            log.warning("key pools unavailable: %s", one_line(exc))

    def refresh_pools(self) -> Future[Any]:
        return self._submit(self._post_pools, "Reading key pools failed")

    # -- calibration -------------------------------------------------------------------------------
    def calibrations(self) -> tuple[list[CalibrationSpec], str]:
        return discover_calibrations()

    def run_calibration(self, name: str, **kwargs: Any) -> None:
        """Run one calibration procedure on its own thread (acquisition must be stopped)."""
        specs, why = self.calibrations()
        spec = next((s for s in specs if s.name == name), None)
        with self._lock:
            if spec is None:
                self._error("Cannot calibrate", why or f"no calibration procedure {name!r}")
                return
            if self.station is None:
                self._error("Cannot calibrate", "the station is not connected; press Connect first")
                return
            if self.busy("acquisition") or self.busy("calibration"):
                self._error("Cannot calibrate", "stop the acquisition (or the running calibration) first")
                return
            self._cal_cancel.clear()
            self._set_busy("calibration", True)
            self._cal_thread = self._thread(self._calibrate, (spec, kwargs), "labqfl-calibration")
            self._cal_thread.start()

    def cancel_calibration(self) -> None:
        """Stop the running calibration at its next step (settings restored, safe state)."""
        self._cal_cancel.set()

    def _calibrate(self, spec: CalibrationSpec, kwargs: dict[str, Any]) -> None:
        from labqfl.app.calibrate import run_calibration

        t0 = time.perf_counter()
        try:
            def progress(message: str) -> None:
                if self._cal_cancel.is_set():
                    raise _Cancelled(f"calibration {spec.name} cancelled by the user")
                self.post("progress", ("calibration", None, message))

            self.post("progress", ("calibration", None, f"{spec.title}…"))
            outcome = run_calibration(self.config, spec.name, runs_dir=self.runs_dir, progress=progress,
                                      station=self.station, base_dir=self.base_dir, **kwargs)
            quantities = outcome.quantity_rows()
            data = {"procedure": spec.name, "title": spec.title, "quantities": quantities, "plots": outcome.plots(),
                    "run": outcome.files.get("run", ""), "station_toml": outcome.files.get("station_toml", ""),
                    "seconds": time.perf_counter() - t0}
            log.info("calibration %s done in %.1f s: %d quantities; calibrated station file %s", spec.name,
                     data["seconds"], len(quantities), data["station_toml"])
            self.post("calibration_result", data)
            if outcome.failures:  # the other procedures ran and were saved; say which did not
                fails = outcome.report.failures
                self._error(f"Calibration {spec.title}: {len(fails)} procedure(s) failed",
                            "; ".join(f.message for f in fails))
            self.post("progress", ("calibration", 1.0, f"{spec.title} done"))
        except Exception as exc:
            cause: BaseException | None = exc
            while cause is not None and not isinstance(cause, _Cancelled):
                cause = cause.__cause__
            if isinstance(cause, _Cancelled):
                log.warning("%s (settings restored, instruments in safe state)", cause)
                self.post("progress", ("calibration", 0.0, "cancelled; instruments in safe state"))
            else:
                self._error(f"Calibration {spec.title} failed", exc)
        finally:
            if self.station is not None:
                self.post("settings", self._settings())
            self._set_busy("calibration", False)

    # -- training ---------------------------------------------------------------------------------
    def start_training(self, options: TrainingOptions | None = None) -> None:
        """Run federated training (:func:`labqfl.fl.training.run_federated`) on its own thread."""
        opts = options or TrainingOptions()
        with self._lock:
            if self._train_thread is not None and self._train_thread.is_alive():
                self._error("Cannot start training", "training is already running")
                return
            self._train_stop.clear()
            self._set_busy("training", True)
            self._train_thread = self._thread(self._train, (opts,), "labqfl-training")
            self._train_thread.start()

    def stop_training(self) -> None:
        """Stop training after the current round."""
        self._train_stop.set()

    def _train(self, opts: TrainingOptions) -> None:
        try:
            self.post("progress", ("training", None, "loading model and data…"))
            from labqfl.app.training import TrainingSetup
            from labqfl.fl.secure import secure_round

            # the shared recipe; no pre-flight key check: keys may still be arriving from a running distillation
            setup = TrainingSetup.prepare(opts.settings(self.data_dir))
            model, data, secagg, names = setup.model, setup.data, setup.secagg, setup.names
            key_source = setup.key_source
            sizes = data.sizes()
            pairs = [p if isinstance(p, str) else "-".join(p) for p in secagg.pairs(names)]
            self.post("train_started", {"task": opts.task, "model": model.name, "n_params": model.n_params,
                                        "clients": {c: {"samples": int(n)} for c, n in sizes.items()},
                                        "keys": opts.keys, "rounds": opts.rounds, "q": opts.q, "pairs": pairs})
            per_client: dict[str, dict[str, Any]] = {}

            def observed_round(updates: Any, weights: Any, cfg: Any, ks: Any, **kw: Any) -> Any:
                if self._train_stop.is_set():
                    raise _Cancelled("training stopped by the user")
                res = secure_round(updates, weights, cfg, ks, **kw)
                for c, u in updates.items():
                    per_client[c] = {
                        "samples": int(sizes.get(c, 0)),
                        "status": "dropped" if c in res.dropped else "aggregated",
                        "update_norm": float(np.linalg.norm(np.asarray(u, dtype=np.float64))),
                        "weight": float(res.effective_weights.get(c, 0.0)),
                    }
                return res

            cum = {"key_bits": 0}

            def progress(m: Any) -> None:
                cum["key_bits"] += int(m.key_bits_total)
                row = asdict(m)
                row["key_bits_cumulative"] = cum["key_bits"]
                avail = {}
                if opts.keys == "qkd" and hasattr(key_source, "available_bits"):
                    for p in pairs:
                        try:
                            avail[p] = int(key_source.available_bits(p))
                        except Exception:
                            pass
                self.post("train_round", {"metrics": row, "clients": {c: dict(v, round=m.round) for c, v in per_client.items()},
                                          "available_bits": avail})
                self.post("progress", ("training", m.round / opts.rounds,
                                       f"round {m.round}/{opts.rounds}: accuracy {100 * m.test_accuracy:.1f} %"))
                if self._train_stop.is_set():
                    raise _Cancelled("training stopped by the user")

            self.post("progress", ("training", 0.0, f"{opts.task}: {opts.clients} clients, keys={opts.keys}"))
            try:
                result = setup.run(progress=progress, secure_round_fn=observed_round)
                summary = result.summary()
                summary["stopped"] = False
            except _Cancelled:
                summary = {"stopped": True}
                log.info("training stopped by the user")
            finally:
                setup.close()
            self.post("train_finished", summary)
            self.post("progress", ("training", 1.0, "training stopped" if summary.get("stopped") else "training finished"))
        except Exception as exc:
            self._error("Training failed", exc)
        finally:
            self._set_busy("training", False)

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
        self._acq_stop.set()
        self._cal_cancel.set()
        self._train_stop.set()
        deadline = time.monotonic() + timeout_s
        for th in (self._acq_thread, self._distill_thread, self._cal_thread):
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
        # training stops at the end of its current round; it may be taking keys from the stores
        self._join(self._train_thread, max(0.1, deadline - time.monotonic()))
        self._executor.shutdown(wait=False, cancel_futures=True)
        for th in list(getattr(self._executor, "_threads", ())):
            self._join(th, max(0.1, deadline - time.monotonic()))
        logging.getLogger(ROOT).removeHandler(self._handler)
        self.post("shutdown", {"safe_failures": failed})
        return failed


def _default_station(config: StationConfig, base_dir: Path | None) -> Any:
    from labqfl.app.station import open_station

    return open_station(config, base_dir=base_dir)


__all__ = ["Event", "TestbedCore", "TrainingOptions", "CalibrationSpec", "arm_station", "discover_calibrations",
           "format_value", "key_pools", "pair_metrics", "parse_setting_value", "setting_rows"]
