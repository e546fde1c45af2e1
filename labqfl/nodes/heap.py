"""Keep freed memory in the node process instead of handing it back to the kernel (glibc only).

A node allocates and frees arrays of a few MB for every tag block: the optics' queries and
answers, the clients' choices, announcements and sifting batches. With glibc's defaults many of
them are served by ``mmap`` or returned by trimming the heap, so the next block's arrays arrive
as fresh pages that the kernel zeroes and faults in one by one: on the default station's 10 s over
nodes, 310 000–560 000 minor page faults per client, and the kernel's page zeroing
(``clear_page_erms``) 7.6 % of a client's CPU samples in ``perf``. With this function called as every
node starts serving (`labqfl node up --duration 10` through ``docs/scripts/node_cpu.py``, alternated
three times against the same tree without the call): the acquisition 17.5–20.5 s instead of
19.9–23.1 s, all nodes 41.6–47.9 CPU s instead of 45.3–53.1, 0.42·10^6 minor faults in all instead of
1.7–1.9·10^6 (docs/nodes.md, "Freed memory stays in the node").

The settings (``mallopt``, glibc's ``malloc.h``): ``M_MMAP_THRESHOLD`` 32 MiB (glibc's largest;
blocks up to it come from the heap), ``M_TRIM_THRESHOLD`` 1 GiB (free memory at the top of the
heap is kept up to it) and ``M_TOP_PAD`` 64 MiB (the heap grows in steps of it). The price is
memory a node keeps after a burst, bounded by what it held at its peak plus the pad. Nothing is
changed where the C library has no ``mallopt`` (musl, macOS): :func:`keep_freed_memory` then
returns False.
"""

from __future__ import annotations

import ctypes
import gc
from typing import Any

#: glibc malloc.h parameter numbers
M_TRIM_THRESHOLD = -1
M_TOP_PAD = -2
M_MMAP_THRESHOLD = -3

MMAP_THRESHOLD_BYTES = 32 << 20
TRIM_THRESHOLD_BYTES = 1 << 30
TOP_PAD_BYTES = 64 << 20


def _libc() -> Any:
    """The C library this process already runs on (its own symbols: no library search, no subprocess)."""
    return ctypes.CDLL(None)


def keep_freed_memory() -> bool:
    """Apply the module's ``mallopt`` settings to this process; True when the C library took all three."""
    mallopt = getattr(_libc(), "mallopt", None)
    if mallopt is None:
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    done = [mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES), mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES),
            mallopt(M_TOP_PAD, TOP_PAD_BYTES)]
    return all(r == 1 for r in done)


def freeze_startup_objects() -> int:
    """Move every object the process holds now (its imports and warm-up: numpy, scipy, gRPC, Numba's
    dispatchers, ...) to the collector's permanent generation, so that the cyclic collections a
    serving node triggers by allocating messages and arrays no longer traverse them
    (:func:`gc.freeze`). Called as a node starts serving. Returns how many objects are frozen.

    Measured (2026-12-05, Zen 3 VM, default station's 10 s over nodes, ``perf record -a``, samples
    grouped by process): the collector's own functions (``gc_collect_main``, ``visit_decref``,
    ``visit_reachable``) were 7.5 % of the detector's CPU samples and 5.8 % of a client's; with the
    start-up frozen, 1.1 % and 2.0–2.6 %. The whole acquisition's CPU did not measurably change with
    it (three alternated pairs of ``docs/scripts/node_phases.py``: 30.3, 33.1, 27.7 CPU s with, 32.8,
    31.1, 28.3 without), so it is kept for the collector's share alone. Not used in the warm ClientApp
    zygote (labqfl.nodes.warmapp): frozen there before its forks, the rounds of ``labqfl run`` got
    slower (docs/nodes.md). The frozen objects are only exempt from cycle detection: reference
    counting still frees them."""
    gc.freeze()
    return gc.get_freeze_count()
