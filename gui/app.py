"""Entry points of the GUI: :func:`run_gui` (interactive) and :func:`screenshot` (headless).

``labqfl gui`` calls these (see :mod:`labqfl.cli.gui`). Qt is imported lazily so importing this
module is cheap; :func:`screenshot` selects the ``offscreen`` platform when none is set. Both
refuse to start on a Qt binding that corrupts the interpreter (:mod:`labqfl.gui.binding`), and
both end the way a user ends a session — by closing the window — and then check that every
worker thread has stopped.
"""

from __future__ import annotations

import os
import signal
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from labqfl.config import StationConfig, load_station_config
from labqfl.contracts.types import DEFAULT_ENGINE
from labqfl.log import get_logger

log = get_logger("labqfl.gui")

#: Calibration procedures tried first for the calibration screenshot (cheap ones).
PREFERRED_CALIBRATIONS = ("vpi", "delays", "visibility", "detector")
#: Longest wait for the window to close (jobs stopped, instruments safe, station closed) [s].
CLOSE_TIMEOUT_S = 90.0
#: Longest wait, once the window has closed, for the last worker threads to end [s].
THREAD_EXIT_WAIT_S = 10.0
#: Longest wait for the Nodes panel's set to open, and then for its acquisition's results [s].
NODES_TIMEOUT_S = 900.0


def _app() -> Any:
    """The QApplication, after checking the Qt binding (:func:`labqfl.gui.binding.check_binding`)."""
    from labqfl.gui.binding import check_binding
    from PySide6.QtWidgets import QApplication

    app = QApplication.instance()
    if app is None:
        app = QApplication(["labqfl"])
        app.setApplicationName("labqfl")
    check_binding()
    return app


def build(config: StationConfig | None = None, *, base_dir: Path | None = None, data_dir: Path | None = None,
          runs_dir: Path | None = None) -> tuple[Any, Any]:
    """A (controller, main window) pair; nothing is connected or started."""
    _app()
    from labqfl.gui.controller import Controller
    from labqfl.gui.main_window import MainWindow

    ctl = Controller(config, base_dir=base_dir, data_dir=data_dir, runs_dir=runs_dir)
    return ctl, MainWindow(ctl)


def run_gui(config_path: Path | None = None, *, data_dir: Path | None = None, runs_dir: Path | None = None,
            nodes: str | None = None, addresses: Path | None = None, certs: Path | None = None,
            duration: float | None = None) -> int:
    """Open the main window on the station of ``config_path`` (default: the simulated station),
    connect it, and run until the window is closed (instruments end in their safe state).

    ``nodes="local"``: open on the Nodes panel and start a local set of node processes of that
    station instead (the in-process station stays unconnected); ``nodes="connect"``: connect
    the panel to the running nodes of the ``addresses`` file with the operator's ``certs``
    folder. ``duration``: the panel's acquisition length [s]. Every node process the panel
    started must have exited with 0 when the window closed, or the exit code is 1."""
    cfg = load_station_config(config_path)
    app = _app()
    ctl, win = build(cfg, base_dir=config_path.resolve().parent if config_path else None,
                     data_dir=data_dir, runs_dir=runs_dir)
    win.show()
    from PySide6.QtCore import QTimer

    if nodes is not None:
        _open_nodes(win, config_path, nodes, addresses, certs, duration)
    else:
        QTimer.singleShot(0, ctl.connect_station)
    # Ctrl-C in the terminal closes the window cleanly (Python handlers need the loop to wake up)
    signal.signal(signal.SIGINT, lambda *_: win.close())
    wake = QTimer()
    wake.timeout.connect(lambda: None)
    wake.start(200)
    code = int(app.exec())
    wake.stop()
    alive = ctl.live_threads(wait_s=THREAD_EXIT_WAIT_S) + win.nodes_panel.live_threads(wait_s=THREAD_EXIT_WAIT_S)
    if alive:
        log.error("worker threads still running after the window closed: %s", ", ".join(alive))
        return code or 1
    bad = _unclean_nodes(win)
    if bad:
        log.error("%s", bad)
        return code or 1
    return code


