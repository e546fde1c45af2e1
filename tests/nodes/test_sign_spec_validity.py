"""``labqfl node sign-spec --valid-hours`` is bounded: at most 720 h (30 days), one error line (review s35
second look F9: 1e5 h signed a spec valid until 2038 with no warning, the replay window of a signed spec,
and 1e8 h ended in an OverflowError traceback). Fails on the code before: the first was signed, the second
raised OverflowError."""

from __future__ import annotations

import datetime
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from labqfl.cli import app
from labqfl.errors import ConfigError
from labqfl.fl.flower.identity import ReplySigner
from labqfl.fl.flower.spec import FlowerSpec
from labqfl.fl.flower.specsig import OPERATOR, sign_spec

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "cli"))
from cli_helpers import error_line  # noqa: E402

runner = CliRunner()


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from labqfl.net import make_node_certs

    d = tmp_path_factory.mktemp("certs")
    make_node_certs(d, ["C1", "C2", OPERATOR])
    return d


@pytest.mark.parametrize("hours", ["100000", "1e8", "721", "nan"])
def test_a_validity_over_30_days_is_one_error_line_and_nothing_is_written(
        certs: Path, tmp_path: Path, hours: str) -> None:
    out = tmp_path / "spec.json"
    r = runner.invoke(app, ["node", "sign-spec", "--certs", str(certs), "--valid-hours", hours, "--out", str(out)])
    assert r.exit_code != 0 and "Traceback" not in r.output, r.output
    line = error_line(r)
    assert "a signed spec's validity must be more than 0 s and at most 720 h (30 days)" in line, line
    assert not out.exists()


def test_the_library_bound_and_30_days_signs(certs: Path) -> None:
    op = ReplySigner((certs / f"node-{OPERATOR}.pem").read_bytes(), (certs / f"node-{OPERATOR}.key").read_bytes())
    spec = FlowerSpec(task="mnist-lenet5", clients=2)
    for bad in (0.0, -1.0, float("inf"), float("nan"), 30 * 86400.0 + 1):
        with pytest.raises(ConfigError, match="at most 720 h"):
            sign_spec(spec, op, valid_s=bad)
    signed = sign_spec(spec, op, valid_s=30 * 86400.0)
    issued = datetime.datetime.strptime(signed.content["issued"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=datetime.UTC)
    assert signed.expires - issued == datetime.timedelta(days=30)
