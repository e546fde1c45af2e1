"""The Nodes panel: operate a set of node processes (docs/nodes.md) from the window.

Start a local set (optics, detector and every client of a station as separate OS processes on
loopback, throwaway certificates) or connect to running nodes by address with the operator's
certificate folder; the panel lists each node (name, role, address, state), runs an acquisition
→ distillation of a chosen duration across the set, and shows per pair: status, sifted bits,
QBER, final key bits, key rate, and what the key's security rests on (from the blocks'
provenance). Every use case is :class:`labqfl.app.nodes.NodeSet`'s.

Threads: :class:`NodesRunner` (no Qt) runs each command on one worker thread and reports
through a queue; the panel drains it on a ``QTimer``, so the Qt thread never waits on a node.
Closing (:meth:`NodesPanel.shutdown_async`, called by the main window on close) stops a local set
(each node gets SIGTERM, finishes its block in progress and exits; the exit codes are checked and
kept in :attr:`NodesRunner.exit_codes`) and leaves connected nodes running; it interrupts a local
acquisition in progress, and waits for one in progress on connected nodes (they cannot be
interrupted from here).
"""

from __future__ import annotations

import math
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from labqfl.gui.controller import Controller
from labqfl.gui.panels._common import (
    ERR_COLOUR,
    MUTED,
    OK_COLOUR,
    fmt_bits,
    fmt_kbps,
    fmt_pct,
    heading,
    read_only_table,
    table_item,
)
from PySide6.QtCore import Qt, QTimer, Signal
from PySide6.QtGui import QBrush
from PySide6.QtWidgets import (
    QButtonGroup,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QRadioButton,
    QSplitter,
    QVBoxLayout,
    QWidget,
)

from labqfl.app.nodes import NodeAcquisition, NodeSet, NodeStatus, read_addresses
from labqfl.config import StationConfig
from labqfl.errors import LabqflError
from labqfl.log import get_logger

log = get_logger("labqfl.gui")

#: Drain interval of the panel's event queue [ms].
TICK_MS = 100
#: Acquisition length [s] the panel proposes when the block-size rule gives none (a station whose
#: model gives no key at any block size, or a station file that cannot be read).
FALLBACK_DURATION_S = 1.0
#: The proposed duration is the block-size rule's minimum times this, rounded up (see :func:`default_duration_s`).
DURATION_MARGIN = 1.25


def default_duration_s(station: str | Path | StationConfig | None) -> float:
    """The acquisition length the panel proposes for ``station``: the block-size rule's minimum
    (:attr:`labqfl.qkd.blocksize.BlockPlan.needed_duration_s`, the "needs ≥ … s of data" of the
    refusal that ``labqfl node up --duration`` and a local set apply) times :data:`DURATION_MARGIN`,
    rounded up to two significant digits and to the field's 0.01 s; :data:`FALLBACK_DURATION_S`
    when the rule gives none."""
    from labqfl.config import load_station_config
    from labqfl.qkd.blocksize import plan_blocks

    try:
        cfg = station if isinstance(station, StationConfig) else load_station_config(station)
        need = plan_blocks(cfg, None).needed_duration_s
    except (LabqflError, OSError, ValueError) as e:
        log.warning("Nodes panel: no default duration from the block-size rule: %s", e)
        return FALLBACK_DURATION_S
    if not math.isfinite(need) or need <= 0:
        return FALLBACK_DURATION_S
    x = need * DURATION_MARGIN
    step = max(0.01, 10.0 ** (math.floor(math.log10(x)) - 1))  # never finer than the field's 0.01 s
    return min(3600.0, round(math.ceil(x / step - 1e-9) * step, 2))
#: Longest wait for a command in progress when the window closes [s] (a local set is stopped at once).
CLOSE_WAIT_S = 600.0


@dataclass(frozen=True)
class NodesEvent:
    """One message from the runner's threads to the panel: ``kind`` → ``data``:
    ``busy`` (command or "", bool) · ``nodes`` [NodeStatus] · ``opened`` {started: bool} ·
    ``acquiring`` {duration_s, t0 (monotonic), pairs} · ``result`` NodeAcquisition · ``error`` str ·
    ``closed`` {exit_codes}."""

    kind: str
    data: Any = None