def _open_nodes(win: Any, config_path: Path | None, nodes: str, addresses: Path | None, certs: Path | None,
                duration: float | None) -> None:
    """Show the Nodes panel, set it to ``nodes`` ("local" | "connect") and open the set (on the
    panel's worker thread, once the event loop runs)."""
    from PySide6.QtCore import QTimer

    panel = win.nodes_panel
    if nodes == "local":
        panel.set_local(config_path)  # proposes the block-size rule's duration for that station
    elif nodes == "connect" and addresses is not None and certs is not None:
        panel.set_connect(addresses, certs)
    else:
        raise ValueError(f"nodes must be 'local' or 'connect' (with addresses and certs), got {nodes!r}")
    if duration is not None:
        panel.duration.setValue(duration)
    win.show_tab("nodes")
    QTimer.singleShot(0, panel.open_set)


def _unclean_nodes(win: Any) -> str:
    """'' when every node process the Nodes panel started exited with 0, else one line naming them."""
    bad = {n: c for n, c in win.nodes_panel.runner.exit_codes.items() if c != 0}
    return ("node processes did not exit cleanly: " + ", ".join(f"{n} (exit code {c})" for n, c in bad.items())
            if bad else "")


def _close(app: Any, win: Any, ctl: Any, timeout_s: float = CLOSE_TIMEOUT_S,
           thread_wait_s: float = THREAD_EXIT_WAIT_S) -> list[str]:
    """Close ``win`` as a user does (every job stops and the instruments go to their safe state
    on a helper thread, then the window closes) and return what went wrong: empty when the
    window closed within ``timeout_s`` and no worker thread of ``ctl`` was left running
    ``thread_wait_s`` after that."""
    win.close()
    problems: list[str] = []
    if not _pump(app, timeout_s, lambda: not win.isVisible()):
        problems.append(f"the window did not close within {timeout_s:g} s")
    alive = ctl.live_threads(wait_s=thread_wait_s if not problems else 0.0)
    alive += win.nodes_panel.live_threads(wait_s=thread_wait_s if not problems else 0.0)
    if alive:
        problems.append(f"worker threads still running after the window closed: {', '.join(alive)}")
    if _unclean_nodes(win):
        problems.append(_unclean_nodes(win))
    return problems


