"""Bad option values get one error line naming the option, the value and what was expected.

Acquisition lengths: one bound (``labqfl.contracts.types.MAX_DURATION_S``) in every command that takes
one. Before: ``labqfl run --duration 1e9`` and ``labqfl node up --duration 1e9`` failed with "node C1 ended
session ctl: DEADLINE_EXCEEDED" (the session deadline overflowed gRPC's clock), and ``labqfl acquire
--duration 1e9`` with "ValueError: duration_s must be in (0, 1e+06] s", the simulator's argument."""

from __future__ import annotations

import math
import os

import numpy as np
import pytest
from typer.testing import CliRunner

from labqfl.cli import app
from labqfl.contracts.types import MAX_DURATION_S, duration_problem
from labqfl.nodes.common import NodeError
from labqfl.qkd.messaging import Message

runner = CliRunner()


@pytest.mark.parametrize("good", [1e-3, 10, 10.0, np.float32(2.5), MAX_DURATION_S])
def test_usable_durations_pass(good: float) -> None:
    assert duration_problem(good) is None


@pytest.mark.parametrize("bad", [0, 0.0, -1.0, math.nan, math.inf, -math.inf, MAX_DURATION_S * (1 + 1e-12), 1e9,
                                 "ten", None])
def test_unusable_durations_name_the_range_and_the_value(bad: object) -> None:
    problem = duration_problem(bad)  # type: ignore[arg-type]
    assert problem is not None and problem.startswith("must be a number of seconds in (0, 1e+06], got ")
    assert problem.endswith(repr(bad))


@pytest.mark.parametrize("argv", [
    ["acquire", "--duration", "1e9"],
    ["run", "--duration", "1e9"],
    ["run", "--duration", "0", "--block-bits", "100000"],
    ["distill", "--live", "--duration", "1e9"],
    ["distill", "--live", "--duration", "-2", "--block-bits", "100000"],
    ["node", "up", "--duration", "1e9"],
    ["node", "up", "--duration", "0", "--block-bits", "100000"],
    ["node", "acquire", "--certs", ".", "--detector", "127.0.0.1:1", "--optics", "127.0.0.1:2",
     "--client", "C1=127.0.0.1:3", "--duration", "1e9"],
    ["gui", "--nodes", "local", "--duration", "1e8", "--screenshot", "never.png"],
    ["plan", "--duration", "nan"],  # review s32: "ValueError: duration must be > 0 seconds, got nan"
    ["plan", "--duration", "0"],  # review s32: "--duration holds no data"
])
def test_every_command_refuses_an_unusable_duration_in_one_line_naming_the_option(argv: list[str]) -> None:
    r = runner.invoke(app, argv)
    assert r.exit_code == 1, r.output
    assert len(r.stderr.splitlines()) == 1, r.stderr  # no empty line from a progress bar that never showed
    assert r.stderr.startswith("error: --duration must be a number of seconds in (0, 1e+06], got "), r.stderr


def test_acquire_names_a_block_length_beyond_the_bound() -> None:
    r = runner.invoke(app, ["acquire", "--duration", "1", "--block", "1e8"])
    assert r.exit_code == 1
    assert r.stderr.strip() == "error: --block must be a number of seconds in (0, 1e+06], got 100000000.0"


def test_the_nodes_refuse_an_unusable_duration_from_the_network() -> None:
    """The optics and detector nodes check what the operator's messages carry, not only the CLI."""
    from labqfl.nodes.detector import DetectorNode
    from labqfl.nodes.optics import OpticsNode

    want = r"duration must be a number of seconds in \(0, 1e\+06\], got 1000000000.0"
    detector = DetectorNode.__new__(DetectorNode)  # the check comes before any of its state is used
    with pytest.raises(NodeError, match=want):
        detector.ctl_run(Message("ctl/run", {"acq": "a", "duration": 1e9}))
    optics = OpticsNode.__new__(OpticsNode)
    with pytest.raises(NodeError, match=want):
        optics._tags("detector", Message("hello", {"acq": "a", "duration": 1e9}))


