"""The Training panel: task and secure-aggregation options, training progress and accuracy.

Built from a :class:`~labqfl.gui.controller.Controller`; no panel touches an instrument."""

from __future__ import annotations

from typing import Any

import numpy as np
import pyqtgraph as pg
from labqfl.gui import plots
from labqfl.gui.controller import Controller
from labqfl.gui.core import TrainingOptions
from labqfl.gui.panels._common import ERR_COLOUR, OK_COLOUR, fmt_bits, read_only_table, table_item
from PySide6.QtCore import Qt
from PySide6.QtGui import QBrush
from PySide6.QtWidgets import (
    QComboBox,
    QFormLayout,
    QGridLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QProgressBar,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)


def key_plot_title(keys: str) -> str:
    """The key plot's title for mask keys ``keys``: CSPRNG masks use no QKD key (review s36 F18)."""
    return ("Key consumption (QKD mask key, all pairs)" if keys == "qkd"
            else "Mask bits drawn (CSPRNG masks, no QKD key used; all pairs)")


def bits_text(keys: str, bits: int) -> str:
    """``bits`` of a round as the status line says them: QKD key, or CSPRNG mask bits (review s36 F18)."""
    return f"{fmt_bits(bits)} {'key' if keys == 'qkd' else 'CSPRNG mask bits'}"


def used_text(keys: str, bits: int) -> str:
    """A finished run's bits: "key used …" with QKD keys; CSPRNG masks say no QKD key was used (review s36 F18)."""
    return f"key used {fmt_bits(bits)}" if keys == "qkd" else f"CSPRNG mask bits {fmt_bits(bits)} (no QKD key used)"


