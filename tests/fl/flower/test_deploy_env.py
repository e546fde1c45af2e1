"""Every Flower process a :class:`~labqfl.fl.flower.deploy.LocalFederation` starts (SuperLink of the FL
server node, SuperNodes, the ``flwr`` CLI) runs with Flower's telemetry and update check off, unless
the operator's environment opts in."""

from __future__ import annotations

from pathlib import Path

import pytest

from labqfl.fl.flower.deploy import LocalFederation


def test_flower_processes_do_not_report_to_telemetry(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FLWR_TELEMETRY_ENABLED", raising=False)
    monkeypatch.delenv("FLWR_DISABLE_UPDATE_CHECK", raising=False)
    env = LocalFederation(tmp_path, "127.0.0.1:9092").env()
    assert env["FLWR_TELEMETRY_ENABLED"] == "0" and env["FLWR_DISABLE_UPDATE_CHECK"] == "1"
    monkeypatch.setenv("FLWR_TELEMETRY_ENABLED", "1")  # an explicit choice of the operator stands
    assert LocalFederation(tmp_path, "127.0.0.1:9092").env()["FLWR_TELEMETRY_ENABLED"] == "1"
