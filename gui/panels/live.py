"""The Live panel: acquisition and distillation controls, live plots and the per-pair table with key pools and key provenance.

Built from a :class:`~labqfl.gui.controller.Controller`; no panel touches an instrument."""

from __future__ import annotations

from typing import Any

import numpy as np
import pyqtgraph as pg
from labqfl.gui import plots
from labqfl.gui.controller import Controller
from labqfl.gui.panels._common import (
    ERR_COLOUR,
    OK_COLOUR,
    fmt_bits,
    fmt_kbps,
    fmt_pct,
    read_only_table,
    table_item,
)
from PySide6.QtCore import Qt
from PySide6.QtGui import QBrush
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QFormLayout,
    QFrame,
    QGridLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QScrollArea,
    QSpinBox,
    QSplitter,
    QVBoxLayout,
    QWidget,
)

from labqfl.cli.common import MIN_TEST_CLICKS, rate_clicks_cell
from labqfl.contracts.types import ENGINES


def key_provenance_text(cfg: Any) -> str:
    """One line for the key-pool panel: the provenance of the keys this station distils (the weakest
    pair's, from the station config: physical layer and the clients' configured randomness) and what
    their security rests on (:func:`labqfl.provenance.security_statement`)."""
    from labqfl.provenance import pair_provenance, security_statement, weakest

    w = weakest(pair_provenance(cfg, pr) for pr in cfg.pairs())
    if w is None:
        return "Key provenance: the station has no pairs"
    return f"Keys distilled here ({w.label}): {security_statement(w)}"


def _short_statement(label: str) -> str:
    """The first words of :func:`labqfl.provenance.security_statement` for a block label such as
    ``"simulated/seeded"`` ("not secret", "no physical security", "computational", …)."""
    from labqfl.provenance import Provenance, security_statement

    layer, _, randomness = label.partition("/")
    return security_statement(Provenance(layer, randomness)).partition(":")[0].partition(" under ")[0]


def pool_provenance_text(cfg: Any, provenance: dict[str, dict[str, Any]] | None) -> str:
    """What the key pools shown rest on: per pair the blocks Ci's key store holds (spent ones
    included) counted by provenance, then each distinct statement once with its pairs — the
    :func:`labqfl.provenance.store_pair_provenance` summaries ``labqfl keys status`` prints.
    Before any block is stored (or before the stores were read): what keys distilled here will
    rest on, from the station config (:func:`key_provenance_text`)."""
    held = {p: sm for p, sm in (provenance or {}).items() if sm.get("blocks") or sm.get("unrecorded_blocks")}
    if not held:
        return "Key pools: no key block in the key stores yet. " + key_provenance_text(cfg)
    rows = []
    statements: dict[str, list[str]] = {}
    for pair, sm in sorted(held.items()):
        parts = [f"{n} block{'' if n == 1 else 's'} {label} ({_short_statement(label)})"
                 for label, n in sm["blocks"].items()]
        if sm.get("unrecorded_blocks"):
            parts.append(f"{sm['unrecorded_blocks']} without a provenance record (nothing claimed)")
        auth = [f"{sm[k]} {what}" for k, what in (("preshared_blocks", "pre-shared"),
                                                   ("auth_refill_blocks", "refill(s)")) if sm.get(k)]
        if auth:
            parts.append(f"authentication key: {' + '.join(auth)}")
        rows.append(f"{pair}: {', '.join(parts)}")
        statements.setdefault(str(sm["security"]), []).append(pair)
    head = ("Key pools by the provenance of their stored distilled blocks (as `labqfl keys status`, when the "
            "stores were last read): " + " · ".join(rows))
    return "\n".join([head, *(f"{', '.join(pairs)}: {st}" for st, pairs in statements.items())])


def pool_not_secret(provenance: dict[str, dict[str, Any]] | None) -> bool:
    """A pool holds a block whose key is not secret (seeded randomness) or one without a record."""
    for sm in (provenance or {}).values():
        w = sm.get("weakest") or {}
        if w.get("randomness") == "seeded" or sm.get("unrecorded_blocks"):
            return True
    return False