class NodesRunner:
    """The panel's logic without Qt: one :class:`~labqfl.app.nodes.NodeSet` at a time and the
    worker thread that drives it (module docstring). Commands return False when a command is
    already running or the runner is shut down; results come as :class:`NodesEvent` s."""

    def __init__(self) -> None:
        self.events: queue.Queue[NodesEvent] = queue.Queue()
        self.nodes: NodeSet | None = None
        #: exit codes of the node processes the last local set started (empty for a connected set)
        self.exit_codes: dict[str, int | None] = {}
        self._lock = threading.Lock()
        self._worker: threading.Thread | None = None
        self._closer: threading.Thread | None = None
        self._final = False

    # -- state -----------------------------------------------------------------------------------
    @property
    def busy(self) -> bool:
        return any(t is not None and t.is_alive() for t in (self._worker, self._closer))

    def _emit(self, kind: str, data: Any = None) -> None:
        self.events.put(NodesEvent(kind, data))

    def drain(self) -> list[NodesEvent]:
        out = []
        while True:
            try:
                out.append(self.events.get_nowait())
            except queue.Empty:
                return out

    def live_threads(self, wait_s: float = 0.0) -> list[str]:
        """Names of the runner's threads still running after waiting up to ``wait_s`` s for them."""
        deadline = time.monotonic() + wait_s
        alive = []
        for t in (self._closer, self._worker):
            if t is not None and t is not threading.current_thread():
                t.join(max(0.0, deadline - time.monotonic()))
                if t.is_alive():
                    alive.append(t.name)
        return alive

    # -- commands ----------------------------------------------------------------------------------
    def _run(self, what: str, fn: Callable[[], None]) -> bool:
        with self._lock:
            if self._final or self.busy:
                return False

            def body() -> None:
                self._emit("busy", (what, True))
                try:
                    fn()
                except (LabqflError, OSError, ValueError) as e:
                    msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
                    log.warning("nodes: %s: %s", what, msg)
                    self._emit("error", f"{what}: {msg}")
                except Exception as e:  # a bug must not pass silently, nor kill the window
                    log.exception("nodes: %s failed", what)
                    self._emit("error", f"{what}: {type(e).__name__}: {e}")
                finally:
                    ns = self.nodes
                    if ns is not None:
                        self._emit("nodes", ns.nodes())
                    self._emit("busy", (what, False))

            self._worker = threading.Thread(target=body, name=f"labqfl-nodes-{what.split()[0]}", daemon=True)
            self._worker.start()
            return True

    def _adopt(self, ns: NodeSet) -> None:
        """Keep the set just opened, unless the window closed meanwhile (then close it at once)."""
        with self._lock:
            closing = self._final
            if not closing:
                self.nodes = ns
                self.exit_codes = {}
        if closing:
            self._finish(ns)
            return
        self._emit("nodes", ns.nodes())
        self._emit("opened", {"started": ns.started, "planned_duration_s": ns.planned_duration_s})

    def open_local(self, station: str | Path | StationConfig | None, **kwargs: Any) -> bool:
        """Start a local set of the station (a file, or the window's station config)."""
        if self.nodes is not None:
            self._emit("error", "start: a set of nodes is already open; stop it first")
            return False
        return self._run("start local set", lambda: self._adopt(NodeSet.start_local(station, **kwargs)))

    def connect(self, addresses: str | Path, certs: str | Path, station: str | Path | StationConfig | None) -> bool:
        """Connect to running nodes listed in an addresses file, with the operator's certificate folder."""
        if self.nodes is not None:
            self._emit("error", "connect: a set of nodes is already open; disconnect it first")
            return False
        return self._run("connect", lambda: self._adopt(NodeSet.connect(addresses, certs, station=station)))

    def acquire(self, duration_s: float) -> bool:
        ns = self.nodes
        if ns is None:
            self._emit("error", "acquire: no set of nodes is open; start a local set or connect first")
            return False

        def go() -> None:
            clients = [s.name for s in ns.nodes() if s.role == "client"]
            pairs = [f"{a}-{b}" for i, a in enumerate(clients) for b in clients[i + 1:]]
            self._emit("acquiring", {"duration_s": duration_s, "t0": time.monotonic(), "pairs": pairs})
            self._emit("result", ns.acquire(duration_s))

        return self._run("acquire", go)

    def _finish(self, ns: NodeSet) -> None:
        """Close ``ns`` and report: a local set's exit codes (each must be 0), a connected set left running."""
        codes = ns.close()
        with self._lock:
            self.exit_codes = dict(codes)
            if self.nodes is ns:
                self.nodes = None
        self._emit("nodes", ns.nodes())
        self._emit("closed", {"exit_codes": codes, "started": ns.started})
        bad = {n: c for n, c in codes.items() if c != 0}
        if bad:
            self._emit("error", "stop: node(s) did not exit cleanly: " + ", ".join(f"{n} exit code {c}" for n, c in bad.items()))

    def _close_now(self, wait_s: float) -> None:
        ns = self.nodes
        if ns is not None:
            ns.close()  # a local acquisition in progress ends here (its nodes stop); idempotent
        w = self._worker
        if w is not None and w is not threading.current_thread():
            w.join(wait_s)
        ns = self.nodes
        if ns is not None:
            self._finish(ns)

    def close(self) -> bool:
        """Stop the local set / disconnect, on a helper thread (also while an acquisition runs)."""
        with self._lock:
            if self.nodes is None or (self._closer is not None and self._closer.is_alive()):
                return False
            self._closer = threading.Thread(target=self._close_now, args=(CLOSE_WAIT_S,), name="labqfl-nodes-close",
                                            daemon=True)
            self._closer.start()
            return True

    def shutdown(self, wait_s: float = CLOSE_WAIT_S) -> dict[str, int | None]:
        """Blocking, final: no new command; close what is open (as :meth:`close`), wait for the
        threads; the exit codes of the processes this runner started (empty when none)."""
        with self._lock:
            self._final = True
            closer = self._closer
        if closer is not None and closer is not threading.current_thread():
            closer.join(wait_s)
        self._close_now(wait_s)
        return dict(self.exit_codes)