@pytest.mark.parametrize(("argv", "line"), [
    (["run", "--q", "7"], "--q must be one of 8, 16, 32 (bits per masked value), got 7"),
    (["plan", "--q", "7"], "--q must be one of 8, 16, 32 (bits per masked value), got 7"),
    (["train", "--q", "12"], "--q must be one of 8, 16, 32 (bits per masked value), got 12"),
    (["train", "--lr", "0"], "--lr must be a positive finite number, got 0.0"),
    (["train", "--clip", "-1"], "--clip must be a positive finite number, got -1.0"),
    (["train", "--non-iid", "--alpha", "nan"], "--alpha must be a positive finite number, got nan"),
    (["train", "--clients", "300"], "bit budget too small: N=300 clients with q=8 leave -1 bit(s) per value "
                                    "(b = q - ceil(log2 N)); at least 2 are needed. Use q = 16 or 32."),
    (["train", "--clients", "100000", "--q", "32"], "--clients 100000: at most 20000 clients train in one process"),
    (["train", "--clients", "5000", "--q", "32"],
     "--clients 5000 with --graph all makes 12,497,500 mask pairs per round; at most 10,000,000 fit one process "
     "(use --graph ring-k --k K: N·K/2 pairs)"),
    (["train", "--clients", "900", "--q", "32"],
     "--clients 900: cannot split 800 training examples over 900 clients (each needs ≥ 1: at most 800 clients)"),
    (["plan", "--clients", "300"], "--clients 300 but station 'sagnac-4client-sim' has 4 clients; expected 4 "
                                   "(a station holds 2 to 256 clients)"),
    (["run", "--task", "nope"], "--task 'nope' unknown; expected one of mnist-qnn, ntangled, magic, mnist-lenet5"),
    (["run", "--graph", "ring-k", "--k", "3"], "--graph/--k: graph 'ring-k' needs an even k >= 2 neighbours, got k=3"),
    (["run", "--eps-sec", "0"], "--eps-sec must be in (0, 1), got 0.0"),
    # silently ignored before (the folder's rounds were trained)
    (["run", "--resume", "somerun", "--rounds", "6", "--duration", "9"],
     "--resume continues the run with the settings in its folder; --rounds, --duration cannot change them "
     "(start a new run to use other settings)"),
    # plan predicted a 26 s run where `run --rounds 3 --duration 0.5` refuses: now the same refusal (0.3 s since the
    # station's 10 s operating point needs 0.508 s, 1.6 % above 0.5 s)
    (["plan", "--rounds", "3", "--duration", "0.3"],
     "--duration (0.3 s) is too short for the block-size rule: a positive-key block on every pair needs ≥ 0.508 s "
     "of data (limiting pair C1-C4: 8.46e+06 of its slots at 16.7 % of the laser's); use a longer --duration"),
    # review s32: "ValueError: eps_sec and eps_cor must lie in (0, 1), got 0.0, 1e-15" after 3.5 s
    (["plan", "--eps-sec", "0"], "--eps-sec must be in (0, 1), got 0.0"),
])
def test_training_and_planning_options_are_refused_in_one_line_naming_the_option(argv: list[str], line: str) -> None:
    """Before: "SecAggConfig.q must be one of (8, 16, 32)", "ValueError: learning rate must be …", a hint
    "Use q >= 11" (no such word size), ``run`` printed an empty line above its error, ``train --clients
    100000 --q 32`` ran out of memory building its mask graph, and 900 clients of the 800 examples said
    "ValueError: cannot split …"."""
    r = runner.invoke(app, argv)
    assert r.exit_code == 1, r.output
    assert r.stderr == f"error: {line}\n"


@pytest.mark.parametrize(("argv", "line"), [
    (["calibrate", "visibility", "--pair", "C1-C9"],
     "--pair: unknown client(s) C9; station 'sagnac-4client-sim' has C1, C2, C3, C4"),
    (["calibrate", "visibility", "--pair", "C2-C2"], "--pair C2-C2: expected two different clients"),
    (["calibrate", "visibility", "--pair", "C1C2"], "--pair 'C1C2' is not of the form 'Ci-Cj'"),
    (["calibrate", "vpi", "--client", "C7", "--client", "C1"],
     "--client: unknown client(s) C7; station 'sagnac-4client-sim' has C1, C2, C3, C4"),
])
def test_calibration_refuses_unknown_clients_before_making_a_run_folder(argv: list[str], line: str, tmp_path) -> None:
    """Before: a run folder with an empty calibration, then "failed: visibility: pair (C1, C9) must name…"."""
    r = runner.invoke(app, [*argv, "--out", str(tmp_path / "runs")])
    assert r.exit_code == 1, r.output
    assert r.stderr == f"error: {line}\n"
    assert not (tmp_path / "runs").exists()


def test_ctrl_c_inside_a_kernel_load_is_reported_as_an_interruption(capsys, unguarded) -> None:
    """Ctrl-C while Numba loaded a cached kernel (a callback of C code) surfaced as a 77-line
    traceback ending "SystemError: CPUDispatcher(...) returned a result with an exception set"; it
    is the interruption it was. A SystemError with no interrupt behind it still propagates."""
    import typer

    from labqfl.cli.common import EXIT_INTERRUPTED, handle_errors

    @handle_errors
    def load_interrupted() -> None:
        try:
            raise KeyboardInterrupt
        except KeyboardInterrupt as exc:
            raise SystemError("CPUDispatcher(<function _place_kernel>) returned a result with an exception set") \
                from exc

    @handle_errors
    def broken() -> None:
        raise SystemError("a real bug")

    with pytest.raises(typer.Exit) as ex:
        load_interrupted()
    assert ex.value.exit_code == EXIT_INTERRUPTED
    assert capsys.readouterr().err == "error: interrupted by user (Ctrl-C)\n"
    with pytest.raises(SystemError, match="a real bug"):
        broken()


