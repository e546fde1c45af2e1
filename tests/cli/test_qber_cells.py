"""QBER cells in ``labqfl run``'s summary and ``labqfl keyrate``'s table: the one percent format of every
other table, and "—" where there is no value (physics review s34 F6)."""

from __future__ import annotations

import io
import json
import re
from pathlib import Path
from typing import Any

from rich.console import Console
from typer.testing import CliRunner

from labqfl.cli import app

runner = CliRunner()


def test_run_summary_shows_no_qber_for_a_pair_without_a_block() -> None:
    """A pair whose distillation processed no block has ``qber_x`` None: it printed "QBER 0.00 %", a
    perfect-looking error rate for a pair that produced nothing."""
    from labqfl.cli.run import _render

    pair: dict[str, Any] = {"sifted_bits": 120_000, "qber_x": None, "final_key_bits": 0,
                            "secure_key_rate_bps": 0.0, "status": "no key"}
    metrics: dict[str, Any] = {"run": "r", "status": "done",
                               "distill": {"pairs": {"C1-C4": pair, "C1-C2": {**pair, "qber_x": 0.0057}}}}
    con = Console(file=io.StringIO(), width=160, force_terminal=False)
    _render(con, metrics, Path("run"))
    out = " ".join(con.file.getvalue().split())
    assert "C1-C4: sifted 120,000 bits, QBER —," in out
    assert "C1-C2: sifted 120,000 bits, QBER 0.57 %," in out


def test_keyrate_table_shows_qber_in_percent(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """keyrate printed the QBER as a three-decimal fraction (0.0057 as "0.006") in a column every other
    command fills with percent."""
    import labqfl.cli.common as common

    args = ["keyrate", "--pair", "C1-C2", "--block-size", "1e9"]
    qber = json.loads(runner.invoke(app, [*args, "--json"]).stdout)
    q = next(v for k, v in _flat(qber) if k == "qber_key")
    # a console wide enough for the whole table, whatever width an earlier test or the terminal left the CLI's
    buf = io.StringIO()
    monkeypatch.setattr(common, "console", Console(file=buf, width=240, force_terminal=False))
    r = runner.invoke(app, args)
    assert r.exit_code == 0, r.output
    out = buf.getvalue()
    assert f"{100 * q:.2f} %" in out
    assert not re.search(rf"\b{q:.3f}\b", out)


def _flat(doc: Any, key: str = "") -> list[tuple[str, Any]]:
    if isinstance(doc, dict):
        return [kv for k, v in doc.items() for kv in _flat(v, k)]
    if isinstance(doc, list):
        return [kv for v in doc for kv in _flat(v, key)]
    return [(key, doc)]
