"""``labqfl node supernode --keys``: the masks' key mode is the node operator's (node config ``labqfl-keys``),
not the server's (review s34 F3; the ClientApp refuses a run asking for another mode,
tests/fl/flower/test_node_pins.py). Without the option a SuperNode with a key store is a qkd node, so
``labqfl node train --keys csprng`` had no way to run on ``labqfl node supernode`` nodes."""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from labqfl.cli import app
from labqfl.fl.flower.client import NODE_KEYS
from labqfl.net import make_node_certs
from labqfl.nodes import supernode


def test_the_supernodes_node_config_name_is_the_clientapps() -> None:
    assert supernode.NODE_KEYS == NODE_KEYS


@pytest.mark.parametrize("keys", ["qkd", "csprng"])
def test_the_supernode_passes_its_key_mode_to_its_clientapps(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                           keys: str) -> None:
    certs = tmp_path / "certs"
    make_node_certs(certs, ["C1"])
    seen: dict[str, Any] = {}

    class Proc:
        returncode = 1

        def poll(self) -> int:
            return 1  # the SuperNode "exits" at once: main returns 1 after one look

    class Fed:
        procs = {"supernode-C1": Proc()}

        def start_supernode(self, name: str, node_config: dict[str, Any]) -> None:
            seen.update(node_config)

        def stop(self) -> None:
            seen["stopped"] = True

    class Tunnel:
        def __init__(self, **kw: Any) -> None:
            pass

        def start(self) -> str:
            return "127.0.0.1:1"

        def stop(self) -> None:
            pass

    monkeypatch.setattr(supernode, "TunnelEnd", Tunnel)
    monkeypatch.setattr(supernode, "start_warm_clientapps", lambda *a, **k: Fed())
    old = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        assert supernode.main("C1", tmp_path / "data", "127.0.0.1:9", certs, keys=keys) == 1
    finally:
        for s, h in old.items():
            signal.signal(s, h)
    assert seen[NODE_KEYS] == keys and seen["labqfl-keystore"] == str((tmp_path / "data").resolve())
    assert seen["stopped"]


def test_node_supernode_refuses_another_key_mode_in_one_line(tmp_path: Path) -> None:
    r = CliRunner().invoke(app, ["node", "supernode", "--name", "C1", "--data", str(tmp_path), "--keys", "ecdh",
                                 "--server", "127.0.0.1:9", "--certs", str(tmp_path)])
    assert r.exit_code == 1 and "--keys must be qkd or csprng, got 'ecdh'" in r.output