@pytest.mark.parametrize(("argv", "line"), [
    (["keys", "export", "--bits", "abc"],
     "error: Invalid value for '--bits': 'abc' is not a valid integer. (see 'labqfl keys export -h')"),
    (["nosuch"], "error: No such command 'nosuch'. (see 'labqfl -h')"),
    (["station", "make", "--clients"], "error: Option '--clients' requires an argument."),
    # these two ended in OverflowError tracebacks (bind(): port must be 0-65535; date value out of range)
    (["keys", "serve", "--certs", ".", "--port", "70000"],
     "error: Invalid value for '--port': 70000 is not in the range 0<=x<=65535. (see 'labqfl keys serve -h')"),
    (["keys", "certs", "zz", "--days", "3000000"],
     "error: Invalid value for '--days': 3000000 is not in the range 1<=x<=36500. (see 'labqfl keys certs -h')"),
])
def test_usage_errors_are_one_line_too(argv: list[str], line: str) -> None:
    """Click's usage errors came as a boxed block of 5 lines (usage, hint, box); the console script
    now prints them as every other failure: one line on stderr, exit code 2, nothing on stdout."""
    import subprocess
    import sys
    from pathlib import Path

    exe = Path(sys.executable).parent / "labqfl"
    r = subprocess.run([str(exe), *argv], capture_output=True, text=True, timeout=120,
                       env={**os.environ, "COLUMNS": "200"})
    assert (r.returncode, r.stdout, r.stderr) == (2, "", line + "\n")


def test_the_bare_command_still_prints_its_help() -> None:
    import subprocess
    import sys
    from pathlib import Path

    r = subprocess.run([str(Path(sys.executable).parent / "labqfl")], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "Usage: labqfl" in r.stdout and r.stderr == ""


@pytest.fixture
def unguarded(monkeypatch):  # type: ignore[no-untyped-def]
    """This worker process as if it had never guarded a station: the error line then has no "; instruments were
    put in their safe state" ending, whichever test files (`--dist loadfile`) ran in it before."""
    import labqfl.station

    monkeypatch.setattr(labqfl.station, "_EVER_GUARDED", False)


def test_sigterm_of_a_node_run_is_reported_as_such(capsys, unguarded) -> None:
    """`labqfl run` turns SIGTERM into KeyboardInterrupt("SIGTERM") to stop its nodes in order
    (labqfl.nodes.runjob.terminate_as_interrupt); it was reported as "interrupted by user (Ctrl-C)"."""
    import typer

    from labqfl.cli.common import EXIT_TERMINATED, handle_errors

    @handle_errors
    def terminated() -> None:
        raise KeyboardInterrupt("SIGTERM")

    with pytest.raises(typer.Exit) as ex:
        terminated()
    assert ex.value.exit_code == EXIT_TERMINATED == 143
    assert capsys.readouterr().err == "error: terminated (SIGTERM)\n"



def test_a_distillation_that_makes_no_key_at_all_exits_1_after_its_summary(small_station_file, tmp_path) -> None:
    """Review s32 M2(b): `distill --block-bits 1000`, every block aborted ("phase-error bound … above threshold"),
    exited 0 — a scheduler could not tell "got key" from "got nothing". The summary still comes (one JSON document
    with an "error" field), then one error line naming each pair and why, exit 1."""
    import json

    r = runner.invoke(app, ["distill", "--live", "--duration", "0.02", "--block-bits", "1000", "--config",
                            str(small_station_file), "--data-dir", str(tmp_path / "d"), "--out", str(tmp_path / "runs"),
                            "--json"])
    assert r.exit_code == 1, r.output
    doc = json.loads(r.stdout)
    assert doc["error"].startswith("no pair produced key: C1-C2: ") and "threshold" in doc["error"]
    errors = [ln for ln in r.stderr.splitlines() if ln.startswith("error:")]  # (a fresh install also says it compiles)
    assert errors == [f"error: {doc['error']}"] and r.stderr.splitlines()[-1] == errors[0]


def test_the_distill_summary_names_a_re_locked_sync_chain(small_station_file, tmp_path) -> None:
    """Lab review s33 H1: a sync chain that re-locked on another grid (``slotting.sync_relocks``) is said in the
    slotting line, in yellow, beside the dropped and spurious syncs (it was only in the JSON)."""
    import io
    import json
    from types import SimpleNamespace

    from rich.console import Console

    from labqfl.cli.distill import _render

    r = runner.invoke(app, ["distill", "--live", "--duration", "0.02", "--block-bits", "1000", "--config",
                            str(small_station_file), "--data-dir", str(tmp_path / "d"), "--out", str(tmp_path / "runs"),
                            "--json"])
    doc = json.loads(r.stdout)
    lines = {}
    for relocks in (0, 2):
        doc["slotting"]["sync_relocks"] = relocks
        con = Console(file=io.StringIO(), width=400, force_terminal=True, highlight=False)
        _render(con, doc, None, SimpleNamespace(block_bits=1000))
        lines[relocks] = next(ln for ln in con.file.getvalue().splitlines() if "slotting:" in ln)
    assert "re-locked" not in lines[0] and "sync chain re-locked 2 time(s)" in lines[2]
    assert "\x1b[33m" in lines[2]  # yellow, as dropped slots
