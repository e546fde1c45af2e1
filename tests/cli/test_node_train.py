"""``labqfl node train --server HOST:PORT --certs DIR`` (CLI review s32 M3): the operator trains over a running
node network (a ``node server`` and one ``node supernode`` per client) with ``labqfl train``'s options and report,
where docs/nodes.md had a ``python -c "… train_on_server …"`` snippet. End to end against real node processes
(:class:`~labqfl.nodes.fl.FlNetwork`: the server node and two SuperNodes on loopback, qkd pads from each client's
own store); its failures — a server not reached, a certificate folder without the operator's files, a
certificate that is not the operator's, a CA the server does not share — are one line each, exit 1."""

from __future__ import annotations

import json
import shutil
import uuid
from pathlib import Path

import numpy as np
import pytest
from cli_helpers import error_line
from typer.testing import CliRunner

from labqfl.cli import app

runner = CliRunner()


def _mnist_cache(folder: Path) -> str:
    from labqfl.fl.datasets.mnist import load_embedded_mnist

    mn = load_embedded_mnist()
    np.savez(folder / "mnist.npz", x_train=mn.x_train, y_train=mn.y_train, x_test=mn.x_test, y_test=mn.y_test)
    return str(folder)


def _fill_stores(data: Path, bits_per_pair: int) -> None:
    """The pair C1-C2's mask key at both ends (one block), as distillation would leave it."""
    from labqfl.keystore import KeyStore

    bits, bid = np.random.default_rng(5).integers(0, 2, bits_per_pair, dtype=np.uint8), str(uuid.uuid4())
    for node in ("C1", "C2"):
        with KeyStore.for_node(node, data) as st:
            st.add_block("C1-C2", bits, block_id=bid, purpose="fl")


@pytest.mark.slow
@pytest.mark.timeout(420)
def test_node_train_over_a_running_server_node_and_supernodes(tmp_path: Path, small_station_file: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    from rich.console import Console

    from labqfl.cli.node_train import render
    from labqfl.fl.flower.keys import REFS_TAG_BITS
    from labqfl.fl.tasks import make_model
    from labqfl.keystore import KeyStore
    from labqfl.nodes.fl import FlNetwork

    monkeypatch.setenv("LABQFL_RUNS_DIR", str(tmp_path / "runs"))
    per_round = 8 * make_model("mnist-qnn").n_params + REFS_TAG_BITS
    data = tmp_path / "data"
    net = FlNetwork(tmp_path / "fl", small_station_file, ["C1", "C2"], data, keep_ca_key=True)
    net.start()
    try:
        base = ["node", "train", "--server", net.server_address, "--config", str(small_station_file),
                "--mnist-dir", _mnist_cache(tmp_path)]
        other = tmp_path / "other-ca"  # the operator's files from another network's CA: the server refuses them
        runner.invoke(app, ["node", "certs", str(other), "--node", "ctl"])
        line = error_line(runner.invoke(app, [*base, "--certs", str(other), "--rounds", "1"]))
        assert f"node server at {net.server_address} unreachable or refused the TLS handshake" in line
        # no key in the stores yet: the Flower run fails; one line naming why, and no run folder left behind
        line = error_line(runner.invoke(app, [*base, "--certs", str(net.certs), "--rounds", "1", "--json"]))
        assert "the Flower run failed" in line and "key starvation at node C1" in line, line
        assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())
        _fill_stores(data, 2 * per_round + 64)
        r = runner.invoke(app, [*base, "--certs", str(net.certs), "--rounds", "2", "--q", "8", "--seed", "3",
                                "--json"])
    finally:
        codes = net.stop()
    assert set(codes.values()) == {0}, codes
    assert r.exit_code == 0, (r.output, r.exception)
    doc = json.loads(r.stdout)  # one document
    assert doc["key_source"] == "qkd" and doc["rounds_run"] == 2 and len(doc["test_accuracy"]) == 2
    assert doc["clients"] == 2 and doc["client_names"] == ["C1", "C2"] and doc["server"] == net.server_address
    assert doc["key_bits_per_pair_per_round"] == per_round and doc["key_bits_total"] == 2 * per_round
    assert doc["key_cost_per_round"]["pairs"] == 1 and "final_params" not in doc
    assert doc["security"].startswith("asked for qkd: one-time-pad masks with QKD keys each client's SuperNode draws")
    assert doc["security"].endswith("each SuperNode masks with keys from its own key store and refuses another key "
                                    "mode.")  # review s34 F8: the server's messages carry the settings
    assert all(not f["dropped_before_masking"] and not f["dropped_after_masking"] for f in doc["flower"])
    run_dir = Path(doc["run_dir"])
    assert run_dir.parent == tmp_path / "runs" and json.loads((run_dir / "metrics.json").read_text()) == doc
    assert all(Path(p).is_file() for p in doc["plots"])
    assert (tmp_path / "fl" / "server" / "nodes" / "server" / "results" / f"{doc['server_run']}.json").is_file()
    for c in ("C1", "C2"):  # the pads came from each client's own store, both ends in step
        with KeyStore.for_node(c, data) as st:
            assert st.accounting()["C1-C2"]["available"] == {"fl": 64}, c
    con = Console(record=True, width=200)  # the human report: labqfl train's, then the network's part
    render(con, doc)
    text = con.export_text()
    assert "final test accuracy" in text and f"key bits per pair per round {per_round:,}" in text
    assert f"over the server node server at {net.server_address}" in text and "clients dropped: none" in text


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from labqfl.net import make_node_certs

    d = tmp_path_factory.mktemp("certs")
    make_node_certs(d, ["server", "C1", "ctl"])
    return d


