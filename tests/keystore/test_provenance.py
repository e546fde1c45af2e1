"""Key provenance in the stores and every output that describes them (issue 16 item 5): a distillation
on the default (simulated) station stores blocks marked ``simulated``, and neither ``labqfl keys
status --json``, the ETSI 014 status extension nor the report calls them information-theoretically
secure; a hardware + QRNG block is."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from labqfl.cli import app
from labqfl.config import load_station_config
from labqfl.keystore import KeyStore
from labqfl.keystore.etsi import PROVENANCE_EXTENSION
from labqfl.provenance import IT_PHRASE, Provenance, client_randomness
from labqfl.qkd.estimation import SecurityParameters
from labqfl.qkd.pipeline import Distiller, DistillSettings, KeyStoreSink

PAIR = "C1-C2"
runner = CliRunner()


@pytest.fixture(scope="module")
def distilled(tmp_path_factory: pytest.TempPathFactory, one_pair_station) -> tuple[Path, dict[str, str]]:
    """Distil 0.2 s of the simulated small station into C1/C2 stores; returns (data dir, {client: randomness})."""
    from labqfl.sim_backends import SagnacTestbed

    cfg = one_pair_station()
    data = tmp_path_factory.mktemp("prov") / "data"
    tb = SagnacTestbed(cfg)
    blocks = tb.stream(0.2)
    logs = {c: tb.client_log(c) for c in cfg.client_names}
    stores = {n: KeyStore.for_node(n, data) for n in cfg.client_names}
    try:
        d = Distiller(cfg, logs, KeyStoreSink(stores), DistillSettings(params=SecurityParameters(eps_sec=1e-4)))
        for b in blocks:
            d.push(b)
        res = d.finish(int(0.2 * cfg.laser.rep_rate_hz))
    finally:
        for s in stores.values():
            s.close()
    assert res[PAIR].delivered_bits > 0
    return data, {c: client_randomness(cfg, c, logs[c]) for c in cfg.client_names}


def test_simulated_blocks_are_marked_and_never_called_information_theoretic(distilled, kme_status):
    data, rnd = distilled
    expected_rnd = "seeded" if "seeded" in rnd.values() else "csprng"
    for node in ("C1", "C2"):
        with KeyStore.for_node(node, data) as st:
            key_blocks = [b for b in st.blocks(PAIR) if b["meta"].get("kind") != "preshared-auth"]
            assert key_blocks  # the key block and its auth refill
            for b in key_blocks:
                p = b["meta"]["provenance"]
                assert p["physical_layer"] == "simulated" and p["randomness"] == expected_rnd
                assert p["information_theoretic"] is False and IT_PHRASE not in p["security"]
                assert p["eps_total"] == pytest.approx(b["meta"]["eps_total"]) and p["eps_sec"] == 1e-4
                assert "docs/protocol.md" in p["protocol"]

    # labqfl keys status --json: the pair's provenance, no IT claim anywhere
    r = runner.invoke(app, ["keys", "status", "--data-dir", str(data), "--json"])
    assert r.exit_code == 0, r.output
    assert IT_PHRASE not in r.stdout
    prov = json.loads(r.stdout)["nodes"]["C1"]["provenance"][PAIR]
    assert prov["blocks"] == {f"simulated/{expected_rnd}": prov["blocks"][f"simulated/{expected_rnd}"]}
    assert prov["information_theoretic"] is False and prov["preshared_blocks"] == 1  # the bootstrap secret
    assert ("no physical security" if expected_rnd == "csprng" else "not secret") in prov["security"]
    # the table form prints the statement too
    r = runner.invoke(app, ["keys", "status", "--data-dir", str(data)])
    assert r.exit_code == 0 and "provenance" in r.output and IT_PHRASE not in r.output

    # ETSI GS QKD 014 status: the spec's optional status_extension carries labqfl's provenance
    st = kme_status(data)
    ext = st["status_extension"][PROVENANCE_EXTENSION]
    assert ext["weakest"]["physical_layer"] == "simulated" and ext["information_theoretic"] is False
    assert IT_PHRASE not in json.dumps(st)


def test_hardware_qrng_blocks_are_information_theoretic_everywhere(tmp_path, store_pair_block, kme_status):
    data = tmp_path / "hw"
    meta = {"eps_total": 1.2e-10, "provenance": Provenance("hardware", "qrng", intensity_rel_uncertainty=0.05, eps_sec=1e-10, eps_cor=1e-15,
                                                           eps_auth=2e-11, eps_total=1.2e-10).as_dict()}
    store_pair_block(data, np.random.default_rng(1).integers(0, 2, 4096, dtype=np.uint8), meta, purpose="etsi")
    r = runner.invoke(app, ["keys", "status", "--data-dir", str(data), "--json"])
    assert r.exit_code == 0, r.output
    prov = json.loads(r.stdout)["nodes"]["C2"]["provenance"][PAIR]
    assert prov["information_theoretic"] is True and prov["security"].startswith(IT_PHRASE)
    st = kme_status(data)
    assert st["status_extension"][PROVENANCE_EXTENSION]["information_theoretic"] is True
    assert st["stored_key_count"] == 4096 // st["key_size"]


def test_report_states_the_provenance_of_the_run_keys(tmp_path):
    """report.html shows a provenance row per pair and the masks' security; the IT phrase only for
    hardware + QRNG keys."""
    from labqfl.provenance import summarize_blocks
    from labqfl.report import write_report
    from labqfl.runs import RunRecord

    sim = summarize_blocks([{"meta": {"provenance": Provenance("simulated", "csprng", eps_total=1e-10).as_dict()}}])
    hw = summarize_blocks([{"meta": {"provenance": Provenance("hardware", "qrng", eps_total=1e-10, intensity_rel_uncertainty=0.05).as_dict()}}])
    for prov, it in ((sim, False), (hw, True)):
        run = RunRecord.create("prov", load_station_config(), tmp_path / ("hw" if it else "sim"))
        m = {"status": "complete", "station": "s", "key_source": "qkd",
             "keys": {"pairs": {PAIR: {"distilled_bits": 10, "consumed_bits": 0, "auth_consumed_bits": 0,
                                       "provenance": prov}}},
             "train": {"task": "t", "clients": 2, "q": 8, "rounds_run": 1, "final_test_accuracy": 0.9,
                       "key_bits_total": 8, "upload_bits_per_client": 8, "baseline_upload_bits_per_client": 32,
                       "key_source": "qkd", "security": f"one-time-pad masks; the keys: {prov['security']}"}}
        html = write_report(run, m).read_text(encoding="utf-8")
        run.close()
        assert "Key provenance" in html and ("simulated/csprng" in html or "hardware/qrng" in html)
        assert (IT_PHRASE in html) is it
        assert ("no physical security" in html) is (not it)


@pytest.mark.slow  # two 1-round trainings (~30 s on 2 busy cores)
def test_train_with_qkd_keys_states_the_provenance_of_the_blocks_it_consumed(tmp_path, store_pair_block):
    """``labqfl train --keys qkd``: the masks' security is that of the key blocks consumed (the
    hardware + QRNG block first, then the simulated one), not of the pool at large."""
    ks = tmp_path / "ks"
    per_round = 8 * 24  # q · n_params of the 4-qubit / 3-layer QNN
    rng = np.random.default_rng(3)
    ids = {}
    for layer, rnd in (("hardware", "qrng"), ("simulated", "csprng")):
        meta = {"provenance": Provenance(layer, rnd, eps_total=1e-10, intensity_rel_uncertainty=0.05).as_dict()}
        ids[layer] = store_pair_block(ks, rng.integers(0, 2, per_round, dtype=np.uint8), meta, purpose="fl")
    args = ["train", "--task", "mnist-qnn", "--clients", "2", "--rounds", "1", "--q", "8", "--keys", "qkd",
            "--keystore", str(ks), "--out", str(tmp_path / "runs"), "--json"]
    first = runner.invoke(app, args)
    assert first.exit_code == 0, first.output
    d = json.loads(first.stdout)
    assert d["key_provenance"][PAIR]["blocks"] == {"hardware/qrng": 1}
    assert IT_PHRASE in d["security"]
    second = runner.invoke(app, args)
    assert second.exit_code == 0, second.output
    d2 = json.loads(second.stdout)
    assert d2["key_provenance"][PAIR]["blocks"] == {"simulated/csprng": 1}
    assert IT_PHRASE not in second.stdout and "no physical security" in d2["security"]
    assert IT_PHRASE not in (Path(d2["run_dir"]) / "metrics.json").read_text()
