"""A command that compiles Numba kernels says so once, and how long it took (labqfl.cli.compiling)."""

from __future__ import annotations

from numba import njit
from numba.core import event

from labqfl.cli import compiling


def test_a_compilation_is_announced_once_and_counted_as_one_kernel_with_its_callees() -> None:
    said: list[str] = []
    w = compiling.CompileWatch(said.append)

    @njit(cache=False)
    def inner(x: int) -> int:
        return x + 1

    @njit(cache=False)
    def outer(x: int) -> int:
        return inner(x) * 2  # inner is compiled inside outer's compilation: one outermost compilation

    @njit(cache=False)
    def other(x: float) -> float:
        return x / 2

    assert w.summary() is None
    with event.install_listener("numba:compile", w.listener()):
        assert outer(1) == 4 and outer(2) == 6  # the second call compiles nothing
        assert other(3.0) == 1.5
    assert said == [compiling.NOTICE]
    assert w.kernels == 2 and w.seconds > 0
    assert (w.summary() or "").startswith(f"labqfl: this process spent {w.seconds:.1f} s compiling 2 kernel(s)")


def test_the_process_has_one_watch_however_many_commands_it_runs() -> None:
    assert compiling.watch() is compiling.watch()


def test_only_commands_that_run_kernels_import_numba_for_the_watch() -> None:
    assert {"run", "acquire", "distill", "calibrate", "bench"} <= compiling.KERNEL_COMMANDS
    assert not {"keys", "plan", "keyrate", "node"} & compiling.KERNEL_COMMANDS


def test_the_notice_does_not_call_every_compilation_a_first_run() -> None:
    """Review s38 user F12: the GUI, run after four other commands, compiled one kernel none of them had used (1.6 s)
    and said "the first run after an install or an upgrade"; the notice names both causes now."""
    assert "first run after an install" not in compiling.NOTICE
    assert "not yet in Numba's cache" in compiling.NOTICE and "first use" in compiling.NOTICE
