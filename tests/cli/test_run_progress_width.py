"""``labqfl run``'s progress lines and security line at 80 columns (review s36 F16): rich shrank every column of a
progress line alike, so a phase's elapsed time read ``1…`` and the report path ``report.h…``; the ~600-character
security statement was printed on one line while every other line wraps. Now only a progress line's description
wraps (a long word folds, nothing is cut) and the statement wraps at words."""

from __future__ import annotations

import io
import re
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from labqfl.cli import common as cli_common

PATH = "/home/alice/lab/qkd-testbed/runs/20261207T050059.017454Z-run/report.html"  # a long run-folder path


@pytest.mark.parametrize("width", [80, 200])
def test_progress_lines_keep_times_and_description_whole(width: int, monkeypatch: pytest.MonkeyPatch) -> None:
    con = Console(file=io.StringIO(), width=width, force_terminal=False)
    monkeypatch.setattr(cli_common, "console", con)
    with cli_common.progress_bar(percent=True) as prog:
        for text in ("keys distilled into the clients' key stores", f"report written: {PATH}"):
            prog.update(prog.add_task(text, total=1.0), completed=1.0)
    out = con.file.getvalue()
    assert "…" not in out, out
    assert max(len(line) for line in out.splitlines()) <= width, out
    assert len(re.findall(r"100% \d+:\d\d:\d\d", out)) == 2, out  # each phase's percentage and elapsed time
    assert "keys distilled into the clients' key stores" in out
    assert PATH in re.sub(r"\s+", "", out.split("report written:")[1]), out  # folded, not cut


def test_the_run_summary_wraps_the_security_statement() -> None:
    from labqfl.cli.run import _render

    statement = "one-time-pad masks with QKD keys from the node key stores; the keys: " + "no physical security " * 30
    metrics: dict[str, Any] = {"run": "r", "status": "complete", "train": {
        "task": "mnist-qnn", "final_test_accuracy": 0.97, "rounds_run": 10, "key_bits_total": 26_880,
        "key_source": "qkd", "security": statement.strip()}}
    con = Console(file=io.StringIO(), width=80, force_terminal=False)
    _render(con, metrics, Path("runs/r"))
    out = con.file.getvalue()
    assert max(len(line) for line in out.splitlines()) <= 80, out
    assert f"security: {statement.strip()}" in " ".join(out.split())
