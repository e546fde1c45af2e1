"""``labqfl train`` end to end on tiny sizes, and the qnn benchmark entry in quick mode."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from labqfl.cli import app


def test_train_mnist_qnn_writes_run_folder(tmp_path: Path) -> None:
    r = CliRunner().invoke(app, ["train", "--task", "mnist-qnn", "--clients", "2", "--rounds", "2", "--q", "8",
                                 "--keys", "csprng", "--out", str(tmp_path), "--json"])
    assert r.exit_code == 0, r.output
    d = json.loads(r.stdout)
    for key in ("final_test_accuracy", "test_accuracy", "test_loss", "key_bits_per_pair_per_round", "key_bits_total",
                "upload_bits_per_client_per_round", "baseline_upload_bits_per_client_per_round", "key_source"):
        assert key in d
    assert d["key_source"] == "csprng" and len(d["test_accuracy"]) == 2
    assert d["final_test_accuracy"] > 0.8
    run = Path(d["run_dir"])
    assert (run / "metrics.json").is_file()
    assert (run / "plots" / "accuracy.png").stat().st_size > 1000 and (run / "plots" / "loss.png").is_file()


def test_train_refuses_unsafe_bit_budget(tmp_path: Path) -> None:
    r = CliRunner().invoke(app, ["train", "--task", "mnist-qnn", "--clients", "200", "--q", "8", "--out", str(tmp_path)])
    assert r.exit_code == 1 and "bit budget" in r.output


def test_train_qkd_without_key_stores_fails_clearly(tmp_path: Path) -> None:
    r = CliRunner().invoke(app, ["train", "--task", "mnist-qnn", "--clients", "2", "--keys", "qkd",
                                 "--keystore", str(tmp_path / "empty"), "--out", str(tmp_path)])
    assert r.exit_code == 1 and "no key store" in r.output


def test_train_unknown_task(tmp_path: Path) -> None:
    r = CliRunner().invoke(app, ["train", "--task", "cifar", "--out", str(tmp_path)])
    assert r.exit_code == 1 and "unknown" in r.output


def test_qnn_benchmark_quick_runs() -> None:
    from labqfl.bench import registry

    res = registry()["qnn"].fn(True)
    assert res.figure > 0 and res.baseline_figure > 0
    assert res.details["max_grad_difference"] < 1e-10


def _fill_stores(root: Path, nbits: int) -> None:
    """Two node stores sharing one key block for pair C1-C2 (as distillation would leave them)."""
    import uuid

    import numpy as np

    from labqfl.keystore import KeyStore

    bits = np.random.default_rng(0).integers(0, 2, size=nbits, dtype=np.uint8)
    bid = str(uuid.uuid4())
    for node in ("C1", "C2"):
        st = KeyStore.for_node(node, root)
        st.add_block("C1-C2", bits, block_id=bid, purpose="fl")
        st.close()


def test_train_with_qkd_keys_consumes_them_once(tmp_path: Path) -> None:
    ks = tmp_path / "ks"
    per_round = 8 * 24  # q · n_params of the 4-qubit / 3-layer QNN
    _fill_stores(ks, 2 * per_round + 10)
    args = ["train", "--task", "mnist-qnn", "--clients", "2", "--rounds", "2", "--q", "8", "--keys", "qkd",
            "--keystore", str(ks), "--out", str(tmp_path), "--json"]
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 0, r.output
    d = json.loads(r.stdout)
    assert d["key_source"] == "qkd" and d["key_bits_total"] == 2 * per_round
    # the keys are spent: a second identical run must refuse clearly
    r2 = CliRunner().invoke(app, args)
    assert r2.exit_code == 1 and "enough for 0 round(s)" in r2.output


def test_train_with_self_masks_on_qkd_keys_counts_the_pads(tmp_path: Path) -> None:
    ks = tmp_path / "ks"
    per_round = (8 + 2 * 9) * 24  # q·n mask bits + 2·(q+1)·n share-pad bits per pair and round
    _fill_stores(ks, 2 * per_round + 10)
    args = ["train", "--task", "mnist-qnn", "--clients", "2", "--rounds", "2", "--q", "8", "--keys", "qkd",
            "--self-masks", "--threshold", "2", "--keystore", str(ks), "--out", str(tmp_path), "--json"]
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 0, r.output
    d = json.loads(r.stdout)
    assert d["key_bits_total"] == 2 * per_round and d["final_test_accuracy"] > 0.8
    assert d["self_masks"]["enabled"] is True and d["self_masks"]["threshold"] == 2
    assert d["self_masks"]["share_field_prime"] == 257 and "os-csprng" in d["self_masks"]["randomness"]
    kc = d["key_cost_per_round"]
    assert kc["key_bits_total"] == per_round and kc["paper_all_pairs_key_bits"] == 8 * 24
    assert kc["share_pad_key_bits"] == 2 * 9 * 24
    r2 = CliRunner().invoke(app, args)
    assert r2.exit_code == 1 and "enough for 0 round(s)" in r2.output


def test_train_threshold_needs_self_masks_and_must_fit_the_graph(tmp_path: Path) -> None:
    r = CliRunner().invoke(app, ["train", "--clients", "3", "--threshold", "2", "--out", str(tmp_path)])
    assert r.exit_code == 1 and "--threshold 2 needs --self-masks" in r.output
    r = CliRunner().invoke(app, ["train", "--clients", "3", "--self-masks", "--threshold", "4", "--out", str(tmp_path)])
    assert r.exit_code == 1 and "must lie in [1, 3]" in r.output


def test_train_with_distributed_dp_reports_privacy(tmp_path: Path) -> None:
    r = CliRunner().invoke(app, ["train", "--task", "mnist-qnn", "--clients", "3", "--rounds", "2", "--q", "32",
                                 "--dp-epsilon", "20", "--dp-honest", "2", "--self-masks", "--out", str(tmp_path),
                                 "--json"])
    assert r.exit_code == 0, r.output
    d = json.loads(r.stdout)
    p = d["privacy"]
    assert "discrete Gaussian" in p["mechanism"] and p["delta"] == 1e-5
    assert p["honest_clients_assumed"] == 2 and p["rounds"] == 2 and 0.97 * 20 <= p["epsilon"] <= 20
    spent = [x["privacy_epsilon_spent"] for x in d["rounds"]]
    assert spent[0] < spent[1] == p["epsilon"]
    metrics = json.loads((Path(d["run_dir"]) / "metrics.json").read_text())
    assert metrics["privacy"] == p
    r = CliRunner().invoke(app, ["train", "--clients", "3", "--dp-honest", "2", "--out", str(tmp_path)])
    assert r.exit_code == 1 and "need --dp-epsilon" in r.output


def test_a_key_shortfall_names_the_pair_with_the_fewest_rounds(tmp_path: Path) -> None:
    """Review s32 M4: the refusal named the first short pair in graph order ("enough for 52 rounds"), and a run
    of 52 rounds then failed on another pair with 33. It names the limiting pair."""
    import uuid

    import numpy as np

    from labqfl.keystore import KeyStore

    ks = tmp_path / "ks"
    per_round = 8 * 24
    rng = np.random.default_rng(1)
    for pair, nbits in (("C1-C2", 3 * per_round), ("C1-C3", per_round + 5), ("C2-C3", 2 * per_round)):
        bits = rng.integers(0, 2, size=nbits, dtype=np.uint8)
        bid = str(uuid.uuid4())
        for node in pair.split("-"):
            with KeyStore.for_node(node, ks) as st:
                st.add_block(pair, bits, block_id=bid, purpose="fl")
    args = ["train", "--task", "mnist-qnn", "--clients", "3", "--rounds", "4", "--q", "8", "--keys", "qkd",
            "--keystore", str(ks), "--out", str(tmp_path)]
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 1
    assert "pair C1-C3 holds 197 key bits" in r.output and "enough for 1 round(s); 2 more pair(s) short" in r.output
