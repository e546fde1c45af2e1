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


def test_secaggplus_side_by_side_runs_both_schemes_on_one_grid(tmp_path) -> None:
    """The helpers of ``secure_aggregation_vs_secaggplus``: both schemes aggregate the same updates
    correctly on the in-process Grid, with and without clients lost after masking; bytes counted."""
    import numpy as np

    from labqfl.bench.entries.secure_aggregation import _labqfl_round, _secaggplus_round
    from labqfl.fl.flower.keys import REFS_TAG_BITS

    names = [f"C{i}" for i in range(1, 6)]
    rng = np.random.default_rng(0)
    ups = {c: rng.normal(0, 0.01, 16) for c in names}
    ours = _labqfl_round(ups, 2, 16, {"C3"}, tmp_path / "a", rounds=2)
    theirs = _secaggplus_round(ups, 2, 2, {"C3"}, rounds=2)
    full = np.mean(list(ups.values()), axis=0)
    part = np.mean([ups[c] for c in names if c != "C3"], axis=0)
    for res in (ours, theirs):
        r1, r2 = res["rounds"]
        assert r1["completed"] and r2["completed"]
        assert np.max(np.abs(r1["aggregate"] - full)) < 1e-3  # quantisation error only
        assert np.max(np.abs(r2["aggregate"] - part)) < 1e-3  # the lost client is out of the mean
        assert r1["up_bytes"] > 0 and r1["down_bytes"] > 0
    # labqfl: 16 words of q = 16 bits masked, plus each share ciphertext (uint32 words) to 2 partners
    assert ours["rounds"][0]["up_bytes"] > 16 * 2 + 2 * 16 * 4
    # mask (q·n) and share pads (2·(q+1)·n), and the master's refs tag key (qkd keys)
    assert ours["key_bits_per_pair_per_round"] == 16 * (16 + 2 * 17) + REFS_TAG_BITS and ours["pairs"] == 5
    # losing both neighbours of C3 isolates it (and leaves it one holder, itself, for t = 2): refused
    lost2 = _labqfl_round(ups, 2, 16, {"C2", "C4"}, tmp_path / "b", rounds=1)
    assert not lost2["rounds"][0]["completed"] and "aborted before any key reveal" in lost2["failure"]