class NodesPanel(QWidget):
    """Start or connect a set of nodes, list them, acquire across them, show per-pair results."""

    NODE_COLS = ["Node", "Role", "Address", "State"]
    PAIR_COLS = ["Pair", "Status", "Sifted", "QBER X (key)", "Final key", "Key rate", "Blocks (aborted)",
                 "Key security (block provenance)"]

    #: the runner has stopped what it started and every thread has ended
    shutdownFinished = Signal()
    #: one line, for the window's report (the panel shows it itself)
    errorOccurred = Signal(str)

    def __init__(self, ctl: Controller, runner: NodesRunner | None = None) -> None:
        super().__init__()
        self.ctl = ctl
        self.runner = runner or NodesRunner()
        self.station_file: Path | None = None
        self.results: NodeAcquisition | None = None
        #: the nodes the node table shows (``labqfl gui --screenshot --json`` reports them, :func:`labqfl.gui.app._nodes_json`)
        self.node_statuses: list[NodeStatus] = []
        self.errors: list[str] = []
        self.shut_down = False
        self._busy = ""
        self._acq: dict[str, Any] | None = None
        self._shutdown_thread: threading.Thread | None = None
        self.browse_buttons: list[QPushButton] = []

        left = self._build_controls()
        self.node_table = read_only_table(self.NODE_COLS)
        self.pair_table = read_only_table(self.PAIR_COLS)
        self.security = QLabel("")
        self.security.setWordWrap(True)
        self.summary = QLabel("No acquisition yet.")
        self.summary.setWordWrap(True)
        right = QWidget()
        rl = QVBoxLayout(right)
        rl.setContentsMargins(0, 0, 0, 0)
        split = QSplitter(Qt.Orientation.Vertical)
        top = QWidget()
        tl = QVBoxLayout(top)
        tl.setContentsMargins(0, 0, 0, 0)
        tl.addWidget(heading("Nodes"))
        tl.addWidget(self.node_table)
        bottom = QWidget()
        bl = QVBoxLayout(bottom)
        bl.setContentsMargins(0, 0, 0, 0)
        bl.addWidget(heading("Pairs"))
        bl.addWidget(self.summary)
        bl.addWidget(self.pair_table, 1)
        bl.addWidget(self.security)
        split.addWidget(top)
        split.addWidget(bottom)
        split.setSizes([230, 570])
        rl.addWidget(split)
        lay = QHBoxLayout(self)
        lay.addWidget(left)
        lay.addWidget(right, 1)

        self._timer = QTimer(self)
        self._timer.setInterval(TICK_MS)
        self._timer.timeout.connect(self.drain)
        self._timer.start()
        self._update_controls()

    # -- building --------------------------------------------------------------------------------
    def _build_controls(self) -> QWidget:
        w = QWidget()
        w.setFixedWidth(380)
        v = QVBoxLayout(w)
        v.setContentsMargins(0, 0, 0, 0)

        box = QGroupBox("Set of nodes")
        f = QFormLayout(box)
        self.mode_local = QRadioButton("Start a local set")
        self.mode_local.setToolTip("Optics, detector and every client of the station as separate processes on this "
                                   "machine (loopback, throwaway certificates); stopped when you stop it or close the window")
        self.mode_connect = QRadioButton("Connect to running nodes")
        self.mode_connect.setToolTip("Nodes started elsewhere (docs/nodes.md): an addresses file, one NAME=HOST:PORT "
                                     "per line, and the operator's certificate folder (ca.pem, node-ctl.pem/.key); "
                                     "closing leaves them running")
        grp = QButtonGroup(self)
        grp.addButton(self.mode_local)
        grp.addButton(self.mode_connect)
        self.mode_local.setChecked(True)
        self.station_edit = QLineEdit()
        self.station_edit.setPlaceholderText("the window's station")
        self.station_edit.setToolTip("Station file the nodes run with (empty: the window's station)")
        self.addresses_edit = QLineEdit()
        self.addresses_edit.setPlaceholderText("nodes.txt: NAME=HOST:PORT per line")
        self.certs_edit = QLineEdit()
        self.certs_edit.setPlaceholderText("folder with ca.pem, node-ctl.pem/.key")
        f.addRow(self.mode_local)
        f.addRow("Station file", self._with_browse(self.station_edit, self._browse_station))
        f.addRow(self.mode_connect)
        f.addRow("Addresses", self._with_browse(self.addresses_edit, self._browse_addresses))
        f.addRow("Certificates", self._with_browse(self.certs_edit, self._browse_certs))
        row = QHBoxLayout()
        self.open_btn = QPushButton("▶ Start")
        self.close_btn = QPushButton("■ Stop")
        row.addWidget(self.open_btn)
        row.addWidget(self.close_btn)
        f.addRow(row)
        self.mode_local.toggled.connect(self._update_controls)
        self.station_edit.editingFinished.connect(self._propose_duration)
        self.open_btn.clicked.connect(self.open_set)
        self.close_btn.clicked.connect(self.close_set)
        v.addWidget(box)

        acq = QGroupBox("Acquisition → distillation")
        a = QFormLayout(acq)
        self.duration = QDoubleSpinBox()
        self.duration.setDecimals(2)
        self.duration.setRange(0.01, 3600.0)
        self.duration.setSingleStep(0.1)
        self._default_duration = default_duration_s(self.ctl.config)
        self.duration.setValue(self._default_duration)
        self.duration.setSuffix(" s")
        self.duration.setToolTip("Acquisition length (simulated seconds with a simulated optical layer). Proposed: "
                                 "the block-size rule's minimum for a key block on every pair of the station, "
                                 f"× {DURATION_MARGIN:g}; a shorter one is refused")
        self.acquire_btn = QPushButton("▶ Acquire")
        a.addRow("Duration", self.duration)
        a.addRow(self.acquire_btn)
        self.acquire_btn.clicked.connect(self.acquire)
        v.addWidget(acq)

        self.status = QLabel("No set of nodes open.")
        self.status.setWordWrap(True)
        self.error_label = QLabel("")
        self.error_label.setWordWrap(True)
        self.error_label.setStyleSheet(f"color: {ERR_COLOUR.name()}")
        v.addWidget(self.status)
        v.addWidget(self.error_label)
        v.addStretch(1)
        return w

    def _with_browse(self, edit: QLineEdit, fn: Callable[[], None]) -> QWidget:
        w = QWidget()
        h = QHBoxLayout(w)
        h.setContentsMargins(0, 0, 0, 0)
        h.addWidget(edit, 1)
        b = QPushButton("…")
        b.setFixedWidth(28)
        b.clicked.connect(fn)
        h.addWidget(b)
        self.browse_buttons.append(b)
        return w

    def _browse_station(self) -> None:
        p, _ = QFileDialog.getOpenFileName(self, "Station file", "", "Station (*.toml)")
        if p:
            self.station_edit.setText(p)

    def _browse_addresses(self) -> None:
        p, _ = QFileDialog.getOpenFileName(self, "Node addresses", "", "Addresses (*.txt *.conf);;All files (*)")
        if p:
            self.addresses_edit.setText(p)

    def _browse_certs(self) -> None:
        p = QFileDialog.getExistingDirectory(self, "Operator certificate folder")
        if p:
            self.certs_edit.setText(p)

    # -- commands ----------------------------------------------------------------------------------
    def set_local(self, station_file: Path | None = None) -> None:
        """Choose 'start a local set' (of ``station_file``, default the window's station)."""
        self.mode_local.setChecked(True)
        self.station_file = station_file
        self.station_edit.setText(str(station_file) if station_file else "")
        self._propose_duration()

    def _propose_duration(self) -> None:
        """The duration field follows the block-size rule of the chosen station
        (:func:`default_duration_s`) while it holds the previous proposal (never a value typed in)."""
        proposed = default_duration_s(self._station())
        if abs(self.duration.value() - self._default_duration) < 0.005:
            self.duration.setValue(proposed)
        self._default_duration = proposed

    def set_connect(self, addresses: Path, certs: Path) -> None:
        """Choose 'connect' to the nodes of ``addresses`` with the certificates in ``certs``."""
        self.mode_connect.setChecked(True)
        self.addresses_edit.setText(str(addresses))
        self.certs_edit.setText(str(certs))

    def _station(self) -> Path | StationConfig:
        text = self.station_edit.text().strip()
        return Path(text).expanduser() if text else self.ctl.config

    def open_set(self) -> None:
        """Start the local set or connect, as chosen (on the runner's worker thread)."""
        self._set_error("")
        if self.mode_local.isChecked():
            # block sizes: the block-size rule for the chosen duration, as `labqfl node up --duration`
            started = self.runner.open_local(self._station(), duration_s=float(self.duration.value()))
            what = "starting the local set of nodes (certificates, one process per node)…"
        else:
            addr, certs = self.addresses_edit.text().strip(), self.certs_edit.text().strip()
            if not addr or not certs:
                self._set_error("connect: give the addresses file and the operator's certificate folder")
                return
            try:
                read_addresses(Path(addr).expanduser())  # a bad file: one line now, not after a thread
            except LabqflError as e:
                self._set_error(f"connect: {e}")
                return
            started = self.runner.connect(Path(addr).expanduser(), Path(certs).expanduser(), self._station())
            what = f"connecting to the nodes of {addr}…"
        if started:
            self.status.setText(what)
        self._update_controls()

    def acquire(self) -> None:
        self._set_error("")
        if self.runner.acquire(float(self.duration.value())):
            self.status.setText(f"acquisition of {self.duration.value():g} s starting…")
        self._update_controls()

    def close_set(self) -> None:
        if self.runner.close():
            self.status.setText("stopping the local set…" if self.runner.nodes is not None and self.runner.nodes.started
                                else "disconnecting…")
        self._update_controls()

    def shutdown_async(self) -> None:
        """Stop what the panel started and end its threads on a helper thread (window closing);
        :attr:`shutdownFinished` when done."""
        if self._shutdown_thread is not None:
            return
        self._shutdown_thread = threading.Thread(target=self.runner.shutdown, name="labqfl-nodes-shutdown", daemon=True)
        self._shutdown_thread.start()

    @property
    def idle(self) -> bool:
        """No set of nodes open and no command running (nothing to stop)."""
        return self.runner.nodes is None and not self.runner.busy

    def live_threads(self, wait_s: float = 0.0) -> list[str]:
        """Threads of this panel still running after waiting up to ``wait_s`` s (empty once closed)."""
        deadline = time.monotonic() + wait_s
        th = self._shutdown_thread
        alive = []
        if th is not None:
            th.join(wait_s)
            if th.is_alive():
                alive.append(th.name)
        return alive + self.runner.live_threads(max(0.0, deadline - time.monotonic()))

    # -- events ------------------------------------------------------------------------------------
    def drain(self) -> None:
        for ev in self.runner.drain():
            self._on_event(ev)
        if self._acq is not None:
            el = time.monotonic() - self._acq["t0"]
            self.status.setText(f"acquisition of {self._acq['duration_s']:g} s across {len(self._acq['pairs'])} "
                                f"pair(s), then distillation at every Ci: {el:.0f} s elapsed")
        th = self._shutdown_thread
        if th is not None and not th.is_alive() and not self.shut_down:
            for ev in self.runner.drain():
                self._on_event(ev)
            self.shut_down = True
            self._timer.stop()
            self.shutdownFinished.emit()

    def _on_event(self, ev: NodesEvent) -> None:
        k, d = ev.kind, ev.data
        if k == "busy":
            self._busy = d[0] if d[1] else ""
            if not d[1]:
                self._acq = None
        elif k == "nodes":
            self._show_nodes(d)
        elif k == "opened":
            n = self.node_table.rowCount()
            planned = d.get("planned_duration_s")
            self.status.setText(f"{n} node(s) answering; {'started here' if d['started'] else 'connected'}"
                                + (f"; blocks planned for {planned:g} s acquisitions" if planned is not None else ""))
        elif k == "acquiring":
            self._acq = d
            self._show_pending(d["pairs"])
        elif k == "result":
            self._acq = None
            self.results = d
            self._show_results(d)
        elif k == "error":
            self._set_error(d)
            self.errorOccurred.emit(d)
            self.status.setText("")
        elif k == "closed":
            codes = d["exit_codes"]
            if d["started"]:
                ok = all(c == 0 for c in codes.values())
                self.status.setText(f"local set stopped: {len(codes)} node process(es) exited"
                                    + (" cleanly (exit code 0 each)" if ok else " — not all cleanly, see the error"))
            else:
                self.status.setText("disconnected; the nodes are still running")
        self._update_controls()

    def _set_error(self, text: str) -> None:
        if text:
            self.errors.append(text)
        self.error_label.setText(text)

    def _update_controls(self) -> None:
        is_open = self.runner.nodes is not None
        busy = self.runner.busy
        local = self.mode_local.isChecked()
        for wdg in (self.mode_local, self.mode_connect):
            wdg.setEnabled(not is_open and not busy and not self.shut_down)
        self.station_edit.setEnabled(local and not is_open and not busy)
        self.addresses_edit.setEnabled(not local and not is_open and not busy)
        self.certs_edit.setEnabled(not local and not is_open and not busy)
        self.open_btn.setText("▶ Start" if local else "▶ Connect")
        self.open_btn.setEnabled(not is_open and not busy and not self.shut_down)
        started = is_open and self.runner.nodes is not None and self.runner.nodes.started
        self.close_btn.setText("■ Stop" if (started or (local and not is_open)) else "■ Disconnect")
        # a local set may be stopped mid-acquisition (its nodes finish the block in progress)
        self.close_btn.setEnabled(is_open and (not busy or (started and self._busy == "acquire")))
        self.acquire_btn.setEnabled(is_open and not busy)

    # -- tables ------------------------------------------------------------------------------------
    def _show_nodes(self, nodes: list[NodeStatus]) -> None:
        self.node_statuses = list(nodes)
        t = self.node_table
        t.setRowCount(len(nodes))
        colours = {"answering": OK_COLOUR, "not answering": ERR_COLOUR, "stopped": MUTED, "left running": MUTED}
        for i, s in enumerate(nodes):
            state = s.state + (f" ({s.detail})" if s.detail else "")
            t.setItem(i, 0, table_item(s.name))
            t.setItem(i, 1, table_item(s.role))
            t.setItem(i, 2, table_item(s.address))
            it = table_item(state, tooltip=state)
            if s.state in colours:
                it.setForeground(QBrush(colours[s.state]))
            t.setItem(i, 3, it)

    def _show_pending(self, pairs: list[str]) -> None:
        t = self.pair_table
        t.setRowCount(len(pairs))
        for i, p in enumerate(pairs):
            t.setItem(i, 0, table_item(p))
            t.setItem(i, 1, table_item("acquiring…"))
            for c in range(2, len(self.PAIR_COLS)):
                t.setItem(i, c, table_item("—"))

    def _show_results(self, run: NodeAcquisition) -> None:
        t = self.pair_table
        t.setRowCount(len(run.pairs))
        statements: dict[str, list[str]] = {}
        for i, (p, o) in enumerate(run.pairs.items()):
            why = "; ".join(o.reasons)
            status = table_item(o.status + (f": {why}" if why and o.status != "key" else ""), tooltip=why)
            status.setForeground(QBrush(OK_COLOUR if o.status == "key" else ERR_COLOUR))
            rate = fmt_kbps(o.key_rate_bps)
            src = "from the stored blocks" if o.provenance_source == "blocks" else "declared by the station file"
            sec = f"{o.provenance or '—'}: {o.security}"
            cells = [table_item(p), status, table_item(fmt_bits(o.sifted_bits), True), table_item(fmt_pct(o.qber), True),
                     table_item(fmt_bits(o.final_key_bits), True), table_item(rate, True),
                     table_item(f"{o.blocks} ({o.aborted_blocks})", True), table_item(sec, tooltip=f"{o.security} ({src})")]
            for c, it in enumerate(cells):
                t.setItem(i, c, it)
            statements.setdefault(f"{o.security} ({src})", []).append(p)
        self.security.setText("<br>".join(f"<b>Key security, {', '.join(ps)}:</b> {s}" for s, ps in statements.items()))
        self.summary.setText(f"Acquisition {run.acquisition}: {run.duration_s:g} s in {run.wall_s:.1f} s wall; "
                             f"{fmt_bits(run.total_final_key_bits)} of final key over {len(run.pairs)} pair(s) "
                             f"(stored in each pair's two client stores; no key bit leaves them){self._plan_note(run.duration_s)}")
        self.status.setText("acquisition done")

    def _plan_note(self, duration_s: float) -> str:
        """What the local set's block sizes were planned for (the block-size rule, at start), when it differs."""
        ns = self.runner.nodes
        planned = ns.planned_duration_s if ns is not None else None
        if planned is None or abs(planned - duration_s) <= 1e-9 * max(1.0, planned):
            return ""
        return (f"; its blocks were planned for {planned:g} s acquisitions (block-size rule): stop and start the "
                f"set to plan them for {duration_s:g} s")

    # -- for tests and the screenshot ----------------------------------------------------------------
    def pair_rows(self) -> dict[str, dict[str, str]]:
        """The pairs table as text: {pair: {column: text}}."""
        t = self.pair_table
        out = {}
        for r in range(t.rowCount()):
            row = {self.PAIR_COLS[c]: (t.item(r, c).text() if t.item(r, c) else "") for c in range(t.columnCount())}
            out[row["Pair"]] = row
        return out

    def node_rows(self) -> dict[str, dict[str, str]]:
        t = self.node_table
        out = {}
        for r in range(t.rowCount()):
            row = {self.NODE_COLS[c]: (t.item(r, c).text() if t.item(r, c) else "") for c in range(t.columnCount())}
            out[row["Node"]] = row
        return out


__all__ = ["NodesEvent", "NodesPanel", "NodesRunner"]