def first_key_text(pairs: dict[str, dict[str, Any]]) -> str:
    """The Distillation status while it runs: how much more data the first key on every pair needs,
    "first block being distilled" once that data is in but no pair without key has its block done
    yet, and plain "running" once every pair has key."""
    waiting = [m for m in pairs.values() if m.get("final_key_bits", 0) <= 0]
    if not waiting:
        return "running"
    etas = [m.get("first_key_eta_s") for m in waiting]
    if any(e is None for e in etas):
        return "running"
    eta = max(e for e in etas if e is not None)
    if eta > 0:
        return f"running · first key on every pair expected after ≈ {eta:.{1 if eta < 10 else 0}f} s more data"
    return "running · first block being distilled (error correction, privacy amplification)…"


#: Title of the Live tab's error-rate plot: the key QBER and the Y test data are different things (physics review s34 F4).
ERROR_RATE_TITLE = f"X key QBER (solid) · Y test data, ≥ {MIN_TEST_CLICKS} clicks (dashed)"

#: The note in the Live tab's control column: what the two error-rate columns are (physics review s34 F4).
LIVE_NOTE = (
    "Count rates are per second of acquired data. QBER X (key) is measured by error correction on each key "
    "block. Y test is the error rate of the Y-basis test data so far (both clients in Y at equal non-zero "
    "intensities: decoy-decoy only where their signal intensities differ), with its clicks; n/a below "
    f"{MIN_TEST_CLICKS} clicks. A test rate is not the key QBER: equal pulses leaving two clients arrive "
    "unequal over unequal paths, which lowers the fringe contrast. Key pools are the free bits in the nodes' "
    "key stores; the table's Free key is what masks and ETSI delivery can draw, without the authentication pool "
    "(the plot's 'auth': the pre-shared secret and each block's refill).")

#: The line under the Live tab's key-rate plot (review s36 user F7: the tab showed 7.6–11.5 kbit/s per pair against
#: the README's 54–82 with no word why): its rates are those of its own blocks, the first-key rule's smallest ones.
BLOCK_RATE_NOTE = (
    "Key rates are those of this tab's blocks: “auto” takes the smallest block that gives key (about a second of "
    "data), whose finite-key cost makes the rate several times lower than for the 10 s blocks of `labqfl run` "
    "(README); a larger Block size gives more key per second.")

#: Width of the Live tab's control column [px] (a scroll bar is added beside it when the window is short).
LEFT_WIDTH = 280


def free_key_bits(pools: dict[str, int]) -> int:
    """A pair's free key for masks and ETSI delivery: its pools without ``auth``, the post-processing's own
    authentication key (the pre-shared secret and the blocks' refills), which nothing else draws. Review s38 user F9:
    the table's "Key pool" counted it, so a pair showed more key (134 kbit) than it had distilled (72 kbit)."""
    return sum(v for k, v in pools.items() if k != "auth")


