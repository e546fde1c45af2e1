"""The single-rate thinning's fast paths (``_kernels._candidates_plain`` for the candidate pass, ``_click_plain``
for the click pass) against the slot-by-slot rules they replace: the same candidates, the same generator state
after a segment, the same clicks; and a candidate pass without a bitmap (length 0) writes none."""

from __future__ import annotations

import math

import numba as nb
import numpy as np
import pytest
from labqfl.sim_backends import _kernels as K


@nb.njit(cache=False)
def _reference_candidates(seg, seg_end, s0, rng, q, glo, ghi, cap):  # type: ignore[no-untyped-def]
    """The candidate pass one draw at a time (``_next_gap``), as ``_segment`` drew them before."""
    l1q = math.log1p(-q)
    out = np.empty(cap, dtype=np.int64)
    n = 0
    s = seg - 1
    while True:
        s, rng = K._next_gap(s, rng, seg_end, q, l1q, glo, ghi)
        if s >= seg_end:
            break
        if s < s0:
            continue
        if n >= cap:
            return out[:0], rng, -1
        out[n] = s
        n += 1
    return out[:n], rng, n


@nb.njit(cache=False)
def _reference_clicks(cand, codes_i, codes_j, key_acc, scale, table, seg_end):  # type: ignore[no-untyped-def]
    """Each candidate before ``seg_end`` clicked by ``_click`` (the acceptance rule written out in ``_segment``)."""
    slots = np.empty(cand.shape[0], dtype=np.int64)
    outc = np.empty(cand.shape[0], dtype=np.uint8)
    n = 0
    k = 0
    while k < cand.shape[0] and cand[k] < seg_end:
        o = K._click(cand[k], np.int64(codes_i[k]), np.int64(codes_j[k]), 0, codes_i, 0, codes_j, 0, 0.0,
                     np.uint64(0), key_acc, scale, table)
        if o != 0:
            slots[n] = cand[k]
            outc[n] = o
            n += 1
        k += 1
    return slots[:n], outc[:n], k


def _guide(q: float) -> tuple[np.ndarray, np.ndarray]:
    glo, ghi = np.zeros(K.GUIDE, np.int64), np.zeros(K.GUIDE, np.int64)
    K._build_guide(q, glo, ghi)
    return glo, ghi


@pytest.mark.parametrize("q", [1e-4, 0.0366, 0.3, 0.97])
@pytest.mark.parametrize("seed", range(4))
def test_candidates_plain_draws_what_next_gap_draws(q, seed):
    rng = np.random.default_rng(seed)
    glo, ghi = _guide(q)
    seg = int(rng.integers(0, 1 << 20)) * 64
    seg_end = seg + int(rng.integers(1, 70_000))
    s0 = seg + int(rng.integers(0, 3)) * int(rng.integers(0, seg_end - seg))  # the window may start in the segment
    key = np.uint64(rng.integers(0, 1 << 62))
    cap = 200_000
    want, want_rng, want_n = _reference_candidates(np.int64(seg), np.int64(seg_end), np.int64(s0), key, q,
                                                   glo, ghi, cap)
    out_slot, out_outc = np.empty(cap, np.int64), np.full(cap, 9, np.uint8)
    bits = np.zeros(((seg_end - 1) >> 6) - (seg >> 6) + 1, np.uint64)
    n, got_rng = K._candidates_plain(np.int64(seg), np.int64(seg_end), np.int64(s0), key, q, glo, ghi,
                                     out_slot, out_outc, 0, bits, np.int64(seg >> 6))
    assert n == want_n
    np.testing.assert_array_equal(out_slot[:n], want)
    assert (out_outc[:n] == 0).all()
    assert got_rng == want_rng  # the next segment of the chunk goes on from the same generator state
    expect = np.zeros_like(bits)
    np.bitwise_or.at(expect, (want >> 6) - (seg >> 6), np.left_shift(np.uint64(1), (want & 63).astype(np.uint64)))
    np.testing.assert_array_equal(bits, expect)
    # without a bitmap: the same candidates, nothing written anywhere else
    n2, _ = K._candidates_plain(np.int64(seg), np.int64(seg_end), np.int64(s0), key, q, glo, ghi,
                                out_slot, out_outc, 0, np.zeros(0, np.uint64), np.int64(seg >> 6))
    assert n2 == n
    np.testing.assert_array_equal(out_slot[:n], want)


def test_candidates_plain_reports_a_full_row():
    glo, ghi = _guide(0.3)
    out_slot, out_outc = np.empty(10, np.int64), np.empty(10, np.uint8)
    n, _ = K._candidates_plain(np.int64(0), np.int64(65536), np.int64(0), np.uint64(5), 0.3, glo, ghi,
                               out_slot, out_outc, 0, np.zeros(0, np.uint64), np.int64(0))
    assert n == -1


@pytest.mark.parametrize("seed", range(6))
def test_click_plain_clicks_what_the_rule_clicks(seed):
    rng = np.random.default_rng(seed)
    table = np.zeros((K.K_MAX * K.K_MAX * K.N_PHASE * K.N_PHASE, 3))
    mu = np.zeros((2, K.K_MAX))
    mu[:, :3] = [[0.0263, 0.05, 0.0], [0.022, 0.05, 0.0]]
    phase = np.tile(np.array([0.0, math.pi / 2, math.pi, 3 * math.pi / 2, 0.0]), (2, 1))
    pmax = K._build_table(table, 0, 1, 0.39, 0.59, mu, np.array([3, 3]), phase, np.zeros(2, np.int64), 0.5, 0.98,
                          0.8, 0.75, float(rng.uniform(-3, 3)))
    q = pmax * float(rng.uniform(1.0, 1.005))
    n_cand = int(rng.integers(0, 6000))
    cand = np.sort(rng.choice(1 << 22, n_cand, replace=False)).astype(np.int64)
    codes_i = (rng.integers(0, 3, n_cand) * 4 + rng.integers(0, 4, n_cand)).astype(np.uint8)
    codes_j = (rng.integers(0, 3, n_cand) * 4 + rng.integers(0, 4, n_cand)).astype(np.uint8)
    key = np.uint64(rng.integers(0, 1 << 62))
    seg_end = np.int64(cand[n_cand * 3 // 4] if n_cand else 0)
    kc = n_cand // 5
    want_s, want_o, want_k = _reference_clicks(cand[kc:], codes_i[kc:], codes_j[kc:], key, q / pmax, table, seg_end)
    out_slot, out_outc = np.empty(n_cand + 8, np.int64), np.empty(n_cand + 8, np.uint8)
    n, k = K._click_plain(seg_end, table, codes_i, codes_j, key, q / pmax, out_slot, out_outc, 3, kc, cand)
    assert k == kc + want_k
    assert n - 3 == want_s.size
    np.testing.assert_array_equal(out_slot[3:n], want_s)
    np.testing.assert_array_equal(out_outc[3:n], want_o)
    assert K._click_plain(seg_end, table, codes_i, codes_j, key, q / pmax, out_slot[:2], out_outc[:2], 0, kc,
                          cand)[0] == (-1 if want_k > 2 else want_s.size)
