"""CPU seconds (user + system) and minor page faults of every process a command starts, from /proc.

Usage: ``python docs/scripts/node_cpu.py labqfl node up --duration 10 --json``

The command's stdout goes to ``/tmp/cs.out`` (for ``node up --json``: its JSON), its stderr to
``/tmp/cs.err``. Every 0.3 s the script reads ``/proc/<pid>/stat`` of the command and all its
descendants; a process counts with its last sample before it exited (so up to 0.3 s of its CPU
may be missed). Printed per process with more than 0.5 CPU s, largest first: CPU s, minor page
faults, pid and name (the ``--name`` of a labqfl node, else the command). Used for the node CPU
figures of docs/nodes.md ("Measured"). Linux only.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time

TCK = os.sysconf("SC_CLK_TCK")


def descendants(root: int) -> list[int]:
    """``root`` and every process below it."""
    kids: dict[int, list[int]] = {}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        kids.setdefault(ppid, []).append(int(pid))
    out, todo = [], [root]
    while todo:
        x = todo.pop()
        out.append(x)
        todo += kids.get(x, [])
    return out


def name_of(cmd: list[str]) -> str:
    return cmd[cmd.index("--name") + 1] if "--name" in cmd[:-1] else " ".join(cmd)[:60]


def main(argv: list[str]) -> None:
    with open("/tmp/cs.out", "w") as out, open("/tmp/cs.err", "w") as err:
        p = subprocess.Popen(argv, stdout=out, stderr=err)
        last: dict[int, tuple[str, float, int]] = {}
        while p.poll() is None:
            for pid in descendants(p.pid):
                try:
                    with open(f"/proc/{pid}/stat") as f:
                        st = f.read().rsplit(")", 1)[1].split()
                    with open(f"/proc/{pid}/cmdline") as f:
                        cmd = f.read().split("\0")
                except (OSError, IndexError):
                    continue
                if cmd and cmd[0]:
                    last[pid] = (name_of(cmd), (int(st[11]) + int(st[12])) / TCK, int(st[7]))
            time.sleep(0.3)
    for pid, (name, cpu, faults) in sorted(last.items(), key=lambda x: -x[1][1]):
        if cpu > 0.5:
            print(f"{cpu:7.1f} {faults:9d} {pid} {name}")


if __name__ == "__main__":
    main(sys.argv[1:])