class LivePanel(QWidget):
    """Acquisition and distillation controls, four live plots and a per-pair table."""

    PAIR_COLS = ["Pair", "Sifted", "Next block", "QBER X (key)", "Y test (clicks)", "Blocks", "Final key",
                 "Key rate", "Free key", "Dropped slots", "Last block"]

    def __init__(self, ctl: Controller) -> None:
        super().__init__()
        self.ctl = ctl
        cfg = ctl.config
        self.pairs = [f"{a}-{b}" for a, b in cfg.pairs()]
        self.detectors = list(cfg.detectors)
        self._pools: dict[str, dict[str, int]] = {}
        #: per pair, the provenance of the blocks in Ci's key store (None until the stores are read)
        self._pool_provenance: dict[str, dict[str, Any]] | None = None
        self._pairs_data: dict[str, dict[str, Any]] = {}
        self._dropped: dict[str, int] = {}  # the distiller's slotting counters by cause (dropped_counts)
        self._frames_lost: dict[str, int] | None = None  # per streaming client, frames it did not play

        # -- controls -------------------------------------------------------------------------------
        left_w = self._build_controls()
        # -- plots ----------------------------------------------------------------------------------
        plots_w = self._build_plots()
        self._build_pair_table()

        split = QSplitter(Qt.Orientation.Vertical)
        split.addWidget(plots_w)
        split.addWidget(self.table)
        split.setStretchFactor(0, 4)
        split.setStretchFactor(1, 1)
        split.setSizes([620, 230])

        lay = QHBoxLayout(self)
        lay.addWidget(left_w)
        lay.addWidget(split, 1)

        ctl.countRates.connect(self._on_rates)
        ctl.pairMetrics.connect(self._on_pairs)
        ctl.keyPools.connect(self._on_pools)
        ctl.keyProvenance.connect(self._on_pool_provenance)
        ctl.acquisitionStatus.connect(self._on_acq_status)
        ctl.busyChanged.connect(self._update_buttons)
        ctl.connectedChanged.connect(self._update_buttons)
        ctl.stationInfo.connect(self._on_info)
        self._distill_ok, self._distill_why = ctl.core.distill_available()
        self._update_buttons()

    def _build_acquisition_box(self) -> QGroupBox:
        """Start/stop of the acquisition, with the arm-on-start choice and its status line."""
        acq = QGroupBox("Acquisition")
        self.acq_start = QPushButton("▶ Start")
        self.acq_stop = QPushButton("■ Stop")
        self.arm_box = QCheckBox("Arm instruments on start")
        self.arm_box.setChecked(True)
        self.arm_box.setToolTip("Laser on, detectors armed, modulators on, shutters open before streaming")
        self.acq_status = QLabel("idle")
        self.acq_status.setWordWrap(True)
        al = QGridLayout(acq)
        al.addWidget(self.acq_start, 0, 0)
        al.addWidget(self.acq_stop, 0, 1)
        al.addWidget(self.arm_box, 1, 0, 1, 2)
        al.addWidget(self.acq_status, 2, 0, 1, 2)
        self.acq_start.clicked.connect(lambda: self.ctl.start_acquisition(arm=self.arm_box.isChecked()))
        self.acq_stop.clicked.connect(self.ctl.stop_acquisition)
        self.acq_stop.setToolTip("Stop streaming; every instrument goes to its safe state")
        return acq

    def _build_distillation_box(self) -> QGroupBox:
        """Block size, error-correction engine, start/stop of the distillation and its status line."""
        dist = QGroupBox("Distillation")
        self.block_bits = QSpinBox()
        self.block_bits.setRange(0, 100_000_000)
        self.block_bits.setSingleStep(10_000)
        self.block_bits.setSpecialValueText("auto (key-rate rule)")
        self.block_bits.setValue(0)
        self.block_bits.setSuffix(" bit")
        self.block_bits.setToolTip("Sifted bits per key block and pair (finite-key block size). auto: the block-size "
                                   "rule picks the smallest blocks expected to give key with a margin; smaller manual "
                                   "blocks show QBER and abort reasons.")
        self.block_bits.setMinimumWidth(self.block_bits.sizeHint().width())  # its whole special text
        self.engine = QComboBox()
        self.engine.addItems(list(ENGINES))
        self.dist_start = QPushButton("▶ Start")
        self.dist_stop = QPushButton("■ Stop")
        self.dist_status = QLabel("idle")
        self.dist_status.setWordWrap(True)
        dl = QFormLayout(dist)
        # a field wider than the column goes below its label instead of being clipped ("ıto (key-rate rule)")
        dl.setRowWrapPolicy(QFormLayout.RowWrapPolicy.WrapLongRows)
        dl.addRow("Block size", self.block_bits)
        dl.addRow("Error correction", self.engine)
        row = QHBoxLayout()
        row.addWidget(self.dist_start)
        row.addWidget(self.dist_stop)
        dl.addRow(row)
        dl.addRow(self.dist_status)
        self.dist_start.clicked.connect(self._start_distillation)
        self.dist_stop.clicked.connect(self.ctl.stop_distillation)
        self.dist_stop.setToolTip("Stop distilling at the end of the current stage: a key block in progress is "
                                  "abandoned at both ends (nothing of it stored); the acquisition goes on")
        return dist

    def _build_dropped_box(self) -> QGroupBox:
        """Dropped slots of this acquisition by cause (docs/postprocessing.md "Lost data"), "—" until counted."""
        box = QGroupBox("Dropped slots")
        box.setToolTip("Slots inside the tagger's overflow or missed-event intervals, in frames without a valid "
                       "marker and in frames a client did not play are dropped: never announced or sifted, "
                       "counted in the pair's slots as sent without a click. Per pair: the table's "
                       "'Dropped slots' column.")
        self.dropped_lost = QLabel("—")
        self.dropped_lost.setToolTip("The time tagger's overflow and missed-event intervals, tag blocks flagged "
                                     "overflow, and the slots they dropped")
        self.dropped_sync = QLabel("—")
        self.dropped_frames = QLabel("—")
        fl = QFormLayout(box)
        for name, lab in (("Tagger lost data", self.dropped_lost), ("Markers", self.dropped_sync),
                          ("Not played", self.dropped_frames)):
            lab.setWordWrap(True)
            fl.addRow(name, lab)
        return box

    def dropped_text(self) -> str:
        """What the "Dropped slots" box shows, one line per cause."""
        return "\n".join(lab.text() for lab in (self.dropped_lost, self.dropped_sync, self.dropped_frames))

    def _show_dropped(self) -> None:
        d = self._dropped
        if d:
            self.dropped_lost.setText(f"{d['lost_intervals']:,} intervals, "
                                      f"{d['overflow_blocks']:,} overflow blocks → {d['dropped_slots_lost_data']:,} slots")
            self.dropped_sync.setText(f"{d['missing_markers']:,} missing, {d['spurious_markers']:,} duplicated/stray "
                                      f"→ {d['dropped_slots_sync']:,} slots")
        if self._frames_lost is not None:
            self.dropped_frames.setText(" · ".join(f"{c} {n:,}" for c, n in sorted(self._frames_lost.items()))
                                        + " frames" if self._frames_lost else "0 frames (no client streams)")

    def _build_controls(self) -> QScrollArea:
        """The left column: acquisition and distillation controls, dropped slots, the pair colour legend and a note."""
        acq = self._build_acquisition_box()
        dist = self._build_distillation_box()
        dropped = self._build_dropped_box()
        note = QLabel(LIVE_NOTE)
        note.setWordWrap(True)
        note.setStyleSheet("color: #555")

        legend = QGroupBox("Pairs")
        lg = QGridLayout(legend)
        for i, p in enumerate(self.pairs):
            sw = QLabel(f"<span style='color:{plots.colour(i)}; font-size:14pt'>━━</span> {p}")
            lg.addWidget(sw, i // 2, i % 2)

        left = QVBoxLayout()
        left.addWidget(acq)
        left.addWidget(dist)
        left.addWidget(dropped)
        left.addWidget(legend)
        left.addWidget(note)
        left.addStretch(1)
        left_w = QWidget()
        left_w.setLayout(left)
        # scrolls when the window is short (at the window's minimum size the boxes were squashed into
        # each other) instead of clipping its rows
        scroll = QScrollArea()
        scroll.setWidget(left_w)
        scroll.setWidgetResizable(True)
        scroll.setFrameShape(QFrame.Shape.NoFrame)
        scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        scroll.setFixedWidth(LEFT_WIDTH + scroll.verticalScrollBar().sizeHint().width())
        left_w.setFixedWidth(LEFT_WIDTH)
        self.controls_scroll = scroll
        return scroll

    def _build_plots(self) -> QWidget:
        """The four live plots (count rates, QBER, key rate, key pools) and the key-provenance line."""
        self.rate_plot = plots.make_plot("Count rate per detector", "rate", "Hz")
        self.rate_series = {d: plots.Series(self.rate_plot.plot(name=d, pen=plots.pen(i))) for i, d in enumerate(self.detectors)}
        self.qber_plot = plots.make_plot(ERROR_RATE_TITLE, "error rate", "%", legend=False)
        self.qber_plot.getPlotItem().getAxis("left").enableAutoSIPrefix(False)
        self.qber_x = {p: plots.Series(plots.MarkedCurve(self.qber_plot, plots.pen(i), plots.colour(i), name=p))
                       for i, p in enumerate(self.pairs)}
        self.qber_y = {p: plots.Series(self.qber_plot.plot(pen=plots.pen(i, dashed=True, width=1.5)))
                       for i, p in enumerate(self.pairs)}
        self.rate_key_plot = plots.make_plot("Secure key rate per pair", "rate", "bit/s", legend=False)
        self.rate_key_plot.getPlotItem().setYRange(0, 1)
        self.rate_zero = pg.TextItem("no block distilled yet", color="#777", anchor=(0.5, 0.5))
        self.rate_key_plot.addItem(self.rate_zero)
        self.rate_zero.setPos(0.5, 0.5)
        self.key_rate = {p: plots.Series(self.rate_key_plot.plot(name=p, pen=plots.pen(i))) for i, p in enumerate(self.pairs)}
        self.pool_plot = plots.make_plot("Key pools (free bits in the key stores)", "free key", "bit",
                                         bottom="", bottom_units=None, legend=True, legend_right=True)
        plots.category_axis(self.pool_plot, self.pairs)
        self.pool_plot.getPlotItem().setXRange(-0.6, len(self.pairs) - 0.4)
        self.pool_plot.getPlotItem().setMouseEnabled(x=False, y=False)
        self._pool_bars: list[pg.BarGraphItem] = []
        self.pool_empty = pg.TextItem("no key in the key stores yet", color="#777", anchor=(0.5, 0.5))
        self.pool_empty.setToolTip("distil with blocks large enough for a positive finite-key length")
        self.pool_plot.addItem(self.pool_empty)
        self.pool_empty.setPos((len(self.pairs) - 1) / 2, 0.5)
        self.pool_plot.getPlotItem().setYRange(0, 1)
        self.pool_plot.getPlotItem().vb.sigResized.connect(self._fit_pool_range)
        #: what the pooled keys rest on: the stored blocks' provenance (labqfl.provenance), read with the pools
        self.provenance_label = QLabel(pool_provenance_text(self.ctl.config, None))
        self.provenance_label.setWordWrap(True)
        self.provenance_label.setToolTip("Physical layer (simulated/hardware) and the clients' randomness "
                                         "(qrng/csprng/seeded) recorded in every key block of the pools, counted "
                                         "per pair from Ci's key store (every block it holds or held), and what "
                                         "the weakest rests on; `labqfl keys status` shows the same.")

        grid = QGridLayout()
        grid.addWidget(self.rate_plot, 0, 0)
        grid.addWidget(self.qber_plot, 0, 1)
        grid.addWidget(self.rate_key_plot, 1, 0)
        grid.addWidget(self.pool_plot, 1, 1)
        self.block_note = QLabel(BLOCK_RATE_NOTE)
        self.block_note.setWordWrap(True)
        self.block_note.setStyleSheet("color: #555")
        grid.addWidget(self.block_note, 2, 0, 1, 2)
        grid.addWidget(self.provenance_label, 3, 0, 1, 2)
        plots_w = QWidget()
        plots_w.setLayout(grid)
        return plots_w

    def _build_pair_table(self) -> None:
        """The per-pair table, one row per pair, every cell "—" until the first metrics arrive."""
        self.table = read_only_table(self.PAIR_COLS)
        self.table.setRowCount(len(self.pairs))
        for r, p in enumerate(self.pairs):
            self.table.setItem(r, 0, table_item(p))
            for c in range(1, len(self.PAIR_COLS)):
                self.table.setItem(r, c, table_item("—", align_right=c < len(self.PAIR_COLS) - 1))
        self.table.setMinimumHeight(60)

    def _start_distillation(self) -> None:
        self.ctl.start_distillation(self.block_bits.value() or None, self.engine.currentText())

    def _on_pool_provenance(self, provenance: dict[str, dict[str, Any]]) -> None:
        self._pool_provenance = provenance
        self._show_provenance()

    def _show_provenance(self) -> None:
        self.provenance_label.setText(pool_provenance_text(self.ctl.config, self._pool_provenance))
        self.provenance_label.setStyleSheet(f"color: {ERR_COLOUR.name()}" if pool_not_secret(self._pool_provenance)
                                            else "")

    def _on_info(self, info: dict[str, Any]) -> None:
        self._show_provenance()
        self._distill_ok = bool(info.get("distill_available", True))
        self._distill_why = info.get("distill_reason", "")
        self._update_buttons()

    def _update_buttons(self, *_: Any) -> None:
        b = self.ctl.busy
        conn = self.ctl.connected
        acq, dist, cal = b.get("acquisition"), b.get("distillation"), b.get("calibration")
        self.acq_start.setEnabled(conn and not acq and not cal)
        self.acq_stop.setEnabled(bool(acq))
        self.dist_start.setEnabled(conn and not dist and not cal and self._distill_ok)
        self.dist_stop.setEnabled(bool(dist))
        self.block_bits.setEnabled(not dist)
        self.engine.setEnabled(not dist)
        if not self._distill_ok:
            self.dist_start.setToolTip(self._distill_why)
        elif not conn:
            self.dist_start.setToolTip("connect the station first")
        elif cal:
            self.dist_start.setToolTip("a calibration is running")
        else:
            self.dist_start.setToolTip("Start acquisition (if needed) with the post-processing pipeline attached; "
                                       "keys go to the nodes' key stores")
        tip = "connect the station first" if not conn else ("a calibration is running" if cal else "Stream time tags")
        self.acq_start.setToolTip(tip)
        if not acq:
            self.acq_status.setText(self.acq_status.text().replace("running", "stopped") if self.acq_status.text() != "idle" else "idle")
        self.dist_status.setText("running" if dist else ("idle" if self._distill_ok else "unavailable: " + self._distill_why))

    def _on_acq_status(self, s: dict[str, Any]) -> None:
        running = self.ctl.busy.get("acquisition")
        speed = s["t_s"] / s["wall_s"] if s.get("wall_s") else 0.0
        self.acq_status.setText(f"{'running' if running else 'stopped'} · {s['t_s']:.2f} s of data · "
                                f"{s['tags']:,} tags · {speed:.2f}× real time")
        if "frames_lost" in s:
            self._frames_lost = dict(s["frames_lost"])
            self._show_dropped()

    def _on_rates(self, points: list[tuple[float, dict[str, float]]]) -> None:
        for t, rates in points:
            for d, s in self.rate_series.items():
                s.append(t, rates.get(d))
        for s in self.rate_series.values():
            s.flush()
        top = max((max(s.y) for s in self.rate_series.values() if s.y), default=0.0)
        if top > 0:  # from zero, with headroom for the legend
            self.rate_plot.getPlotItem().setYRange(0, 1.3 * top, padding=0)

    def pair_metrics(self) -> dict[str, dict[str, Any]]:
        """The latest per-pair numbers shown in the table (see :func:`labqfl.gui.core.pair_metrics`)."""
        return {p: dict(m) for p, m in self._pairs_data.items()}

    def _on_pairs(self, snap: dict[str, Any]) -> None:
        t = snap["t_s"]
        if not snap.get("final") and self.ctl.busy.get("distillation"):
            self.dist_status.setText(first_key_text(snap["pairs"]))
        for r, p in enumerate(self.pairs):
            m = snap["pairs"].get(p)
            if m is None:
                continue
            self._pairs_data[p] = m
            sx = self.qber_x[p]
            if m["qber_x"] is not None and m["blocks"] and (not sx.t or m["blocks"] > getattr(sx, "_blocks", 0) or t < sx.t[-1]):
                sx.append(t, 100 * m["qber_x"])
                sx._blocks = m["blocks"]  # type: ignore[attr-defined]
            y_clicks = m.get("qber_y_clicks")  # a Y test point from fewer than MIN_TEST_CLICKS clicks: a gap
            self.qber_y[p].append(t, None if m["qber_y"] is None or (y_clicks is not None and y_clicks < MIN_TEST_CLICKS)
                                  else 100 * m["qber_y"])
            self.key_rate[p].append(t, m["key_rate_bps"])
            vals = [f"{m['sifted_bits']:,}", f"{100 * m['block_fill']:.0f} %", fmt_pct(m["qber_x"]),
                    rate_clicks_cell(m["qber_y"], y_clicks), f"{m['blocks']} ({m['aborted_blocks']} aborted)" if m["blocks"] else "0",
                    fmt_bits(m["final_key_bits"]), fmt_kbps(m["key_rate_bps"]),
                    fmt_bits(free_key_bits(self._pools.get(p, {}))), f"{m.get('dropped_slots', 0):,}",
                    ("aborted: " + m["last_abort"]) if m["last_abort"] else ("key delivered" if m["blocks"] else "—")]
            for c, v in enumerate(vals, start=1):
                it = self.table.item(r, c)
                it.setText(v)
                if c == len(vals):
                    it.setToolTip(m["last_abort"])
                    it.setForeground(QBrush(ERR_COLOUR if m["last_abort"] else OK_COLOUR))
        for s in (*self.qber_x.values(), *self.qber_y.values(), *self.key_rate.values()):
            s.flush()
        self._scale_key_rate()
        if snap.get("dropped"):
            self._dropped = dict(snap["dropped"])
            self._show_dropped()

    def _scale_key_rate(self) -> None:
        top = max((max(s.y) for s in self.key_rate.values() if s.y), default=0.0)
        t_max = max((s.t[-1] for s in self.key_rate.values() if s.t), default=1.0)
        item = self.rate_key_plot.getPlotItem()
        item.setYRange(0, top * 1.15 if top > 0 else 1.0, padding=0)
        self.rate_zero.setText(self.key_rate_note(top))
        self.rate_zero.setPos(t_max / 2, 0.5)
        self.rate_zero.setVisible(bool(self.rate_zero.toPlainText()))

    def key_rate_note(self, top: float) -> str:
        """The key-rate plot's note while it shows no key: none distilled yet, or every block too small."""
        if top > 0:
            return ""
        if not any(m.get("blocks") for m in self._pairs_data.values()):
            return "no block distilled yet"
        return ("no secret key yet: every block so far was too small for a\n"
                "positive finite-key length (see 'Last block' below)")

    def _fit_pool_range(self, *_: Any) -> None:
        """The key-pool bars' y range with room above the tallest bar for the legend (its height in
        pixels, whatever the plot's size: the legend sat on the tallest bars)."""
        item = self.pool_plot.getPlotItem()
        top = getattr(self, "_pool_top", 0.0)
        if top <= 0:
            item.setYRange(0, 1.0, padding=0)
            return
        h = item.vb.height()
        legend = item.legend
        lh = legend.boundingRect().height() + 16 if legend is not None and legend.isVisible() else 0.0
        frac = min(0.5, lh / h) if h > 0 else 0.3
        item.setYRange(0, top * 1.05 / (1.0 - frac), padding=0)

    def _on_pools(self, pools: dict[str, dict[str, int]]) -> None:
        self._pools = pools
        for b in self._pool_bars:
            self.pool_plot.removeItem(b)
        self._pool_bars.clear()
        pool_names = ["auth", "fl", "etsi", "general"]
        x = np.arange(len(self.pairs), dtype=float)
        base = np.zeros(len(self.pairs))
        total = 0
        for i, pool in enumerate(pool_names):
            h = np.array([pools.get(p, {}).get(pool, 0) for p in self.pairs], dtype=float)
            if not h.any():
                continue
            bar = pg.BarGraphItem(x=x, height=h, y0=base.copy(), width=0.6, brush=plots.colour(i + 4), pen=None, name=pool)
            self.pool_plot.addItem(bar)
            self._pool_bars.append(bar)
            base += h
            total += int(h.sum())
        self.pool_empty.setVisible(total == 0)
        self._pool_top = float(base.max()) if len(base) else 0.0
        self._fit_pool_range()
        col = self.PAIR_COLS.index("Free key")
        for r, p in enumerate(self.pairs):
            it = self.table.item(r, col)
            it.setText(fmt_bits(free_key_bits(pools.get(p, {}))))
            it.setToolTip(f"free key for masks and ETSI delivery; the authentication pool holds "
                          f"{fmt_bits(pools.get(p, {}).get('auth', 0))} more (the key-pool plot's 'auth')"),