def test_a_server_not_reached_is_one_line(certs: Path) -> None:
    line = error_line(runner.invoke(app, ["node", "train", "--server", "127.0.0.1:1", "--certs", str(certs),
                                          "--rounds", "1"]))
    assert line.startswith("error: node server at 127.0.0.1:1 unreachable"), line


def test_a_folder_without_the_operators_certificate_is_one_line(certs: Path, tmp_path: Path) -> None:
    line = error_line(runner.invoke(app, ["node", "train", "--server", "127.0.0.1:1", "--certs", str(tmp_path)]))
    assert f"{tmp_path / 'ca.pem'}: CA certificate of node 'ctl' not found" in line
    assert "labqfl node certs DIR --node ctl" in line


def test_a_certificate_that_is_not_the_operators_is_one_line(certs: Path, tmp_path: Path) -> None:
    shutil.copy(certs / "ca.pem", tmp_path / "ca.pem")
    shutil.copy(certs / "node-C1.pem", tmp_path / "node-ctl.pem")  # a client's certificate in the operator's place
    shutil.copy(certs / "node-C1.key", tmp_path / "node-ctl.key")
    line = error_line(runner.invoke(app, ["node", "train", "--server", "127.0.0.1:1", "--certs", str(tmp_path)]))
    assert "node-ctl.pem: certificate is for 'C1', expected node 'ctl'" in line, line


@pytest.mark.parametrize(("args", "words"), [
    (["--server", "127.0.0.1:99999"], "--server"),
    (["--q", "7"], "--q"),
    (["--threshold", "2"], "--threshold 2 needs --self-masks"),
    (["--keys", "otp"], "--keys 'otp' unknown"),
])
def test_bad_options_are_refused_as_labqfl_train_refuses_them(certs: Path, args: list[str], words: str) -> None:
    server = [] if "--server" in args else ["--server", "127.0.0.1:1"]
    line = error_line(runner.invoke(app, ["node", "train", "--certs", str(certs), *server, *args]))
    assert words in line, line


def test_a_node_error_over_many_lines_is_one_line() -> None:
    """The server node sends the Flower run's output after its first line (colour codes, a traceback): the line
    printed is its head and the exception that ended the ServerApp (a run on stores without key, 20:29 UTC)."""
    from labqfl.cli.node_train import _one_line

    msg = ("ctl/train: the Flower run failed (flwr run exit code 0); its output ends:\nTraceback (most recent call "
           "last):\n  File \"x.py\", line 1\nlabqfl.errors.SecureAggregationError: round 1 aborted: 1 client(s) "
           "answered the keys stage\n\x1b[91mERROR \x1b[0m:     Exit Code: 201\n\x1b[92mINFO \x1b[0m:      "
           "Starting logstream\n")
    assert _one_line(msg, "server") == (
        "ctl/train: the Flower run failed (flwr run exit code 0): labqfl.errors.SecureAggregationError: round 1 "
        "aborted: 1 client(s) answered the keys stage (the whole output: nodes/server/flower/flwr-run-*.log in the "
        "server node's data folder)")
    assert _one_line("no SuperNode answered\n  ValueError: bad\n", "fl") == (
        "no SuperNode answered: ValueError: bad (the whole output: nodes/fl/flower/flwr-run-*.log in the server "
        "node's data folder)")
    assert _one_line("one line", "server") == "one line"
