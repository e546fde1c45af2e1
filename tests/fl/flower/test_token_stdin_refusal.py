"""labqfl's SuperExec never starts a ClientApp/ServerApp with its runtime token on the command line (issue 19).

:class:`labqfl.fl.flower.fabguard._TokenOnStdin` moves ``--token TOKEN`` of ``flwr-clientapp`` /
``flwr-serverapp`` onto the process's standard input. A caller that passed its own ``stdin`` used to get the
command started unchanged, the token on argv (``/proc/PID/cmdline``, readable by every local user); now such a
call is refused with one error and nothing is started. The same for a token given as ``--token=TOKEN``.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from labqfl.fl.flower import fabguard

TOKEN = "cd" * 128


def _probe(tmp_path: Path, name: str = "flwr-clientapp") -> Path:
    probe = tmp_path / name
    probe.write_text(f"#!{sys.executable}\nimport json, sys\n"
                     f"json.dump({{'argv': sys.argv[1:], 'stdin': sys.stdin.read()}}, "
                     f"open({str(tmp_path / 'seen.json')!r}, 'w'))\n")
    probe.chmod(0o700)
    return probe


@pytest.mark.parametrize("name", ["flwr-clientapp", "flwr-serverapp"])
def test_a_caller_s_own_stdin_is_refused_and_nothing_starts(tmp_path: Path, name: str) -> None:
    probe = _probe(tmp_path, name)
    with pytest.raises(ValueError) as ei:
        proc = fabguard._TokenOnStdin.Popen([str(probe), "--runtime-api-address", "127.0.0.1:1", "--token", TOKEN],
                                            stdin=subprocess.DEVNULL)
        proc.wait(60)  # the code before: started, the token on its command line
    msg = str(ei.value)
    assert msg.startswith(f"refusing to start {name}: its caller passed its own standard input"), msg
    assert TOKEN not in msg and "\n" not in msg
    assert not (tmp_path / "seen.json").exists()


def test_a_token_given_as_one_argument_is_refused(tmp_path: Path) -> None:
    probe = _probe(tmp_path)
    with pytest.raises(ValueError, match="its token is not given as '--token TOKEN'"):
        fabguard._TokenOnStdin.Popen([str(probe), f"--token={TOKEN}"]).wait(60)
    assert not (tmp_path / "seen.json").exists()


def test_stdin_none_is_no_stdin_of_the_caller_s_own(tmp_path: Path) -> None:
    """``stdin=None`` is subprocess's default (inherit): the token still goes down the pipe."""
    probe = _probe(tmp_path)
    assert fabguard._TokenOnStdin.Popen([str(probe), "--token", TOKEN, "--insecure"], stdin=None).wait(60) == 0
    seen = json.loads((tmp_path / "seen.json").read_text())
    assert seen == {"argv": ["--token-stdin", "--insecure"], "stdin": TOKEN + "\n"}