def _pump(app: Any, seconds: float, until: Callable[[], bool] | None = None) -> bool:
    """Run the event loop for ``seconds`` or until ``until()`` is true; True if ``until`` held."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        app.processEvents()
        if until is not None and until():
            return True
        time.sleep(0.02)
    app.processEvents()
    return until() if until is not None else True


def screenshot(out: Path, *, config_path: Path | None = None, after_s: float = 10.0, tabs: list[str] | None = None,
               data_dir: Path | None = None, runs_dir: Path | None = None, training_rounds: int = 12,
               size: tuple[int, int] = (1440, 900), nodes: str | None = None, addresses: Path | None = None,
               certs: Path | None = None, duration: float | None = None) -> dict[str, Any]:
    """Headless run: connect the station, (run a calibration if the calibration tab is wanted),
    start acquisition with distillation (and training if the training tab is wanted), wait
    ``after_s`` seconds, save one PNG per tab, and close the window as a user would. Returns a
    JSON-ready report; raises ``RuntimeError`` if the window did not close or a worker thread
    was still running after it closed.

    One tab: the picture goes to ``out``; several: ``<out stem>_<tab><suffix>`` each. Keys and run
    folders go to a temporary folder unless ``data_dir`` / ``runs_dir`` are given.

    The nodes tab: the Nodes panel opens a set (``nodes``: "local", the default, or "connect" with
    ``addresses`` and ``certs``), runs one acquisition of ``duration`` s and waits for its
    results, and the picture is taken once ``after_s`` s have passed since the window opened (or
    right after the results, if later); only that tab wanted: the in-process station is not connected.
    If the Nodes panel's run fails, every tab's picture is still saved (the Nodes tab with the panel's error)
    and the report's ``nodes_error`` holds the failure in one line (``nodes`` is then None): the caller
    reports it and fails (``labqfl gui`` exits 1). It was raised before any picture was taken, so none was.
    """
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    from labqfl.gui.main_window import TABS

    tabs = list(tabs or ["live"])
    bad = [t for t in tabs if t not in TABS]
    if bad:
        raise ValueError(f"unknown tab(s) {bad}; expected some of {', '.join(TABS)} or 'all'")
    cfg = load_station_config(config_path)
    tmp = tempfile.TemporaryDirectory(prefix="labqfl-gui-")
    data_dir = data_dir if data_dir is not None else Path(tmp.name) / "data"
    runs_dir = runs_dir if runs_dir is not None else Path(tmp.name) / "runs"
    app = _app()
    ctl, win = build(cfg, base_dir=config_path.resolve().parent if config_path else None,
                     data_dir=data_dir, runs_dir=runs_dir)
    win.calibration_panel.runs_temporary = runs_dir.parent == Path(tmp.name)  # deleted with tmp (review s36 F23)
    win.resize(*size)
    win.show()
    errors: list[tuple[str, str]] = []
    ctl.errorOccurred.connect(lambda t, m: errors.append((t, m)))
    win.nodes_panel.errorOccurred.connect(lambda m: errors.append(("Nodes", m)))
    t0 = time.monotonic()
    shots: list[str] = []
    node_run: dict[str, Any] | None = None
    nodes_error: str | None = None
    calibrated = None
    try:
        if [t for t in tabs if t != "nodes"]:
            _connect(app, ctl, errors)
            calibrated = _calibrate(app, ctl, win) if "calibration" in tabs else None
            _start_jobs(ctl, win, tabs, training_rounds)
            _pump(app, after_s)
        if "nodes" in tabs:
            try:
                node_run = _run_nodes(app, win, config_path, nodes or "local", addresses, certs, duration)
            except RuntimeError as exc:  # every tab is still saved (the Nodes tab shows the failure); the caller reports it
                nodes_error = str(exc)
            _pump(app, after_s - (time.monotonic() - t0))  # --after: at least after_s s of running, nodes too
        if "training" in tabs:  # the first round needs torch and the data: wait for a few rounds
            _pump(app, 180.0, lambda: win.training_panel.rounds_shown >= min(training_rounds, 5)
                  or not ctl.busy.get("training"))
        _save_tabs(app, win, tabs, Path(out), shots)
        distilled = {p: {k: m.get(k) for k in ("blocks", "sifted_bits", "final_key_bits")}
                     for p, m in win.live_panel.pair_metrics().items()}
        rounds_shown = win.training_panel.rounds_shown
    finally:
        ctl.stop_training()
        problems = _close(app, win, ctl)
        for p in problems:
            log.error("%s", p)
        win.deleteLater()
        ctl.deleteLater()
        app.processEvents()
        tmp.cleanup()
    if problems:
        raise RuntimeError("; ".join(problems))
    return {"screenshots": shots, "tabs": tabs, "after_s": after_s, "station": cfg.name,
            "calibration": calibrated, "errors": [{"title": t, "message": m} for t, m in errors],
            "distillation": distilled, "training_rounds": rounds_shown, "nodes": node_run,
            "nodes_error": nodes_error, "wall_s": time.monotonic() - t0}


def _run_nodes(app: Any, win: Any, config_path: Path | None, nodes: str, addresses: Path | None,
               certs: Path | None, duration: float | None) -> dict[str, Any]:
    """Open the Nodes panel's set, run one acquisition and wait for its results (at most
    :data:`NODES_TIMEOUT_S`); ``RuntimeError`` with the panel's error line if it failed."""
    panel = win.nodes_panel
    _open_nodes(win, config_path, nodes, addresses, certs, duration)
    opened = _pump(app, NODES_TIMEOUT_S, lambda: (panel.runner.nodes is not None and not panel.runner.busy)
                   or bool(panel.errors))
    if not opened or panel.errors:
        raise RuntimeError(f"Nodes panel: {panel.errors[-1] if panel.errors else 'the set did not open in time'}")
    panel.acquire()
    if not _pump(app, NODES_TIMEOUT_S, lambda: panel.results is not None or bool(panel.errors)) or panel.errors:
        raise RuntimeError(f"Nodes panel: {panel.errors[-1] if panel.errors else 'no result in time'}")
    return _nodes_json(panel)


