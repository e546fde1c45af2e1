"""The ``secure_aggregation`` benchmark entry runs (quick size); no timing is asserted."""

from __future__ import annotations

import pytest

from labqfl.bench import registry


@pytest.mark.slow  # ~25 s on a loaded 2-core machine: LeNet-5 steps, plus self-mask and DP rounds
def test_secure_aggregation_bench_runs_quick() -> None:
    entry = registry()["secure_aggregation"]
    r = entry.fn(True)
    assert r.unit == "CPU s per round" and r.figure > 0 and r.baseline_figure > 0
    d = r.details
    assert d["n_params"] == 61_706 and d["key_source"] == "csprng"
    assert d["pairs"] == d["all_pairs"] == 66  # ring-16 over 12 clients is every pair
    assert d["upload_bits_per_client"] == 16 * 61_706
    assert d["baseline_upload_bits_per_client"] == 32 * 61_706
    # the secure aggregate is the clipped weighted mean up to quantisation error (b = 12 bits)
    assert d["max_abs_error_vs_plain_clipped_mean"] <= 2 * d["clip"] / (2**12 - 1)
    # beyond the paper: a self-mask round and a self-mask + DP round, with their key cost
    assert d["self_masks_round_ratio"] > 0 and d["dp_self_masks_round_ratio"] > 0
    assert d["self_masks_key_bits_per_round"] == 66 * (16 + 2 * 17) * 61_706
    assert d["paper_all_pairs_key_bits_per_round"] == 66 * 16 * 61_706
    assert d["dp_privacy"]["epsilon"] <= 8.0 and d["dp_privacy"]["honest_clients_assumed"] == 1
    assert d["dp_upload_bits_per_client"] == 32 * 65_536  # padded to a power of two for the rotation
