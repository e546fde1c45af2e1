"""CLI conventions: --version, --json shapes on stdout, one-line errors and exit codes."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from labqfl import __version__
from labqfl.cli import app

runner = CliRunner()


def test_version():
    r = runner.invoke(app, ["--version"])
    assert r.exit_code == 0 and r.stdout.strip() == f"labqfl {__version__}"


def test_station_show_json_shape():
    r = runner.invoke(app, ["station", "show", "--json"])
    assert r.exit_code == 0, r.output
    data = json.loads(r.stdout)
    assert data["source"] == "embedded default"
    assert data["station"]["name"] == "sagnac-4client-sim"
    assert data["roles"]["D0"] == {"driver": "sim", "resource": None}
    assert ["C1", "C2"] in data["pairs"]


def test_station_show_bad_file_one_line_nonzero(tmp_path):
    p = tmp_path / "bad.toml"
    p.write_text('name = "x"\n[[clients]]\nname = "C1"\nseed = -4\n')
    r = runner.invoke(app, ["station", "show", "--config", str(p), "--json"])
    assert r.exit_code == 1
    assert json.loads(r.stdout)["error"] == r.stderr.strip().removeprefix("error: ")  # issue 19
    err = r.stderr.strip()
    assert err.startswith("error:") and "clients.0.seed" in err and "got -4" in err
    assert len(err.splitlines()) == 1


def test_bench_list_and_unknown():
    r = runner.invoke(app, ["bench", "--list", "--json"])
    assert r.exit_code == 0
    names = json.loads(r.stdout)["benchmarks"]
    assert isinstance(names, dict)
    r = runner.invoke(app, ["bench", "no-such-benchmark"])
    assert r.exit_code == 1 and "unknown benchmark" in r.stderr


def test_every_command_accepts_json():
    """Every leaf command documents --json (the project-wide convention)."""
    import typer.main

    click_app = typer.main.get_command(app)

    def leaves(cmd, prefix=()):
        subs = getattr(cmd, "commands", None)
        if subs:
            for name, sub in subs.items():
                yield from leaves(sub, prefix + (name,))
        else:
            yield prefix, cmd

    missing = [" ".join(p) for p, cmd in leaves(click_app) if not any("--json" in prm.opts for prm in cmd.params)]
    assert missing == []


def test_a_printed_path_stays_on_one_line_in_a_narrow_terminal():
    """``run folder: …``, ``report: …``: rich broke a path at the terminal's width, and a script reading the
    run folder off stderr got a cut path (seen at 80 columns)."""
    import io

    from rich.console import Console

    from labqfl.cli.common import print_path

    con = Console(file=io.StringIO(), width=40, highlight=False, markup=False)
    path = "/data/runs/20261205T080928.170904Z-run/" + "x" * 60 + "/report.html"
    print_path(con, "report", path)
    assert con.file.getvalue() == f"report: {path}\n"
