"""The launcher's warm-up (LocalNetwork.warm_jit): Cascade's kernels are loaded by a second process beside
the rest, and by the launcher itself when that process fails."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from labqfl.nodes import client, launch
from labqfl.nodes.launch import LocalNetwork


def _spy(monkeypatch: pytest.MonkeyPatch, code: str) -> tuple[list[list[str]], list[int]]:
    """Every Python process warm_jit starts runs ``code`` instead (its command recorded); warm_cascade
    calls in this process are counted, not run."""
    started: list[list[str]] = []
    here: list[int] = []
    real = subprocess.Popen

    def popen(cmd: list[str], **kw: object) -> subprocess.Popen[bytes]:
        if not (isinstance(cmd, list) and cmd and cmd[0] == sys.executable):  # e.g. platform's `uname -p`
            return real(cmd, **kw)  # type: ignore[call-overload, no-any-return]
        started.append(list(cmd))
        return real([sys.executable, "-c", code], **kw)  # type: ignore[call-overload, no-any-return]

    monkeypatch.setattr(launch.subprocess, "Popen", popen)
    monkeypatch.setattr(client, "warm_cascade", lambda: here.append(1))
    return started, here


def test_cascade_is_warmed_by_a_second_process(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    started, here = _spy(monkeypatch, "pass")
    LocalNetwork(tmp_path).warm_jit()
    assert len(started) == 1 and started[0][0] == sys.executable
    assert "warm_cascade()" in started[0][-1]
    assert here == []  # not in this process


def test_a_failed_warm_up_process_is_made_up_for_here(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    started, here = _spy(monkeypatch, "raise SystemExit(3)")
    LocalNetwork(tmp_path).warm_jit()
    assert len(started) == 1 and here == [1]
