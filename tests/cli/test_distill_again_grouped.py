"""A second ``labqfl distill`` of one recording into the same stores says so once (review s36 F21): its error line
repeated "1 block(s) skipped: already distilled by an earlier run of this recording into these stores (its key is
there, or its raw bits were spent)" for each of the 6 pairs (~1,300 characters), and its provenance line read
"blocks stored …: none): no key block stored: nothing is claimed". Now the pairs of one reason are named once,
before it. Since review s38 user F6 the second run is refused before any work: that one line, no table, no run
folder."""

from __future__ import annotations

import json
from typing import Any

import pytest
from typer.testing import CliRunner

from labqfl.cli import app
from labqfl.cli import common as cli_common
from labqfl.cli.common import judge_key

runner = CliRunner()


def test_pairs_of_one_reason_are_named_once_before_it() -> None:
    pairs = {p: {"final_key_bits": 0, "abort_reasons": [], "sifted_bits": 1000 + i, "skipped_blocks": 1}
             for i, p in enumerate(["C1-C2", "C1-C3", "C1-C4", "C2-C3", "C2-C4", "C3-C4"])}
    out: dict[str, Any] = {"pairs": pairs}
    judge_key(out)
    assert out["error"] == ("no pair produced key: all 6 pairs (C1-C2, C1-C3, C1-C4, C2-C3, C2-C4, C3-C4): "
                            f"{cli_common.ALREADY_DISTILLED}")
    out = {"pairs": {"C1-C2": {"final_key_bits": 0, "abort_reasons": ["QBER 12 % above 11 %"]},
                     "C1-C3": {"final_key_bits": 0, "abort_reasons": ["QBER 12 % above 11 %"]},
                     "C2-C3": {"final_key_bits": 0, "abort_reasons": [], "sifted_bits": 5},
                     "C1-C4": {"final_key_bits": 10, "abort_reasons": []}}}
    judge_key(out)
    assert out["warning"] == ("no key from 3 of 4 pairs: C1-C2, C1-C3: QBER 12 % above 11 %; C2-C3: no block "
                              "distilled (5 sifted bits)")


@pytest.fixture(scope="module")
def distilled_twice(tmp_path_factory: pytest.TempPathFactory, small_station_writer: Any) -> Any:
    """A 0.2 s recording of the small station distilled into fresh stores, then again into the same stores."""
    tmp = tmp_path_factory.mktemp("again")
    station = small_station_writer(tmp, name="small-again", file="small.toml")
    r = runner.invoke(app, ["acquire", "--config", str(station), "--duration", "0.2", "--out", str(tmp / "rec.h5"),
                            "--data-dir", str(tmp / "data"), "--json"])
    assert r.exit_code == 0, r.output
    base = ["distill", str(tmp / "rec.h5"), "--data-dir", str(tmp / "data"), "--out", str(tmp / "runs")]
    first = runner.invoke(app, [*base, "--json"])
    assert first.exit_code == 0, first.output
    runs = sorted((tmp / "runs").iterdir())
    pushed: list[int] = []
    with pytest.MonkeyPatch.context() as mp:  # review s38 user F6: refused before any tag block is slotted
        from labqfl.qkd.pipeline import Distiller

        real = Distiller.push
        mp.setattr(Distiller, "push", lambda self, b: pushed.append(1) or real(self, b))
        again = runner.invoke(app, base)
        again_json = runner.invoke(app, [*base, "--json"])
        other_size = runner.invoke(app, [*base, "--block-bits", "20000"])  # overlapping blocks: refused at once too
    assert pushed == [] and sorted((tmp / "runs").iterdir()) == runs, "slotted, or a run folder was left"
    return again, again_json, other_size


def test_a_second_distill_names_the_reason_once_in_a_short_line(distilled_twice: Any) -> None:
    r = distilled_twice[0]
    assert r.exit_code == 1, r.output
    error = [ln for ln in r.stderr.split("\n") if ln.startswith("error:")]
    assert len(error) == 1, r.stderr
    line = " ".join(r.stderr[r.stderr.index("error:"):].split())
    assert line.count("already distilled") == 1 and len(line) < 400, line
    assert "nothing new to store" in line


def test_a_second_distill_is_refused_before_any_work(distilled_twice: Any) -> None:
    """Review s38 user F6: the refusal came after slotting and sifting the whole recording, the per-pair table and
    a new run folder; now it is the one line, before any of them (the fixture checks no tag block was slotted and
    no run folder made), and with --json one error object."""
    r, rj, other = distilled_twice
    assert r.stdout.strip() == "" and "QBER" not in r.stderr and "key provenance" not in r.stderr
    assert " ".join(r.stderr.split()).startswith("error: ") and "rec.h5: 1 pair already distilled" in r.stderr
    assert rj.exit_code == 1
    doc = json.loads(rj.stdout)
    assert doc["exit_code"] == 1 and "already distilled into these stores" in doc["error"] and "pairs" not in doc
    assert other.exit_code == 1 and "overlaps slots" in other.stderr and "another block size" in other.stderr
