"""A check of the Qt binding the GUI runs on, made before any window is built.

PySide6 6.12.0 on Python 3.11 returns ``True`` from ``SignalInstance.emit()`` without adding
the reference it hands back: every emission of any signal (``Signal()``, ``Signal(int)``,
``Signal(object)``, …, whatever the payload) leaves ``True`` one reference short. The GUI and
pyqtgraph emit hundreds of signals per second, so after a few seconds of live running the count
reaches zero and the interpreter aborts — at the latest during its garbage collection at exit,
with "Fatal Python error: bool_dealloc" (exit status 134). Measured with
``sys.getrefcount(True)`` over 100 emissions: −100 on 6.12.0 / Python 3.11.7, 0 on 6.11.3 and
6.10.3; on Python ≥ 3.12 ``True`` is immortal (PEP 683) and the lost references do no harm.

``pyproject.toml`` excludes that combination; :func:`binding_problem` catches it (or a later
release with the same fault) where a binding was installed some other way, and
:func:`check_binding` refuses to start the GUI on it with one line that says what to install,
instead of letting the window crash when the user closes it.
"""

from __future__ import annotations

import platform
import sys
from collections.abc import Callable

from labqfl.errors import LabqflError

#: Emissions of the probe signal; a sound binding loses no reference at all.
PROBE_EMITS = 64
#: What to install instead (the constraint of pyproject.toml).
REMEDY = "pip install 'PySide6-Essentials>=6.6,!=6.12.0'"


def emit_refcount_loss(n: int = PROBE_EMITS, emit: Callable[[], object] | None = None) -> tuple[int, int]:
    """References to ``True`` and to ``False`` lost over ``n`` calls of ``emit`` (default:
    emitting a probe ``Signal()`` of a fresh ``QObject``): (0, 0) on a sound binding, ``n``
    where each emission loses one. The result of ``emit`` is discarded, as ordinary code that
    calls ``signal.emit(...)`` does.

    When at least half the calls lost a reference, the references the probe took are given back
    (``Py_IncRef``): on Python 3.11 the bools have only a few hundred references in a fresh
    process, and the probe must not itself bring the interpreter to the abort it looks for.
    """
    if emit is None:
        from PySide6.QtCore import QObject, Signal

        class _Probe(QObject):
            fired = Signal()

        probe = _Probe()
        emit = probe.fired.emit
    t0, f0 = sys.getrefcount(True), sys.getrefcount(False)
    for _ in range(n):
        emit()
    lost = (t0 - sys.getrefcount(True), f0 - sys.getrefcount(False))
    for obj, k in zip((True, False), lost, strict=True):
        if k >= max(1, n // 2):
            _give_back(obj, k)
    return lost


def _give_back(obj: object, k: int) -> None:
    """Add ``k`` references to ``obj`` (references a faulty C extension took without owning)."""
    import ctypes

    incref = ctypes.pythonapi.Py_IncRef
    incref.argtypes = [ctypes.py_object]
    incref.restype = None
    for _ in range(k):
        incref(obj)


def binding_problem(n: int = PROBE_EMITS, emit: Callable[[], object] | None = None) -> str | None:
    """One line describing why the installed PySide6 cannot run the GUI, or None if it can
    (``emit``: what to probe, see :func:`emit_refcount_loss`)."""
    lost = max(emit_refcount_loss(n, emit))
    if lost < max(1, n // 2):  # another thread may drop a bool meanwhile; a faulty emit loses n
        return None
    import PySide6

    return (f"PySide6 {PySide6.__version__} on Python {platform.python_version()} loses a reference to True or False "
            f"on every signal emission ({lost} in {n} emissions), which aborts the GUI (Fatal Python error: "
            f"bool_dealloc); install another PySide6: {REMEDY}")


def check_binding() -> None:
    """Raise :class:`~labqfl.errors.LabqflError` if :func:`binding_problem` finds one (the probe
    takes well under a millisecond)."""
    problem = binding_problem()
    if problem is not None:
        raise LabqflError(problem)


__all__ = ["PROBE_EMITS", "REMEDY", "binding_problem", "check_binding", "emit_refcount_loss"]
