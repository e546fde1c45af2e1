"""Start and stop the FL nodes as ``labqfl run`` does (server node + one SuperNode per client of the
default station, :class:`labqfl.nodes.fl.FlNetwork`), and time the stop process by process.

Usage (from the checkout's root): ``python docs/scripts/fl_stop_timing.py``

Prints the start-up and the stop wall seconds with the exit codes, then every process of the
network (the node processes, Flower's SuperLink, SuperNodes and SuperExecs, the zygotes) with when
it exited after the stop began and the CPU seconds it spent in the stop (``/proc``, sampled every
50 ms, so up to 50 ms of each is missed), and the CPU total. Linux only. Used for docs/nodes.md
("Where ``labqfl run``'s wall time goes").
"""

from __future__ import annotations

import os
import shutil
import tempfile
import threading
import time
from pathlib import Path

TCK = os.sysconf("SC_CLK_TCK")


def _stat(pid: int) -> list[str] | None:
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return None if fields[0] in ("Z", "X") else fields


def descendants(root: int) -> dict[int, str]:
    """pid → command line of every running process below ``root``."""
    kids: dict[int, list[int]] = {}
    for name in filter(str.isdigit, os.listdir("/proc")):
        st = _stat(int(name))
        if st is not None:
            kids.setdefault(int(st[1]), []).append(int(name))
    out: dict[int, str] = {}
    todo = [root]
    while todo:
        for k in kids.get(todo.pop(), []):
            try:
                with open(f"/proc/{k}/cmdline", "rb") as f:
                    out[k] = f.read().replace(b"\0", b" ").decode(errors="replace")[:90]
            except OSError:
                continue
            todo.append(k)
    return out


def main() -> None:
    from labqfl.config import load_station_config
    from labqfl.nodes.fl import FlNetwork
    from labqfl.planning import station_toml

    work = Path(tempfile.mkdtemp(prefix="fl-stop-"))
    try:
        cfg = load_station_config()
        (work / "station.toml").write_text(station_toml(cfg), encoding="utf-8")
        net = FlNetwork(work, work / "station.toml", list(cfg.client_names), work / "data")
        t = time.perf_counter()
        net.start()
        print(f"start {time.perf_counter() - t:.2f} s", flush=True)
        time.sleep(3)
        procs = descendants(os.getpid())  # the SuperExecs leave the tree later (own session): kept here
        cpu: dict[int, list[float]] = {}
        gone: dict[int, float] = {}
        codes: dict[str, object] = {}
        t0 = time.perf_counter()
        th = threading.Thread(target=lambda: codes.update(net.stop()))
        th.start()
        while (th.is_alive() or len(gone) < len(procs)) and time.perf_counter() - t0 < 60:
            for pid in procs:
                if pid in gone:
                    continue
                st = _stat(pid)
                if st is None:
                    gone[pid] = time.perf_counter() - t0
                    continue
                c = (int(st[11]) + int(st[12])) / TCK
                cpu.setdefault(pid, [c, c])[1] = c
            time.sleep(0.05)
        th.join()
        print(f"stop {time.perf_counter() - t0:.2f} s, exit codes {codes}")
        for pid, dt in sorted(gone.items(), key=lambda x: x[1]):
            a, b = cpu.get(pid, [0.0, 0.0])
            print(f"{dt:6.2f} s  cpu {b - a:5.2f} s  {pid} {procs[pid]}")
        print(f"CPU in the stop: {sum(b - a for a, b in cpu.values()):.2f} s")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
