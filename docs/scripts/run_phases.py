"""Where a ``labqfl run`` (over nodes)'s wall time went: one table from its run folder.

Usage: ``python docs/scripts/run_phases.py RUN_DIR [--elapsed S]``

Reads ``RUN_DIR/metrics.json`` (``phases_s``, ``acquisition`` and ``train.nodes`` times, the rounds'
seconds) and the node logs the job copied to ``RUN_DIR/nodes/`` (the detector's end-of-acquisition
line, each client's last stored block), nothing else; no key material is in either. ``--elapsed``:
the whole command's wall seconds (e.g. ``/usr/bin/time``'s), to show the CLI's own start-up and
exit outside the job. Prints phase, seconds and share of the total. Used for docs/nodes.md
("Where ``labqfl run``'s wall time goes").
"""

from __future__ import annotations

import argparse
import json
import re
from datetime import datetime
from pathlib import Path

STAMP = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) ")


def _times(log: Path, needle: str) -> list[float]:
    """POSIX seconds of the log lines of ``log`` that contain ``needle``."""
    out = []
    for line in log.read_text(encoding="utf-8", errors="replace").splitlines():
        m = STAMP.match(line)
        if m and needle in line:
            out.append(datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp())
    return out


def distil_tail_s(nodes: Path) -> float | None:
    """Seconds from the detector's end of the acquisition to the last block a client stored."""
    end = _times(nodes / "detector.log", "tag blocks")
    last = [t for p in sorted(nodes.glob("C*.log")) for t in _times(p, ": block ")]
    return max(last) - end[-1] if end and last else None


def rows(run: Path, elapsed: float | None) -> list[tuple[str, float]]:
    m = json.loads((run / "metrics.json").read_text(encoding="utf-8"))
    ph, acq = m["phases_s"], m["acquisition"]
    fl = m["train"]["nodes"]
    rounds = sum(float(r["seconds"]) for r in m["train"]["rounds"])
    tail = distil_tail_s(run / "nodes") or 0.0
    fl_start = fl["startup_s"]
    # the seconds the training waited for them (``wait_s``: runs of 155ba86, which started them during the acquisition)
    fl_wait = float(fl_start["wait_s"]) if "wait_s" in fl_start else float(fl_start["total_s"])
    out = []
    if elapsed is not None:
        out.append(("CLI start-up and exit (imports, station, plan printed)", elapsed - ph["total_s"]))
    out += [
        ("setup (training check, key plan)", ph.get("setup", 0.0)),
        ("acquisition nodes: warm JIT, certificates, 6 processes to listening", acq["startup_s"]["total_s"]),
        ("acquisition + sifting (detector's last tag block)", acq["acquisition_wall_s"] - tail),
        ("distillation after the acquisition (last block stored)", tail),
        ("acquisition nodes: stop", acq["stop_s"]),
        ("acquire phase, rest (stores opened, accounting)",
         ph["acquire"] - acq["startup_s"]["total_s"] - acq["acquisition_wall_s"] - acq["stop_s"]),
        ("FL nodes: start-up (server node, SuperNodes, their zygotes importing torch)", fl_wait),
        (f"training: {len(m['train']['rounds'])} rounds", rounds),
        ("training: ctl/train outside the rounds (ServerApp, setup query, end)", fl["train_wall_s"] - rounds),
        ("FL nodes: stop", fl["stop_s"]),
        ("train phase, rest (training setup, data, key-store reads, logs)",
         ph["train"] - fl_wait - fl["train_wall_s"] - fl["stop_s"]),
        ("report (metrics.json, plots, report.html)", ph["report"]),
    ]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("run_dir", type=Path)
    ap.add_argument("--elapsed", type=float, default=None, help="the whole command's wall seconds")
    a = ap.parse_args()
    rs = rows(a.run_dir, a.elapsed)
    total = a.elapsed if a.elapsed is not None else json.loads(
        (a.run_dir / "metrics.json").read_text(encoding="utf-8"))["phases_s"]["total_s"]
    print("| phase | s | share |\n|---|---|---|")
    for name, s in rs:
        print(f"| {name} | {s:.1f} | {100 * s / total:.1f} % |")
    print(f"| **total** | **{total:.1f}** | 100 % |")


if __name__ == "__main__":
    main()
