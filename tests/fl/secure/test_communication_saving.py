"""Review s35 F5: one definition of the communication saving (1 − upload/baseline), printed with its
sign: a DP run pads its upload to d' words of q bits, larger than float32 at q = 32, and the CLI
printed "−-33 %" while the round said 0 (1 − q/32) and the summary −0.333."""

from __future__ import annotations

import numpy as np
import pytest
from rich.console import Console

from labqfl.cli.train import render_training, saving_text
from labqfl.fl.dp import DPConfig, plan_dp
from labqfl.fl.keysource import CsprngKeySource
from labqfl.fl.secure import SecAggConfig, secure_round


def _round(cfg: SecAggConfig, n: int) -> object:
    names = ["C1", "C2", "C3"]
    return secure_round({c: np.zeros(n) for c in names}, dict.fromkeys(names, 1.0), cfg, CsprngKeySource(),
                        round_index=1, rng=np.random.default_rng(0))


def test_dp_round_reports_the_upload_it_sends_against_float32() -> None:
    plan = plan_dp(DPConfig(epsilon=4.0), n_params=24, n_clients=3, q=32, rounds=10)
    r = _round(SecAggConfig(q=32, dp=plan), 24)
    assert plan.d_pad == 32 and r.upload_bits_per_client == 32 * 32  # type: ignore[attr-defined]
    assert r.communication_saving == pytest.approx(1 - 32 / 24)  # type: ignore[attr-defined]
    assert r.accounting()["communication_saving"] == pytest.approx(-1 / 3)  # type: ignore[attr-defined]
    assert _round(SecAggConfig(q=8), 24).communication_saving == 0.75  # type: ignore[attr-defined]


def test_cli_prints_a_larger_upload_as_plus() -> None:
    assert (saving_text(0.75), saving_text(-1 / 3), saving_text(0.0), saving_text(0.001)) == \
        ("−75 %", "+33 %", "±0 %", "±0 %")
    summary = {"task": "mnist-qnn", "rounds_requested": 10, "clients": 4, "q": 32, "key_source": "csprng",
               "final_test_accuracy": 0.5, "key_bits_per_pair_per_round": 1024, "key_bits_total": 61440,
               "upload_bits_per_client_per_round": 1024, "baseline_upload_bits_per_client_per_round": 768,
               "communication_saving": 1 - 1024 / 768,
               "key_cost_per_round": {"key_bits_total": 6144, "pairs": 6, "paper_all_pairs_key_bits": 4608,
                                      "ratio_to_paper_all_pairs": 4 / 3},
               "self_masks": {"enabled": False}, "privacy": None, "noise": None, "security": "s", "run_dir": "r"}
    con = Console(record=True, width=200)
    render_training(con, summary)
    out = con.export_text()
    assert "(float32 768, +33 %)" in out and "−-" not in out
