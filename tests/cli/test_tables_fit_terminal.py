"""No table of ``distill``, ``keys status``, ``keyrate`` or ``station show`` cuts a number, a unit or a header at
80 columns (review s36 F3, F4, F11): rich shrank a table wider than the terminal and cut its cells with "…"
(``distill``'s final key bits read ``106…``, ``keys status``'s available bits ``auth 65536, gener…``, ``keyrate``'s
unit ``kbit…``). :func:`labqfl.cli.common.print_table` prints the table as it is where it fits (200 columns), else
one ``header: value`` record per row. Each test checks, at 80 and at 200 columns, that every value of the command's
--json appears whole in its human output, with the headers that carry the units."""

from __future__ import annotations

import io
import json
import re
import shutil
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from rich.console import Console
from typer.testing import CliRunner

from labqfl.cli import app
from labqfl.cli import common as cli_common

runner = CliRunner()
WIDTHS = (80, 200)


def _flat(text: str) -> str:
    """``text`` with its lines joined by one space each (rich wraps a header such as "QBER X key" in a table)."""
    return " ".join(text.split())


def _whole(text: str, width: int, expected: list[str]) -> None:
    """Every string of ``expected`` is in ``text`` on one line, no line is wider than ``width``, nothing is cut."""
    assert "…" not in text, text
    # a path is printed on one line however narrow the terminal (common.print_path): not a table's line
    assert max(len(line) for line in text.splitlines() if not line.startswith(("run folder:", "source:"))) <= width
    lines = text.splitlines()
    missing = [e for e in expected if not any(e in line for line in lines)]
    assert not missing, (missing, text)


