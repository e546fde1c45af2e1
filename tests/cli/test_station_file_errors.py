"""Review s34 L12: a station file with several problems said "(+1 more problems)" without naming them;
the further problems are named on the same (one) line, each by its field."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from labqfl.cli import app
from labqfl.config import default_station_text

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "station_pyvisa_sim.toml"


def _error(path: Path) -> str:
    res = CliRunner().invoke(app, ["station", "show", "--config", str(path)])
    lines = [ln for ln in res.output.splitlines() if ln.strip()]
    assert res.exit_code == 1, res.output
    assert len(lines) == 1 and lines[0].startswith("error: "), res.output
    return lines[0]


def test_the_second_problem_is_named(tmp_path: Path) -> None:
    p = tmp_path / "bad2.toml"
    p.write_text('name = "x"\n[laser]\nrep_rate_hz = -5\n', encoding="utf-8")
    line = _error(p)
    assert line == (f"error: {p}: field 'laser.rep_rate_hz': Input should be greater than 0; got -5; "
                    "also: 'clients': Field required")


def test_many_problems_name_four_then_count_the_rest(tmp_path: Path) -> None:
    text = default_station_text()
    assert text.count("basis_x_prob = ") == 4
    p = tmp_path / "many.toml"
    p.write_text(text.replace("basis_x_prob = ", "basis_x_prob = 7 #").replace("name = ", "nmae = ", 1)
                 .replace("[laser]\n", "[laser]\ncolour = 'red'\n", 1), encoding="utf-8")
    line = _error(p)
    assert "(+" not in line and "more problems" not in line
    head, also = line.split("; also: ")
    named = [part.split("': ")[0].lstrip("'") for part in also.split("; ")]
    assert named[-1].startswith("+") and named[-1].endswith(" more")
    assert len(named) == 5  # four named, then the count
    every = [head.split("field '")[1].split("'")[0], *named[:4]]
    assert len(set(every)) == 5 and all(f.startswith(("clients.", "laser.", "name", "nmae")) for f in every)


def test_a_roles_options_name_their_second_problem(tmp_path: Path) -> None:
    text = EXAMPLE.read_text(encoding="utf-8")
    old = "options = { channel = 1, sample_rate_hz = 100e6 }"
    assert old in text
    p = tmp_path / "opts.toml"
    p.write_text(text.replace(old, "options = { chanel = 2, sample_rate_hz = -1 }", 1), encoding="utf-8")
    line = _error(p)
    assert "field 'clients.0.phase_modulator.options.sample_rate_hz'" in line
    assert line.endswith("; also: 'clients.0.phase_modulator.options.chanel': unknown field")
