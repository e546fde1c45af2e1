"""After a SIGTERM or Ctrl-C that landed while Numba compiled, an llvmlite object stopped inside its constructor
(an ``OutputString`` without ``_ptr``) made the garbage collector print "Exception ignored in … AttributeError"
with a traceback beside the command's one error line (clean-clone CI of session 34: ``test_run_sigterm``). That
complaint, and only that one, is no longer printed."""

from __future__ import annotations

import gc
import sys
from typing import Any

import pytest
import typer

from labqfl.cli import _quiet_half_built_objects
from labqfl.station import half_built_by_interrupt


def _half_built_output_string() -> None:
    from llvmlite.binding.ffi import OutputString

    o = OutputString.__new__(OutputString)  # as an interrupt between __new__ and __init__'s first line leaves it
    del o
    gc.collect()


class _Other:
    def __del__(self) -> None:
        raise AttributeError("a real fault elsewhere")


def test_only_the_half_built_llvmlite_objects_complaint_is_dropped(monkeypatch: pytest.MonkeyPatch) -> None:
    shown: list[Any] = []
    monkeypatch.setattr(sys, "unraisablehook", shown.append)
    _half_built_output_string()
    assert len(shown) == 1 and half_built_by_interrupt(shown[0])  # what the default hook would print
    shown.clear()
    _quiet_half_built_objects()  # what labqfl's main installs after exit 143 or 130
    _half_built_output_string()
    assert shown == []
    x = _Other()
    del x
    gc.collect()
    assert len(shown) == 1 and not half_built_by_interrupt(shown[0])  # anything else is still printed


def test_the_complaint_is_dropped_from_the_moment_the_interrupt_is_caught(monkeypatch: pytest.MonkeyPatch) -> None:
    """Clean-clone CI of session 35: a half-built ``PipelineTuningOptions`` was collected while the command printed
    its one error line, after the interrupt but before the CLI's exit installed the quiet hook. The command's
    error handler installs it as soon as it knows of the interrupt."""
    from llvmlite.binding.ffi import ObjectRef

    from labqfl.cli.common import handle_errors

    shown: list[Any] = []
    monkeypatch.setattr(sys, "unraisablehook", shown.append)

    @handle_errors
    def command() -> None:
        raise KeyboardInterrupt("SIGTERM")

    with pytest.raises(typer.Exit) as exc:
        command()
    assert exc.value.exit_code == 143
    o = ObjectRef.__new__(ObjectRef)  # stopped before __init__: no _as_parameter_
    del o
    gc.collect()
    assert shown == []
    x = _Other()
    del x
    gc.collect()
    assert len(shown) == 1 and not half_built_by_interrupt(shown[0])
