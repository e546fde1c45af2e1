"""Benchmark registry for ``labqfl bench``.

A benchmark measures a figure *and* a named baseline side by side in the same process on the same
machine, and reports their ratio (never an absolute time judged against a constant in a unit test).
Add entries in a module under :mod:`labqfl.bench.entries` with the :func:`benchmark` decorator::

    @benchmark("toeplitz", "Toeplitz hashing of 10^7-bit blocks", target="≥ 100 Mbit/s")
    def _toeplitz(quick: bool) -> BenchResult: ...

``quick=True`` asks for a small size (used by the test suite to check the entry runs).
"""

from __future__ import annotations

import importlib
import os
import pkgutil
import platform
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


@dataclass
class BenchResult:
    """One benchmark's outcome. ``ratio`` = figure / baseline_figure (both in ``unit``)."""

    figure: float
    unit: str
    baseline: str
    baseline_figure: float
    higher_is_better: bool = True
    target: str = ""
    passed: bool | None = None
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def ratio(self) -> float:
        return self.figure / self.baseline_figure if self.baseline_figure else float("inf")


@dataclass
class BenchEntry:
    name: str
    description: str
    fn: Callable[[bool], BenchResult]
    target: str = ""
    requires: Callable[[], str | None] | None = None
    """Returns why the benchmark cannot run on this host (e.g. no GPU), or None when it can."""

    def unavailable(self) -> str | None:
        return self.requires() if self.requires is not None else None


_REGISTRY: dict[str, BenchEntry] = {}


def benchmark(name: str, description: str, target: str = "", requires: Callable[[], str | None] | None = None,
              ) -> Callable[[Callable[[bool], BenchResult]], Callable[[bool], BenchResult]]:
    """Register ``fn`` as benchmark ``name``. ``requires`` (optional) says why the host cannot run it
    (None when it can): ``labqfl bench`` then skips it when running every benchmark and refuses it
    by name with that reason."""

    def deco(fn: Callable[[bool], BenchResult]) -> Callable[[bool], BenchResult]:
        if name in _REGISTRY:
            raise ValueError(f"benchmark {name!r} registered twice")
        _REGISTRY[name] = BenchEntry(name, description, fn, target, requires)
        return fn

    return deco


def registry() -> dict[str, BenchEntry]:
    """All registered benchmarks (imports every module of :mod:`labqfl.bench.entries`)."""
    from labqfl.bench import entries

    for mod in pkgutil.iter_modules(entries.__path__):
        importlib.import_module(f"{entries.__name__}.{mod.name}")
    return dict(sorted(_REGISTRY.items()))


def usable_cores() -> int:
    """Cores this process may run on (its affinity mask where the OS has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def machine_info() -> dict[str, Any]:
    """CPU model, core counts, Python and platform — printed with every benchmark report."""
    cpu = platform.processor() or "unknown"
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    from labqfl.accel import cuda_name

    return {"cpu": cpu, "logical_cores": os.cpu_count(), "usable_cores": usable_cores(),
            "python": platform.python_version(), "platform": platform.platform(), "gpu": cuda_name()}


def noisy_frame(n: int, qber: float, seed: int) -> tuple[Any, Any]:
    """Reconciliation input: Alice's ``n`` random bits (uint8 0/1) and Bob's copy with exactly
    ``round(qber·n)`` errors at random positions, from ``numpy.random.default_rng(seed)``."""
    import numpy as np

    rng = np.random.default_rng(seed)
    x = rng.integers(0, 2, n, dtype=np.uint8)
    y = x.copy()
    y[rng.choice(n, int(round(qber * n)), replace=False)] ^= 1
    return x, y
