"""Review s36 user F18: runs with CSPRNG masks said "key bits per pair per round", "key used 13.8 kbit" and
"Key consumption (mask key)" though no QKD key is used. ``labqfl train``, the GUI's Training tab and the report
call them CSPRNG mask bits now; QKD runs keep "key"."""

from __future__ import annotations

import re
from pathlib import Path

from typer.testing import CliRunner

from labqfl.cli import app

runner = CliRunner()


def test_train_csprng_says_mask_bits_not_key(tmp_path: Path) -> None:
    r = runner.invoke(app, ["train", "--task", "mnist-qnn", "--clients", "2", "--rounds", "1", "--q", "8",
                            "--keys", "csprng", "--out", str(tmp_path)], env={"COLUMNS": "250"})
    assert r.exit_code == 0, r.output
    text = " ".join(r.stderr.split())
    assert "mask bits (CSPRNG masks, no QKD key used) per pair per round" in text
    assert "key bits per pair" not in text and "key per round" not in text


def test_gui_training_words_follow_the_mask_keys() -> None:
    from labqfl.gui.panels.training import bits_text, key_plot_title, used_text

    assert "no QKD key" in key_plot_title("csprng") and "QKD mask key" in key_plot_title("qkd")
    assert used_text("csprng", 13800).startswith("CSPRNG mask bits") and "no QKD key used" in used_text("csprng", 1)
    assert used_text("qkd", 13800).startswith("key used")
    assert "CSPRNG mask bits" in bits_text("csprng", 384) and bits_text("qkd", 384).endswith(" key")


def test_report_csprng_column(tmp_path: Path) -> None:
    from labqfl.report import write_report
    from labqfl.runs import RunRecord

    train = {"task": "mnist-qnn", "clients": 2, "q": 8, "rounds_run": 1, "final_test_accuracy": 0.9,
             "key_bits_total": 384, "key_source": "csprng"}
    with RunRecord.create("run", None, tmp_path, capture_log=False) as run:
        page = write_report(run, {"status": "complete", "train": train}).read_text()
    heads = re.findall(r"<th>([^<]*)</th>", page)
    assert "mask bits (CSPRNG, no QKD key used)" in heads and "key bits used" not in heads