#: a pair's fields in the report (:class:`~labqfl.app.nodes.PairOutcome`) under the names ``labqfl node up --json``
#: and metrics.json give the same quantities (docs/gui.md, "Screenshots"); the other fields keep their names
PAIR_JSON_NAMES = {"qber": "error_rate_X_key", "key_rate_bps": "secure_key_rate_bps"}


def _nodes_json(panel: Any) -> dict[str, Any]:
    """The report's ``nodes``: the node table as a node's own ``address.json`` names it (``node``, ``role``,
    ``address``) with its ``state`` and ``detail``, per node; each pair's outcome (:data:`PAIR_JSON_NAMES`); the
    acquisition. Stable snake_case keys, not the table's column titles."""
    res = panel.results
    return {"nodes": {s.name: {"node": s.name, "role": s.role, "address": s.address, "state": s.state,
                               "detail": s.detail} for s in panel.node_statuses},
            "pairs": {p: {PAIR_JSON_NAMES.get(k, k): v for k, v in o.as_dict().items()} for p, o in res.pairs.items()},
            "acquisition": res.acquisition, "duration_s": res.duration_s}


def _connect(app: Any, ctl: Any, errors: list[tuple[str, str]]) -> None:
    """Connect the station and wait for it (at most 120 s); ``RuntimeError`` if it did not connect."""
    ctl.connect_station()
    if not _pump(app, 120.0, lambda: ctl.connected or bool(errors)):
        raise RuntimeError("the station did not connect within 120 s")
    if not ctl.connected:
        raise RuntimeError(f"the station did not connect: {errors[-1][1] if errors else 'unknown error'}")


def _calibrate(app: Any, ctl: Any, win: Any) -> str | None:
    """Run one cheap calibration (:data:`PREFERRED_CALIBRATIONS` first) to its end; its name, or
    None when the station offers none."""
    specs, _why = ctl.calibrations()
    names = [s.name for s in specs]
    pick = next((n for n in PREFERRED_CALIBRATIONS if n in names), names[0] if names else None)
    if pick is None:
        return None
    win.calibration_panel.list.setCurrentRow(names.index(pick))
    ctl.run_calibration(pick)
    _pump(app, 1.0)
    _pump(app, 300.0, lambda: not ctl.busy.get("calibration"))
    return pick


def _start_jobs(ctl: Any, win: Any, tabs: list[str], training_rounds: int) -> None:
    """Start acquisition with distillation (acquisition alone when distillation is unavailable),
    and training with ``training_rounds`` rounds when the training tab is wanted."""
    from labqfl.gui.core import TrainingOptions

    ok, _ = ctl.core.distill_available()
    if ok:
        ctl.start_distillation(win.live_panel.block_bits.value(), DEFAULT_ENGINE)
    else:
        ctl.start_acquisition()
    if "training" in tabs:
        opts = win.training_panel.options()
        opts = TrainingOptions(**{**opts.__dict__, "rounds": training_rounds})
        win.training_panel.rounds.setValue(training_rounds)
        ctl.start_training(opts)


def _save_tabs(app: Any, win: Any, tabs: list[str], out: Path, shots: list[str]) -> None:
    """Save one PNG per tab (``out`` for one tab, ``<out stem>_<tab><suffix>`` for several),
    appending each path to ``shots``; ``RuntimeError`` if one could not be written."""
    out.parent.mkdir(parents=True, exist_ok=True)
    for tab in tabs:
        win.show_tab(tab)
        _pump(app, 0.3)
        path = out if len(tabs) == 1 else out.with_name(f"{out.stem}_{tab}{out.suffix or '.png'}")
        if not win.grab().save(str(path)):
            raise RuntimeError(f"could not write {path}")
        shots.append(str(path))


__all__ = ["build", "run_gui", "screenshot"]
