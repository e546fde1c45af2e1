"""Seconds from closing the GUI's window during the first key block to the window closing.

Opens the main window offscreen on a station (default: the embedded one), connects it, starts the
live distillation as Live ▸ Distillation ▸ Start does (block-size rule), waits until the first key
block has entered its distillation (the block has been opened: ID, slot claim, authentication key)
plus ``--after`` seconds, then closes the window as a user does and pumps the event loop until it
is gone. Reports the close time, the stages the pipeline had timed by then, and whether the nodes'
key stores hold the same blocks at both ends of every pair afterwards.

    .venv/bin/python docs/scripts/gui_close_during_block.py [--station FILE] [--after 2] [--block-bits N]
        [--slow-round S] [--json]

``--slow-round S`` adds S seconds to every round trip of error correction (Cascade), to see on a
quiet machine what a loaded one does: a first block that takes many seconds.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

from labqfl.gui.app import _pump, build  # noqa: E402

from labqfl.config import load_station_config  # noqa: E402
from labqfl.contracts.types import DEFAULT_ENGINE  # noqa: E402


def _store_blocks(cfg: Any, data_dir: Path) -> dict[str, dict[str, list[str]]]:
    """Per pair and end: the block IDs the end's store holds (empty for a store not created)."""
    from labqfl.keystore import KeyStore, list_node_stores, node_store_path

    have = set(list_node_stores(data_dir))
    out: dict[str, dict[str, list[str]]] = {}
    for a, b in cfg.pairs():
        pair = f"{a}-{b}"
        out[pair] = {}
        for node in (a, b):
            if node not in have:
                out[pair][node] = []
                continue
            st = KeyStore(node_store_path(node, data_dir), node=node, create=False)
            try:
                out[pair][node] = sorted(str(d["block_id"]) for d in st.blocks(pair))
            finally:
                st.close()
    return out


def _slow_rounds(seconds: float) -> None:
    """Emulate a loaded machine: every answer of Alice's in Cascade takes ``seconds`` longer."""
    from labqfl.qkd.cascade import CascadeAlice

    handle = CascadeAlice.handle

    def slow(self: Any, request: Any) -> Any:
        time.sleep(seconds)
        return handle(self, request)

    CascadeAlice.handle = slow  # type: ignore[method-assign]


def measure(station: str | None, after_s: float, timeout_s: float, block_bits: int | None = None,
            slow_round_s: float = 0.0) -> dict[str, Any]:
    from labqfl.qkd.pipeline import Distiller

    if slow_round_s > 0:
        _slow_rounds(slow_round_s)
    cfg = load_station_config(station)
    entered = threading.Event()
    t_enter: list[float] = []
    open_block = Distiller._open_block

    def spy_open(self: Any, st: Any, end: int) -> Any:  # instrumentation only: when the first block starts
        run = open_block(self, st, end)
        if not entered.is_set():
            t_enter.append(time.monotonic())
            entered.set()
        return run

    finished: list[tuple[float, Any]] = []
    finish_block = Distiller._finish_block

    def spy_finish(self: Any, st: Any, run: Any, **kw: Any) -> Any:  # instrumentation only: the blocks that ended
        br = finish_block(self, st, run, **kw)
        finished.append((time.monotonic(), br))
        return br

    Distiller._open_block = spy_open  # type: ignore[method-assign]
    Distiller._finish_block = spy_finish  # type: ignore[method-assign]
    with tempfile.TemporaryDirectory() as tmp:
        data_dir = Path(tmp) / "data"
        ctl, win = build(cfg, data_dir=data_dir, runs_dir=Path(tmp) / "runs")
        from PySide6.QtWidgets import QApplication

        app = QApplication.instance()
        win.show()
        ctl.core.connect().result(300)
        t_start = time.monotonic()
        ctl.core.start_distillation(block_bits, DEFAULT_ENGINE)
        if not _pump(app, timeout_s, entered.is_set):
            raise RuntimeError(f"the first key block did not start within {timeout_s:g} s")
        _pump(app, after_s)
        t_close = time.monotonic()
        win.close()
        closed = _pump(app, timeout_s, lambda: not win.isVisible())
        t_closed = time.monotonic()
        msgs = [m.text() for m in [win.message]] if hasattr(win, "message") else []
        alive = ctl.live_threads(wait_s=10.0)
        blocks = _store_blocks(cfg, data_dir)
    one_sided = {p: e for p, e in blocks.items() if len({tuple(v) for v in e.values()}) > 1}
    return {
        "station": cfg.name, "engine": DEFAULT_ENGINE, "block_bits": block_bits or "rule", "after_s": after_s,
        "slow_round_s": slow_round_s,
        "first_block_entered_s": round(t_enter[0] - t_start, 2),
        "blocks_ended_before_close": sum(t < t_close for t, _ in finished),
        "blocks_ended_after_close": [(round(t - t_close, 2), br.pair, br.abort_reason or "key")
                                     for t, br in finished if t >= t_close],
        "first_block_stage_s": {k: round(v, 2) for k, v in finished[0][1].times_s.items()} if finished else None,
        "close_s": round(t_closed - t_close, 2) if closed else None,
        "closed": closed, "threads_left": alive, "last_message": msgs,
        "stored_blocks_per_pair": {p: len(next(iter(e.values()))) for p, e in blocks.items()},
        "one_sided_pairs": one_sided, "load_avg_1min": round(os.getloadavg()[0], 1),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--station", default=None, help="station file (default: the embedded station)")
    ap.add_argument("--after", type=float, default=2.0, help="seconds into the first block to close the window")
    ap.add_argument("--block-bits", type=int, default=None, help="sifted bits per block (default: the block-size rule)")
    ap.add_argument("--slow-round", type=float, default=0.0,
                    help="extra seconds per error-correction round trip (emulates a loaded machine)")
    ap.add_argument("--timeout", type=float, default=300.0, help="give up after this many seconds")
    ap.add_argument("--json", action="store_true", help="print JSON on stdout")
    a = ap.parse_args()
    r = measure(a.station, a.after, a.timeout, a.block_bits, a.slow_round)
    if a.json:
        print(json.dumps(r))
    else:
        for k, v in r.items():
            print(f"{k}: {v}")
    return 0 if r["closed"] and not r["threads_left"] and not r["one_sided_pairs"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