def _invoke(args: list[str], width: int, monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.setattr(cli_common.console, "_width", width)  # the CLI's console, whatever COLUMNS was at import
    r = runner.invoke(app, args)
    assert r.exit_code == 0, (r.output, r.exception)
    return r


@pytest.fixture(scope="module")
def distilled(tmp_path_factory: pytest.TempPathFactory, small_station_writer: Any) -> SimpleNamespace:
    """A 0.2 s recording of the small simulated station distilled into fresh stores: its metrics.json summary."""
    tmp = tmp_path_factory.mktemp("tables")
    station = small_station_writer(tmp, name="small-tables", file="small.toml")
    r = runner.invoke(app, ["acquire", "--config", str(station), "--duration", "0.2", "--out", str(tmp / "rec.h5"),
                            "--data-dir", str(tmp / "data"), "--json"])
    assert r.exit_code == 0, r.output
    logs = tmp / "logs"  # the CSPRNG clients' private logs before any store exists (a second distill's data dir)
    shutil.copytree(tmp / "data", logs)
    r = runner.invoke(app, ["distill", str(tmp / "rec.h5"), "--data-dir", str(tmp / "data"), "--out",
                            str(tmp / "runs"), "--json"])
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    return SimpleNamespace(tmp=tmp, data=tmp / "data", logs=logs, rec=tmp / "rec.h5", doc=doc,
                           metrics=json.loads((Path(doc["run"]) / "metrics.json").read_text()))


@pytest.mark.parametrize("width", WIDTHS)
def test_distill_table_keeps_every_value_whole(distilled: SimpleNamespace, width: int) -> None:
    from labqfl.cli.distill import _render

    con = Console(file=io.StringIO(), width=width, markup=False, highlight=False)
    _render(con, distilled.metrics, None, SimpleNamespace(block_bits=100_000))
    text = con.file.getvalue()
    expected = []
    for pair, p in distilled.metrics["pairs"].items():
        assert p["final_key_bits"] > 0
        expected += [pair, f"{p['n_slots']:,}", f"{p['sifted_bits']:,}", f"{p['final_key_bits']:,}",
                     f"{p['secure_key_rate_bps'] / 1e3:.1f}", f"{100 * p['error_rate']['X_key']:.2f} %",
                     f"{p['efficiency_f']:.3f}", f"{100 * p['phase_error_bound']:.2f} %"]
    _whole(text, width, expected)
    for header in ("QBER X key", "Y test (clicks)", "kbit/s", "final", "sifted", "e_ph ≤"):
        assert header in _flat(text), (header, text)
    if width == 80:  # one record per pair: each value beside its header
        p = next(iter(distilled.metrics["pairs"].values()))
        assert f"final: {p['final_key_bits']:,}" in text and f"kbit/s: {p['secure_key_rate_bps'] / 1e3:.1f}" in text


@pytest.mark.parametrize("width", WIDTHS)
def test_keys_status_table_keeps_every_pool_whole(distilled: SimpleNamespace, width: int,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    doc = json.loads(runner.invoke(app, ["keys", "status", "--data-dir", str(distilled.data), "--json"]).stdout)
    text = _invoke(["keys", "status", "--data-dir", str(distilled.data)], width, monkeypatch).stderr
    expected = []
    for info in doc["nodes"].values():
        for pair, a in info["pairs"].items():
            assert "general" in a["available"]
            # one column per pool since review s40 user LOW-3, thousands separators
            expected += [pair, *(f"{v:,}" for v in a["available"].values()), f"{a['added']:,}"]
    _whole(text, width, expected)
    headers = ("available auth [bits]", "available general [bits]", "added [bits]")
    for header in headers if width == 200 else {w for h in headers for w in h.split()}:  # 80: broken over lines
        assert header in _flat(text), (header, text)
    # the states no store holds bits in: named once, not a column of zeros
    assert "reserved, exporting, exported, pending: 0 bits at every store and pair shown" in _flat(text)


@pytest.mark.parametrize("width", WIDTHS)
def test_keyrate_table_keeps_every_value_and_unit_whole(width: int, monkeypatch: pytest.MonkeyPatch) -> None:
    rows = json.loads(runner.invoke(app, ["keyrate", "--json"]).stdout)
    rows = rows["results"]
    text = _invoke(["keyrate"], width, monkeypatch).stderr
    expected = []
    for r in rows:
        expected += [r["pair"], f"{r['eta_cw']:.3g}/{r['eta_ccw']:.3g}", f"{100 * r['phase_error_upper']:.2f} %",
                     f"{r['intensities_i'][0]:.3g}/{r['intensities_j'][0]:.3g}", f"{r['gain_key']:.2e}",
                     f"{r['bits_per_pulse']:.2e}", f"{r['bits_per_second'] / 1e3:.1f}",
                     f"{r['asymptotic_bits_per_second'] / 1e3:.1f}"]
    _whole(text, width, expected)
    for header in ("kbit/s", "asymptotic kbit/s", "bit/pulse", "η cw/ccw", "μ i/j", "e_ph^U"):
        assert header in _flat(text), (header, text)


@pytest.mark.parametrize("width", WIDTHS)
def test_station_show_tables_keep_every_value_and_unit_whole(width: int, monkeypatch: pytest.MonkeyPatch) -> None:
    from labqfl.config import load_station_config

    cfg = load_station_config()
    text = _invoke(["station", "show"], width, monkeypatch).stderr
    expected = []
    for c in cfg.clients:
        expected += [f"signal {c.intensities[0]:g}; decoys " + ", ".join(f"{v:g}" for v in c.intensities[1:]),
                     str(c.intensity_probs), f"{c.basis_x_prob:g}", f"{c.phase_modulator.v_pi_v:g}"]
    for d in cfg.detectors.values():
        expected += [f"{d.efficiency:g}", f"{d.dark_count_rate_hz:g}", f"{d.dead_time_ns:g}", f"{d.jitter_ps:g}"]
    _whole(text, width, expected)
    words = set(re.split(r"[\s│┃]+", text))  # a header that fits only wrapped keeps each word (and unit) whole
    for header in ("intensities [photons/pulse]", "probabilities", "efficiency", "dark counts [Hz]",
                   "dead time [ns]", "afterpulse", "jitter [ps]", "Vπ [V]"):
        assert header in _flat(text) or set(header.split()) <= words, (header, text)


def test_print_table_records_keep_a_word_longer_than_the_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    """A value wider than the terminal (a path) is folded onto the next line, never cut."""
    from rich.table import Table

    t = Table("node", "store", "bits")
    path = "/" + "/".join(["a-rather-long-folder-name"] * 5) + "/C1.sqlite"
    t.add_row("C1", path, "1,234,567")
    con = Console(file=io.StringIO(), width=40, markup=False, highlight=False)
    cli_common.print_table(con, t)
    text = con.file.getvalue()
    assert "…" not in text and "bits: 1,234,567" in text
    assert path in re.sub(r"\n\s*", "", text.split("store: ", 1)[1])


def test_keyrate_explains_its_short_headers_under_the_table(monkeypatch: pytest.MonkeyPatch) -> None:
    """F11: "μ i/j", "η cw/ccw", "Q_X", "e_ph^U" are explained under the table, whatever its layout."""
    text = _flat(_invoke(["keyrate"], 80, monkeypatch).stderr)
    for words in ("η cw/ccw: transmittance Ci → node / Cj → node", "μ i/j: the two clients' signal intensities "
                  "[photons/pulse]", "Q_X: click probability per key-setting slot", "e_ph^U: upper bound on the "
                  "phase-error rate", "bit/pulse: secure key bits per laser pulse"):
        assert words in text, words
