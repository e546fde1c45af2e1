"""``labqfl run --no-auth-bootstrap``: refused before the run folder is made (and so before the station is
opened) when a pair's stores hold no authentication key (tests/cli/test_run_preflight.py has the
nodes path and the read-only check); the choice is kept in the run's state (and resumes with it)."""

from __future__ import annotations

from typer.testing import CliRunner

from labqfl.cli import app
from labqfl.mainjob import JobSettings

runner = CliRunner()


def test_run_without_auth_key_fails_before_acquiring(small_station_file, tmp_path, monkeypatch):
    import labqfl.station

    def no_station(*a, **kw):
        raise AssertionError("the station must not be opened")

    monkeypatch.setattr(labqfl.station, "Station", no_station)
    data, runs = tmp_path / "data", tmp_path / "runs"
    res = runner.invoke(app, ["run", "--config", str(small_station_file), "--duration", "0.2", "--rounds", "1", "--in-process",
                              "--data-dir", str(data), "--out", str(runs), "--no-auth-bootstrap", "--json"])
    assert res.exit_code == 1, res.output
    err = [ln for ln in res.output.splitlines() if ln.startswith("error:")]
    assert len(err) == 1 and "pair C1-C2" in err[0] and "labqfl keys preshare" in err[0], res.output
    # refused in the preflight (it was refused in the acquire phase, leaving an 'interrupted' run folder)
    assert not runs.exists() and not data.exists()


def test_old_state_files_resume_with_the_bootstrap_on():
    assert JobSettings.from_dict({"duration_s": 1.0}).bootstrap_auth is True
