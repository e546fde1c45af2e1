"""``labqfl plan --self-masks --threshold T --colluders C`` (review s37 F10): what a self-mask run over nodes costs in
liveness — the survivors every round needs, max(t, 2, ⌊(N + c)/2⌋ + 1), and the dropouts it tolerates — was only
printed once ``labqfl run`` had started; ``plan`` had no ``--threshold``/``--colluders`` and said nothing of it. Now
``plan`` takes both as ``run`` does (refused the same way), prints the same line and, with ``--json``, the same
``consistency`` object. And neither ``--help`` names ``min_survivors`` without its value (2 in ``labqfl run``)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from typer.testing import CliRunner

from labqfl.cli import app

#: review s38 G1: the line says when a dropout is tolerated (before the masked upload arrives)
WHEN = (", counting a client lost before its masked upload arrives (one lost after it, at the consistency or unmask "
        "stage, aborts the round and stops the job)")

runner = CliRunner()


def _plan(*extra: str) -> Any:
    return runner.invoke(app, ["plan", "--rounds", "2", "--duration", "1", *extra])


# the default station: 4 clients, graph all, t = 3 (a majority of 4 holders); default c = t − 1 = 2
@pytest.mark.parametrize(("extra", "c", "t", "need"), [
    ((), 2, 3, 4),
    (("--colluders", "0"), 0, 3, 3),
    (("--threshold", "2", "--colluders", "1"), 1, 2, 3),
])
def test_plan_says_the_survivors_each_round_needs_and_the_dropouts_it_tolerates(
        extra: tuple[str, ...], c: int, t: int, need: int) -> None:
    why = "--colluders" if "--colluders" in extra else "default t - 1"
    line = (f"self-masks: t = {t}, {c} colluding client(s) tolerated ({why}), so every round needs {need} of 4 "
            f"clients to survive and sign its survivor set ({4 - need} dropout(s) tolerated)")
    r = _plan("--self-masks", *extra)
    assert r.exit_code == 0, r.output
    assert line in " ".join(r.output.split())
    r = _plan("--self-masks", *extra, "--json")
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)["consistency"]
    assert doc.pop("line").startswith(line + WHEN + "; job job-")
    assert doc == {"threshold": t, "colluders": c, "colluders_default": "--colluders" not in extra, "need": need,
                   "clients": 4, "dropouts_tolerated": 4 - need, "dropouts_tolerated_stages": ["keys", "refs", "mask"]}


def test_plan_without_self_masks_or_in_process_has_no_consistency_stage() -> None:
    for extra in ((), ("--self-masks", "--in-process")):
        r = _plan(*extra, "--json")
        assert r.exit_code == 0, r.output
        assert "consistency" not in json.loads(r.stdout)


@pytest.mark.parametrize(("extra", "error"), [
    (("--colluders", "1"), "error: --colluders 1: needs --self-masks"),
    (("--self-masks", "--in-process", "--colluders", "0"), "error: --colluders 0: needs the run over nodes"),
    (("--self-masks", "--colluders", "3"), "error: --colluders 3: expected 0 ... 2 (below the self-mask threshold t = 3"),
    (("--threshold", "2"), "error: --threshold 2 needs --self-masks"),
])
def test_plan_refuses_what_run_refuses(extra: tuple[str, ...], error: str) -> None:
    r = _plan(*extra)
    assert r.exit_code != 0
    assert " ".join(r.output.split()).startswith(error), r.output
    assert len(r.output.strip().splitlines()) == 1, r.output


@pytest.mark.parametrize("command", [["run"], ["plan"], ["node", "train"], ["node", "sign-spec"]])
def test_help_gives_the_survivor_rule_with_values(command: list[str]) -> None:
    r = runner.invoke(app, [*command, "--help"], terminal_width=200)
    assert r.exit_code == 0
    text = " ".join(r.output.replace("│", " ").split())
    assert "max(t, min_survivors" not in text
    assert "max(t, 2, floor((N + C)/2) + 1)" in text
