"""labqfl.nodes.heap: a node keeps the memory it frees, so every tag block's arrays reuse pages
instead of faulting in fresh zeroed ones (measured effect in the module docstring)."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from labqfl.nodes import heap

PROBE = textwrap.dedent("""
    import resource, sys
    import numpy as np
    from labqfl.nodes.heap import keep_freed_memory
    took = keep_freed_memory() if sys.argv[1] == "keep" else None
    sizes = [(1 + (7 * i) % 16) << 20 for i in range(64)]   # 1-16 MiB, as a node's per-block arrays
    def burst():
        held = [np.ones(s // 8) for s in sizes[:4]]
        for s in sizes:
            a = np.ones(s // 8)
            del a
        del held
    burst()  # the heap grows to its peak once
    f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(5):
        burst()
    print(took, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0, sum(sizes) * 5 // 4096)
""")


def _probe(mode: str) -> tuple[str, int, int]:
    out = subprocess.run([sys.executable, "-c", PROBE, mode], capture_output=True, text=True, timeout=120, check=True)
    took, faults, pages = out.stdout.split()
    return took, int(faults), int(pages)


@pytest.mark.skipif(not sys.platform.startswith("linux"),
                    reason="only Linux's glibc has mallopt; on other systems keep_freed_memory leaves the "
                           "allocator as it is (checked by test_without_mallopt_nothing_is_changed)")
def test_freed_arrays_come_back_without_page_faults() -> None:
    took, faults, pages = _probe("keep")
    assert took == "True"
    # every burst after the first reuses the heap's pages: (almost) no fresh page is faulted in
    assert faults <= pages // 1000, (faults, pages)


def test_without_mallopt_nothing_is_changed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(heap, "_libc", lambda: object())  # a C library without mallopt (musl, macOS)
    assert heap.keep_freed_memory() is False


def test_the_start_up_objects_leave_the_cyclic_collections():
    """After :func:`heap.freeze_startup_objects` the objects a node built while starting (here 20 000
    containers) sit in the permanent generation: a full collection no longer has them in any
    generation, while reference counting still frees a frozen object."""
    probe = textwrap.dedent("""
        import gc, weakref
        from labqfl.nodes.heap import freeze_startup_objects
        class Box:
            pass
        held = [[i] for i in range(20_000)]
        gone = Box()
        ref = weakref.ref(gone)
        frozen = freeze_startup_objects()
        gc.collect()
        tracked = sum(len(gc.get_objects(g)) for g in range(3))
        del gone
        print(frozen, tracked, ref() is None)
    """)
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, check=True)
    frozen, tracked, freed = out.stdout.split()
    assert int(frozen) >= 20_000 and int(tracked) < 5_000 and freed == "True"