class TrainingPanel(QWidget):
    """Federated training: options, accuracy and loss per round, key consumption, clients."""

    def __init__(self, ctl: Controller) -> None:
        super().__init__()
        self.ctl = ctl
        left_w = self._build_controls()
        grid = self._build_plots()

        lay = QHBoxLayout(self)
        lay.addWidget(left_w)
        lay.addLayout(grid, 1)

        self._rounds: list[dict[str, Any]] = []
        self._initial: tuple[float, float] | None = None
        self._last_avail: dict[str, int] = {}
        #: free key bits per pair and pool in the key stores (None until the controller reports them)
        self._pools: dict[str, dict[str, int]] | None = None
        #: per pair, the provenance of the blocks in the key stores (the Live tab's, None until read)
        self._pool_provenance: dict[str, dict[str, Any]] | None = None
        #: the statement of the run shown (None: no run yet; the mask keys chosen are described instead)
        self._run_security: str | None = None
        #: the mask keys of the run shown ("qkd" | "csprng"): what its bits are called (review s36 F18)
        self._run_keys = self.keys.currentText()
        ctl.trainingStarted.connect(self._on_started)
        ctl.trainingRound.connect(self._on_round)
        ctl.trainingFinished.connect(self._on_finished)
        ctl.busyChanged.connect(self._update)
        ctl.progress.connect(self._on_progress)
        ctl.keyPools.connect(self._on_pools)
        ctl.keyProvenance.connect(self._on_pool_provenance)
        self.keys.currentTextChanged.connect(self._on_keys_changed)
        self.clients.valueChanged.connect(self._update)
        self._update()
        self._show_security()

    def _on_keys_changed(self, keys: str) -> None:
        if keys == "qkd":
            self.ctl.refresh_pools()  # read on the core's station thread; keyPools calls _update
        self._run_security = None  # describe the keys now chosen
        self._show_security()
        self._update()

    def _on_pools(self, pools: dict[str, dict[str, int]]) -> None:
        self._pools = pools
        self._update()

    def _on_pool_provenance(self, provenance: dict[str, dict[str, Any]]) -> None:
        self._pool_provenance = provenance
        self._show_security()

    def security_text(self) -> str:
        """What the masks rest on: a run's ``security`` statement (:meth:`labqfl.app.training.TrainingSetup.summary`,
        as ``labqfl train --json``; at its start, over the keys it may draw from) once one started, else
        what the mask keys chosen would rest on."""
        if self._run_security is not None:
            return f"Masks of this run: {self._run_security}"
        from labqfl.provenance import CSPRNG_MASKS, weakest_summary

        if self.keys.currentText() != "qkd":
            return f"Masks with the keys chosen: {CSPRNG_MASKS}"
        w = weakest_summary(sm for sm in (self._pool_provenance or {}).values()
                            if sm.get("blocks") or sm.get("unrecorded_blocks"))
        if w is None:
            return "Masks with the keys chosen: one-time pads with QKD keys from the key stores, which hold no key block yet"
        return ("Masks with the keys chosen: one-time pads with QKD keys from the key stores; the weakest pair's "
                f"stored blocks: {w['security']}")

    def _show_security(self) -> None:
        self.security.setText(self.security_text())

    def missing_keys(self) -> list[str]:
        """The pairs of the training's clients with no free key in the key stores (empty while the
        pools are unknown: the worker checks the stores itself)."""
        if self._pools is None:
            return []
        names = [f"C{i + 1}" for i in range(self.clients.value())]
        pairs = [f"{a}-{b}" for i, a in enumerate(names) for b in names[i + 1:]]
        return [p for p in pairs if sum(self._pools.get(p, {}).values()) <= 0]

    def _build_options_box(self) -> QGroupBox:
        """Task, clients, rounds, bits per parameter, mask keys and seed; start/stop, progress and status."""
        n_clients = len(self.ctl.config.clients)
        box = QGroupBox("Federated training")
        self.task = QComboBox()
        self.task.addItems(["mnist-qnn", "ntangled", "magic", "mnist-lenet5"])
        self.clients = QSpinBox()
        self.clients.setRange(2, 64)
        self.clients.setValue(n_clients)
        self.rounds = QSpinBox()
        self.rounds.setRange(1, 1000)
        self.rounds.setValue(10)
        self.q = QComboBox()
        self.q.addItems(["8", "16", "32"])
        self.keys = QComboBox()
        self.keys.addItems(["csprng", "qkd"])
        self.keys.setItemData(0, "AES-CTR masks from the OS CSPRNG (stand-in for QKD keys)", Qt.ItemDataRole.ToolTipRole)
        self.keys.setItemData(1, "one-time-pad masks from the nodes' QKD key stores (needs distilled key)",
                              Qt.ItemDataRole.ToolTipRole)
        self.seed = QSpinBox()
        self.seed.setRange(0, 2**31 - 1)
        form = QFormLayout(box)
        form.addRow("Task", self.task)
        form.addRow("Clients", self.clients)
        form.addRow("Rounds", self.rounds)
        form.addRow("Bits per parameter q", self.q)
        form.addRow("Mask keys", self.keys)
        form.addRow("Seed", self.seed)
        self.start_btn = QPushButton("▶ Start training")
        self.stop_btn = QPushButton("■ Stop")
        self.stop_btn.setToolTip("Stop after the current round")
        row = QHBoxLayout()
        row.addWidget(self.start_btn)
        row.addWidget(self.stop_btn)
        form.addRow(row)
        self.progress = QProgressBar()
        self.progress.setRange(0, 100)
        self.progress.setValue(0)
        self.status = QLabel("idle")
        self.status.setWordWrap(True)
        form.addRow(self.progress)
        form.addRow(self.status)
        self.start_btn.clicked.connect(self._start)
        self.stop_btn.clicked.connect(self.ctl.stop_training)
        return box

    def _build_controls(self) -> QWidget:
        """The left column: the options box and the summary of the last run."""
        box = self._build_options_box()
        self.summary = QLabel("")
        self.summary.setWordWrap(True)
        self.summary.setStyleSheet("color: #333")
        self.security = QLabel("")
        self.security.setWordWrap(True)
        self.security.setToolTip("What the secure-aggregation masks rest on: the `security` statement of "
                                 "`labqfl train --json` (labqfl.provenance)")
        left = QVBoxLayout()
        left.addWidget(box)
        left.addWidget(self.summary)
        left.addWidget(self.security)
        left.addStretch(1)
        left_w = QWidget()
        left_w.setLayout(left)
        left_w.setFixedWidth(300)
        return left_w

    def _build_plots(self) -> QGridLayout:
        """Accuracy, loss and key-consumption plots and the clients table."""
        self.acc_plot = plots.make_plot("Test accuracy per round", "accuracy", "%", bottom="round", bottom_units=None, legend=False)
        self.acc_plot.getPlotItem().getAxis("left").enableAutoSIPrefix(False)
        self.acc_plot.getPlotItem().setYRange(0, 100, padding=0.02)  # accuracy in %, empty or not
        self.acc_curve = plots.MarkedCurve(self.acc_plot, plots.pen(0), plots.colour(0), size=6)
        self.loss_plot = plots.make_plot("Loss per round", "loss", None, bottom="round", bottom_units=None)
        self.loss_plot.getPlotItem().getAxis("left").enableAutoSIPrefix(False)
        self.test_loss_curve = plots.MarkedCurve(self.loss_plot, plots.pen(1), plots.colour(1), size=6, name="test")
        self.train_loss_curve = self.loss_plot.plot(name="train (clients' mean)", pen=plots.pen(2, dashed=True))
        self.key_plot = plots.make_plot(key_plot_title(self.keys.currentText()), "key", "bit", bottom="round",
                                        bottom_units=None)
        self.key_bars = pg.BarGraphItem(x=[], height=[], width=0.6, brush=plots.colour(4), pen=None, name="per round")
        self.key_plot.addItem(self.key_bars)
        self.key_cum = plots.MarkedCurve(self.key_plot, plots.pen(3), plots.colour(3), symbol="s", name="cumulative")
        self.clients_table = read_only_table(["Client", "Samples", "Status", "Round", "Update ‖Δ‖", "FedAvg weight"])

        grid = QGridLayout()
        grid.addWidget(self.acc_plot, 0, 0)
        grid.addWidget(self.loss_plot, 0, 1)
        grid.addWidget(self.key_plot, 1, 0)
        cl = QVBoxLayout()
        cl.addWidget(QLabel("<b>Clients</b>"))
        cl.addWidget(self.clients_table)
        cw = QWidget()
        cw.setLayout(cl)
        grid.addWidget(cw, 1, 1)
        return grid

    def options(self) -> TrainingOptions:
        return TrainingOptions(task=self.task.currentText(), clients=self.clients.value(), rounds=self.rounds.value(),
                               q=int(self.q.currentText()), keys=self.keys.currentText(), seed=self.seed.value())

    def _start(self) -> None:
        self.start_btn.setEnabled(False)  # at once: a double click's second click was refused with a dialog
        self.ctl.start_training(self.options())
        if not self.ctl.core.busy("training"):  # refused (its error is on the way): the button back
            self._update()

    def _update(self, *_: Any) -> None:
        running = bool(self.ctl.busy.get("training"))
        missing = self.missing_keys() if self.keys.currentText() == "qkd" else []
        self.start_btn.setEnabled(not running and not missing)
        if running:
            self.start_btn.setToolTip("training is running")
        elif missing:
            shown = ", ".join(missing[:4]) + (f" and {len(missing) - 4} more" if len(missing) > 4 else "")
            self.start_btn.setToolTip(f"no QKD key in the key stores for {shown}: distil keys first "
                                      "(Live tab ▸ Distillation ▸ Start) or choose mask keys csprng")
        else:
            self.start_btn.setToolTip("train with the options above")
        self.stop_btn.setEnabled(running)
        for w in (self.task, self.clients, self.rounds, self.q, self.keys, self.seed):
            w.setEnabled(not running)
        if not running and self.progress.maximum() == 0:  # no busy stripes once nothing runs
            self.progress.setRange(0, 100)
            self.progress.setValue(0)

    def _on_progress(self, task: str, frac: float, msg: str) -> None:
        if task != "training":
            return
        if frac < 0:
            self.progress.setRange(0, 0)
        else:
            self.progress.setRange(0, 100)
            self.progress.setValue(int(round(100 * frac)))
        self.status.setText(msg)
        self.status.setStyleSheet(f"color: {ERR_COLOUR.name()}" if msg.startswith("failed") else "")

    def _on_started(self, info: dict[str, Any]) -> None:
        self._rounds.clear()
        self._last_avail = {}
        self.acc_curve.setData([], [])
        self.test_loss_curve.setData([], [])
        self.train_loss_curve.setData([], [])
        self.key_cum.setData([], [])
        self.key_bars.setOpts(x=[], height=[])
        self._run_keys = str(info["keys"])
        plots.set_title(self.key_plot, key_plot_title(self._run_keys))
        self.key_plot.getPlotItem().setLabel("left", "key" if self._run_keys == "qkd" else "mask bits", units="bit")
        self.summary.setText(f"<b>{info['task']}</b> · model {info['model']} ({info['n_params']} parameters) · "
                             f"q = {info['q']} · keys: {info['keys']} · {len(info['pairs'])} key pairs")
        self._run_security = info.get("security")
        self._show_security()
        cl = info["clients"]
        self.clients_table.setRowCount(len(cl))
        for r, (c, v) in enumerate(cl.items()):
            for col, text in enumerate([c, str(v["samples"]), "training", "—", "—", "—"]):
                self.clients_table.setItem(r, col, table_item(text, align_right=col in (1, 3, 4, 5)))

    def _on_round(self, d: dict[str, Any]) -> None:
        m = d["metrics"]
        self._rounds.append(m)
        r = np.array([x["round"] for x in self._rounds], dtype=float)
        self.acc_curve.setData(r, [100 * x["test_accuracy"] for x in self._rounds])
        self.test_loss_curve.setData(r, [x["test_loss"] for x in self._rounds])
        self.train_loss_curve.setData(r, [x["train_loss"] for x in self._rounds])
        self.key_bars.setOpts(x=r, height=[x["key_bits_total"] for x in self._rounds], width=0.6)
        self.key_cum.setData(r, [x["key_bits_cumulative"] for x in self._rounds])
        self.key_plot.getPlotItem().setYRange(0, 1.3 * max(x["key_bits_cumulative"] for x in self._rounds), padding=0)
        for p in (self.acc_plot, self.loss_plot, self.key_plot):
            plots.integer_ticks(p, len(self._rounds))
        rows = {self.clients_table.item(i, 0).text(): i for i in range(self.clients_table.rowCount())}
        for c, v in d["clients"].items():
            i = rows.get(c)
            if i is None:
                continue
            vals = [c, str(v["samples"]), v["status"], str(v["round"]), f"{v['update_norm']:.3g}", f"{v['weight']:.3f}"]
            for col, text in enumerate(vals):
                it = self.clients_table.item(i, col)
                it.setText(text)
                if col == 2:
                    it.setForeground(QBrush(OK_COLOUR if text == "aggregated" else ERR_COLOUR))
        avail = d.get("available_bits") or {}
        self._last_avail = dict(avail)
        extra = f" · key left (min over pairs) {fmt_bits(min(avail.values()))}" if avail else ""
        self.status.setText(f"round {m['round']}: accuracy {100 * m['test_accuracy']:.1f} %, test loss {m['test_loss']:.4f}, "
                            f"{bits_text(self._run_keys, m['key_bits_per_pair'])} per pair{extra}")

    def _on_finished(self, s: dict[str, Any]) -> None:
        if s.get("security"):
            self._run_security = str(s["security"])
            self._show_security()
        if s.get("stopped"):
            self.status.setText("stopped by the user" + (f" after round {self._rounds[-1]['round']}" if self._rounds else ""))
            return
        left = (f" · key left (min over pairs) {fmt_bits(min(self._last_avail.values()))}"
                if self._last_avail else "")
        self.status.setText(f"finished: accuracy {100 * s['final_test_accuracy']:.1f} % "
                            f"(from {100 * s['initial_test_accuracy']:.1f} %), {used_text(self._run_keys, s['key_bits_total'])}"
                            + left)

    @property
    def rounds_shown(self) -> int:
        return len(self._rounds)
