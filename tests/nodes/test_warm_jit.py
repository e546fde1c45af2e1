"""The launcher's warm-up (LocalNetwork.warm_jit): the distillation kernels are loaded by two more processes
(Cascade's; Toeplitz's and the tags') beside the rest, and by the launcher itself when one of them fails."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from labqfl.nodes import client, launch
from labqfl.nodes.launch import LocalNetwork


def _spy(monkeypatch: pytest.MonkeyPatch, code: str) -> tuple[list[list[str]], list[str]]:
    """Every Python process warm_jit starts runs ``code`` instead (its command recorded); warm_distillation
    calls in this process are counted (their engine), not run."""
    started: list[list[str]] = []
    here: list[str] = []
    real = subprocess.Popen

    def popen(cmd: list[str], **kw: object) -> subprocess.Popen[bytes]:
        if not (isinstance(cmd, list) and cmd and cmd[0] == sys.executable):  # e.g. platform's `uname -p`
            return real(cmd, **kw)  # type: ignore[call-overload, no-any-return]
        started.append(list(cmd))
        return real([sys.executable, "-c", code], **kw)  # type: ignore[call-overload, no-any-return]

    monkeypatch.setattr(launch.subprocess, "Popen", popen)
    monkeypatch.setattr(client, "warm_distillation", lambda engine, cascade=True: here.append(engine))
    return started, here


def test_the_distillation_kernels_are_warmed_by_a_second_process(tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    started, here = _spy(monkeypatch, "pass")
    LocalNetwork(tmp_path).warm_jit()
    assert len(started) == 2 and all(cmd[0] == sys.executable for cmd in started)
    assert sorted(cmd[-1].split("; ")[-1] for cmd in started) == ["warm_cascade()",
                                                                    "warm_distillation('cascade', cascade=False)"]
    assert here == []  # not in this process


def test_a_failed_warm_up_process_is_made_up_for_here(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    started, here = _spy(monkeypatch, "raise SystemExit(3)")
    LocalNetwork(tmp_path).warm_jit()
    assert len(started) == 2 and here == ["cascade"]
