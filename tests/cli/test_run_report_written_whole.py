"""Review s40 user LOW-5 (d): ``labqfl run``'s last progress line, "report written: <whole path>", folded the path
mid-word in rich's description column ("…/runs/20261207T174518.083826Z-run/repo" / "rt.html"). It names the run
folder and the file now, which fit the column whole at 80 columns and more; the whole path is the run's closing
``report: …`` line (:func:`labqfl.cli.common.print_path`, never broken) and ``--json``'s ``report``."""

from __future__ import annotations

import io
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from rich.console import Console

import labqfl.report
from labqfl.cli import common as cli_common
from labqfl.mainjob import MainJob

RUN = Path("/home/alice/lab/qkd-testbed/runs/20261207T050059.017454Z-run")  # a long run-folder path


def _message(monkeypatch: pytest.MonkeyPatch) -> str:
    """The message MainJob's report phase ends with (its report writing left out)."""
    said: list[str] = []
    monkeypatch.setattr(labqfl.report, "write_report", lambda *a, **k: RUN / "report.html")
    job = SimpleNamespace(path=RUN, run_record=None, state={}, _phase=lambda *a: None,
                          _write_metrics=lambda status: {"status": status},
                          progress=lambda phase, done, total, message: said.append(message))
    MainJob._report(job, SimpleNamespace(as_dict=dict))  # type: ignore[arg-type]
    return said[-1]


@pytest.mark.parametrize("width", [80, 120, 200])
def test_the_report_written_line_breaks_no_word(width: int, monkeypatch: pytest.MonkeyPatch) -> None:
    message = _message(monkeypatch)
    assert message.startswith("report written: ") and message.endswith(f"{RUN.name}/report.html"), message
    con = Console(file=io.StringIO(), width=width, force_terminal=False)
    monkeypatch.setattr(cli_common, "console", con)
    with cli_common.progress_bar(percent=True) as prog:
        prog.update(prog.add_task(message, total=1.0), completed=1.0)
    out: Any = con.file.getvalue()
    words = message.split()
    for word in words:  # every word of the message whole on one line of the output
        assert any(word in line for line in out.splitlines()), (word, out)
