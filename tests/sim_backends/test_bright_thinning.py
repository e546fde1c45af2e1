"""The two-rate thinning of the signal kernel (``_kernels._segment_bright``) against slow references.

Dim slots (neither client at its brightest level) are thinned at q_lo, bright slots at p_max; the
statistical agreement with the channel model is tested per combination in test_physics.py (whose
stations all take this path, see ``test_the_default_station_takes_the_two_rate_path``); here the
pieces are checked exactly.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from labqfl.sim_backends import SagnacTestbed
from labqfl.sim_backends import _kernels as K
from labqfl.sim_backends.qrng import GAMMA, MASK64, mix64_int

from labqfl.config import load_station_config


def test_level_bytes_marks_exactly_the_bytes_of_a_level():
    rng = np.random.default_rng(1)
    codes = rng.integers(0, 32, size=8 * 4000).astype(np.uint8)
    words = codes.view(np.uint64)
    for top in range(-1, 8):
        got = np.array([int(K._level_bytes(w, top)) for w in words], dtype=np.uint64)
        bits = ((got[:, None] >> (8 * np.arange(8, dtype=np.uint64) + 7).astype(np.uint64)) & np.uint64(1)).astype(bool)
        assert np.array_equal(bits.ravel(), (codes >> 2) == top if top >= 0 else np.zeros(codes.size, bool))
        other = got & ~np.uint64(0x8080808080808080)
        assert not other.any()


def test_dim_bound_is_the_largest_dim_click_probability_over_every_phase():
    rng = np.random.default_rng(2)
    table = np.empty((K.K_MAX * K.K_MAX * K.N_PHASE * K.N_PHASE, 3))
    for _ in range(20):
        mu = np.zeros((2, K.K_MAX))
        mu[:, :3] = rng.uniform(0.0, 0.6, size=(2, 3))
        cnk = np.array([3, 3], dtype=np.int64)
        phase = rng.uniform(-math.pi, math.pi, size=(2, K.N_PHASE))
        pmode = np.zeros(2, dtype=np.int64)
        eta_cw, eta_ccw, t, vis = rng.uniform(0.05, 0.5), rng.uniform(0.05, 0.5), rng.uniform(0.4, 0.6), rng.uniform(0.8, 1)
        d0, d1 = rng.uniform(0.5, 0.9, size=2)
        top_i, top_j, lo = K._bright_levels(0, 1, mu, cnk, eta_cw, eta_ccw, t, vis, d0, d1)
        assert top_i == int(np.argmax(mu[0, :3])) and top_j == int(np.argmax(mu[1, :3]))
        worst = 0.0
        for theta in np.linspace(-math.pi, math.pi, 721):
            pmax = K._build_table(table, 0, 1, eta_cw, eta_ccw, mu, cnk, phase, pmode, t, vis, d0, d1, theta)
            for ki in range(3):
                for kj in range(3):
                    if ki == top_i or kj == top_j:
                        continue
                    for ai in range(4):
                        for aj in range(4):
                            idx = ((ki * K.K_MAX + kj) * K.N_PHASE + ai) * K.N_PHASE + aj
                            worst = max(worst, table[idx, 2] * pmax)
        assert worst <= lo * (1 + 1e-12)
        assert worst >= lo * (1 - 1e-3)  # the bound is reached at cos δ = ±1


def _two_rate_pairs(cfg) -> list[bool]:  # type: ignore[no-untyped-def]
    """Per scheduled pair: does the window take the two-rate path (bright level = the decoy, and
    the two rates save most of the candidates: the kernel's BRIGHT_MIN_GAIN rule)?"""
    tb = SagnacTestbed(cfg)
    ca, pa, dets, *_ = tb._window_inputs()
    table = np.empty((K.K_MAX * K.K_MAX * K.N_PHASE * K.N_PHASE, 3))
    out = []
    for p in range(pa["ci"].size):
        ci, cj = int(pa["ci"][p]), int(pa["cj"][p])
        args = (float(pa["eta_cw"][p]), float(pa["eta_ccw"][p]))
        pmax = K._build_table(table, ci, cj, *args, ca["mu"], ca["cnk"], ca["phase"], ca["pmode"],
                              cfg.loop.beam_splitter_ratio, cfg.loop.visibility, dets[0].efficiency,
                              dets[1].efficiency, 0.0)
        top_i, top_j, lo = K._bright_levels(ci, cj, ca["mu"], ca["cnk"], *args, cfg.loop.beam_splitter_ratio,
                                            cfg.loop.visibility, dets[0].efficiency, dets[1].efficiency)
        assert (top_i, top_j) == (1, 1)  # the decoy is the brightest level
        out.append(bool(pmax - lo * 1.01 >= K.BRIGHT_MIN_GAIN and lo < 0.2 * pmax))
    return out


def test_a_bright_decoy_station_takes_the_two_rate_path():
    """With the bright decoy of the 10^9-slot operating point (ν = 0.442, embedded until 2026-12-07
    and kept by the small test stations, tests/conftest.py) the two rates save most of the
    candidates, so the physics tests on those stations run the two-rate path."""
    cfg = load_station_config()
    bright = {"C1": [0.0294, 0.442, 0.0], "C2": [0.0216, 0.442, 0.0], "C3": [0.0203, 0.442, 0.0],
              "C4": [0.0294, 0.442, 0.0]}
    for c in cfg.clients:
        c.intensities = bright[c.name]
    assert all(_two_rate_pairs(cfg))


def test_the_embedded_station_takes_the_single_rate_path():
    """The embedded station's decoy is weak since 2026-12-07 (ν = 0.05, docs/station.md): p_max is
    3.1–3.8 % of a pair's slots, less than BRIGHT_MIN_GAIN above the dim bound, so every pair's
    window takes the single-rate path."""
    assert not any(_two_rate_pairs(load_station_config()))


def _u(key: int, s: int) -> int:
    """The 53-bit integer of the counter-based uniform U(key, s) = (h >> 11)·2^−53."""
    return mix64_int((key + s * GAMMA) & MASK64) >> 11


def _v(key: int, s: int) -> int:
    """E's 53-bit uniform V of slot s (U = V·2^−53), in pure Python: its high 16 bits are bits
    16·(s mod 4) … of SplitMix64(⌊s/4⌋) under ``key``, its low 37 bits the top of SplitMix64(s) under
    ``key`` ^ K._K_LOW."""
    hi = (mix64_int((key + (s >> 2) * GAMMA) & MASK64) >> (16 * (s & 3))) & 0xFFFF
    lo = mix64_int(((key ^ int(K._K_LOW)) + s * GAMMA) & MASK64) >> 27
    return (hi << 37) | lo


def test_segment_bright_follows_its_rule_slot_by_slot():
    """``how`` = 1 writes C_lo (flag 1) and E = {s : U(key_extra, s) < r} (flag 0, checked against a
    pure-Python hash of every slot); ``how`` = 0 (bright slots found by the word scan) clicks exactly
    where the rule says, recomputed in Python for every slot: bright and in C_lo ∪ E with
    U(key_acc)·p_max < p, or dim and in C_lo with U(key_acc)·q_lo < p; ``how`` = 2 on the
    candidates of ``how`` = 1 with the clients' codes there gives the same clicks."""
    rng = np.random.default_rng(5)
    n_slots, s0, seg = 40_000, 1000, 0  # the segment starts before the window: slots < s0 are skipped
    levels = rng.choice(3, size=(2, n_slots), p=[0.85, 0.05, 0.10])
    codes = (levels * 4 + rng.integers(0, 4, size=(2, n_slots))).astype(np.uint8)
    words = codes.view(np.uint64).reshape(2, -1)
    table = np.empty((K.K_MAX * K.K_MAX * K.N_PHASE * K.N_PHASE, 3))
    mu = np.zeros((2, K.K_MAX))
    mu[:, :3] = [[0.03, 0.45, 0.0], [0.02, 0.45, 0.0]]
    cnk = np.array([3, 3], dtype=np.int64)
    phase = np.zeros((2, K.N_PHASE))
    phase[:, :4] = np.arange(4) * math.pi / 2
    pmode = np.zeros(2, dtype=np.int64)
    pmax = K._build_table(table, 0, 1, 0.3, 0.3, mu, cnk, phase, pmode, 0.5, 0.99, 0.8, 0.78, 0.3)
    top_i, top_j, lo = K._bright_levels(0, 1, mu, cnk, 0.3, 0.3, 0.5, 0.99, 0.8, 0.78)
    q_lo = min(math.exp(math.ceil(math.log(lo) / K._Q_STEP) * K._Q_STEP), 1.0)
    r = (pmax - q_lo) / (1 - q_lo)
    glo, ghi = np.zeros(K.GUIDE, np.int64), np.zeros(K.GUIDE, np.int64)
    K._build_guide(q_lo, glo, ghi)
    key_acc, key_extra = 0x1234_5678_9ABC_DEF1, 0x0FED_CBA9_8765_4321
    pat = np.zeros(1, np.uint8)
    none_i, none_b = np.zeros(0, np.int64), np.zeros(0, np.uint8)

    bits_w0 = s0 >> 6
    bits = np.zeros(((s0 + n_slots - 1) >> 6) - bits_w0 + 1, np.uint64)

    def run(how, ci, cj, wi, wj, cand=none_i, flags=none_b):
        out_s, out_o = np.zeros(n_slots, np.int64), np.zeros(n_slots, np.uint8)
        n, rng_out, _ = K._segment_bright(np.int64(seg), np.int64(s0 + n_slots), np.int64(s0), np.uint64(99), pmax, q_lo, r,
                                    glo, ghi, table, ci, wi, 0, pat, top_i, cj, wj, 0, pat, top_j,
                                    0, 0.0, np.uint64(0), np.uint64(key_acc), np.uint64(key_extra),
                                    out_s, out_o, 0, how, 0, cand, flags, bits, np.int64(bits_w0))
        drawn.append(rng_out)
        return out_s[:n], out_o[:n]

    drawn: list[np.uint64] = []
    cs, cf = run(1, codes[0], codes[1], words[0], words[1])
    # the first pass's candidate bitmap (the modulator links' questions) holds exactly its candidates
    set_bits = np.flatnonzero(np.unpackbits(bits.view(np.uint8), bitorder="little")) + 64 * bits_w0
    np.testing.assert_array_equal(set_bits, cs)
    slots = np.arange(s0, s0 + n_slots)
    e_thr = math.ceil(r * 2.0**53)
    in_e = np.array([_v(key_extra, int(s)) < e_thr for s in slots])
    c_lo = cs[cf == 1]
    assert np.all(np.diff(cs) > 0) and c_lo.size > 0.5 * q_lo * n_slots
    np.testing.assert_array_equal(cs[cf == 0], np.setdiff1d(slots[in_e], c_lo))

    in_lo = np.isin(slots, c_lo)
    k = slots - s0
    ki, kj = codes[0, k] >> 2, codes[1, k] >> 2
    idx = ((ki.astype(np.int64) * K.K_MAX + kj) * K.N_PHASE + (codes[0, k] & 3)) * K.N_PHASE + (codes[1, k] & 3)
    bright = (ki == top_i) | (kj == top_j)
    ua = np.array([_u(key_acc, int(s)) for s in slots], dtype=np.float64) * 2.0**-53
    ua = np.where(bright, ua, ua * (q_lo / pmax))
    click = np.where(bright, in_lo | in_e, in_lo) & (ua < table[idx, 2])
    outcome = 1 + (ua >= table[idx, 0]).astype(np.int64) + (ua >= table[idx, 1])
    assert bright.mean() > 0.05 and click.sum() > 500
    ds, do = run(0, codes[0], codes[1], words[0], words[1])
    assert drawn[0] == drawn[1]  # both drew the chunk's C_lo stream to the same state (the next segment goes on from it)
    np.testing.assert_array_equal(ds, slots[click])
    np.testing.assert_array_equal(do, outcome[click])
    ts, to = run(2, codes[0, cs - s0].copy(), codes[1, cs - s0].copy(), words[0, :0], words[1, :0], cs, cf)
    np.testing.assert_array_equal(ts, ds)
    np.testing.assert_array_equal(to, do)


def test_the_per_slot_threshold_is_the_uniforms_comparison():
    """h >> 11 < ⌈r·2^53⌉ ⇔ (h >> 11)·2^−53 < r (the kernels compare integers)."""
    rng = np.random.default_rng(4)
    for r in [*rng.uniform(0, 1, 50), 0.25, 0.5, 1 - 2.0**-53, 2.0**-53]:
        thr = math.ceil(r * 2.0**53)
        for x in [thr - 1, thr, thr + 1, *rng.integers(0, 2**53, 20).tolist()]:
            if 0 <= x < 2**53:
                assert (x < thr) == (float(x) * 2.0**-53 < r)


@pytest.mark.parametrize("r", [0.0, 2.0**-53, 1e-6, 0.125, 0.2583, 0.5, 0.75 + 2.0**-40, 1.0 - 2.0**-53, 1.0])
def test_e_words_slots_and_reference_agree_on_every_threshold(r):
    """E per 64-slot word (``_e_word``, the optics' dense first pass), per slot (``_e_slot``, the drive
    patterns' bright slots) and in pure Python (V < T) agree on every slot of 40 words, for thresholds
    with few and many bits, 0 and 2^53; and the share of E is T·2^−53 (binomial, 6σ) on 2^18 slots."""
    key = 0x0FED_CBA9_8765_4321
    thr = np.uint64(K._e_threshold(r))
    for w in range(40):
        word = int(K._e_word(np.uint64(key), np.uint64(w), thr))
        for lane in range(64):
            t = 64 * w + lane
            ref = _v(key, t) < int(thr)
            assert bool((word >> lane) & 1) == ref == bool(K._e_slot(np.uint64(key), np.uint64(t), thr)), (w, lane)
    n = 1 << 18
    got = sum(int(K._e_word(np.uint64(key), np.uint64(w), thr)).bit_count() for w in range(n // 64))
    p = min(int(thr) * 2.0**-53, 1.0)
    assert abs(got - n * p) <= 6 * math.sqrt(n * p * (1 - p)) + 1e-9


def test_e_decides_by_the_low_bits_where_the_high_bits_equal_the_thresholds():
    """Thresholds whose high 16 bits equal those of chosen slots' V (probability 2^−16 per slot, so never
    met by chance in a test): the second hash decides, the same in the word, the slot and the reference,
    on both sides of V."""
    key = 0x1357_9BDF_2468_ACE0
    for t in (0, 5, 63, 64 * 7 + 33):
        v = _v(key, t)
        for thr in (v, v + 1, (v >> 37) << 37, ((v >> 37) << 37) | ((1 << 37) - 1)):
            word = int(K._e_word(np.uint64(key), np.uint64(t >> 6), np.uint64(thr)))
            assert bool((word >> (t & 63)) & 1) == (v < thr) == bool(K._e_slot(np.uint64(key), np.uint64(t), np.uint64(thr)))
