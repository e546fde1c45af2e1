"""Client QRNG: Numba kernel vs pure-Python reference, frequencies, independence of clients."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from labqfl.sim_backends import client_log
from labqfl.sim_backends.qrng import choices_reference
from labqfl.sim_backends.stations import edit_station
from scipy import stats

from labqfl.config import load_station_config


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**63), epoch=st.integers(0, 2**40),
       slots=st.lists(st.integers(0, 2**62), min_size=0, max_size=50),
       probs=st.sampled_from([[1.0], [0.5, 0.5], [0.8, 0.1, 0.1], [0.93, 0.02, 0.05], [0.0, 0.3, 0.7]]),
       px=st.floats(0.01, 0.99))
def test_qrng_kernel_matches_reference(seed, epoch, slots, probs, px):
    from labqfl.sim_backends.qrng import ClientQRNGLog

    log = ClientQRNGLog("C1", seed, epoch, tuple(probs), px)
    s = np.array(slots, dtype=np.int64)
    rec = log.choices(s)
    k, a = choices_reference(seed, epoch, probs, px, s)
    assert rec.intensity_idx.dtype == np.uint8 and rec.phase_idx.dtype == np.uint8
    np.testing.assert_array_equal(rec.intensity_idx, k)
    np.testing.assert_array_equal(rec.phase_idx, a)


def test_qrng_frequencies_chi_square():
    cfg = edit_station(randomness="seeded")
    c = cfg.clients[0]
    rec = client_log(cfg, c.name).choices(np.arange(400_000, dtype=np.int64))
    # intensity
    obs = np.bincount(rec.intensity_idx, minlength=len(c.intensities))
    exp = np.asarray(c.intensity_probs) * rec.slots.size
    assert stats.chisquare(obs, exp).pvalue > 1e-4
    # phase: basis X (a = 0, 2) with basis_x_prob, bits uniform
    obs = np.bincount(rec.phase_idx, minlength=4)
    px = c.basis_x_prob
    exp = np.array([px / 2, (1 - px) / 2, px / 2, (1 - px) / 2]) * rec.slots.size
    assert stats.chisquare(obs, exp).pvalue > 1e-4


def test_qrng_clients_and_epochs_independent():
    cfg = edit_station(randomness="seeded")
    s = np.arange(200_000, dtype=np.int64)
    a1 = client_log(cfg, "C1").choices(s).phase_idx
    a2 = client_log(cfg, "C2").choices(s).phase_idx
    a1e = client_log(cfg, "C1", epoch=1).choices(s).phase_idx
    for other in (a2, a1e):
        table = np.zeros((4, 4))
        np.add.at(table, (a1, other), 1)
        assert stats.chi2_contingency(table).pvalue > 1e-4
    # deterministic
    np.testing.assert_array_equal(a1, client_log(cfg, "C1").choices(s).phase_idx)


def test_client_log_refuses_csprng_clients():
    """A CSPRNG client's choices are not a function of the station file: nothing rebuilds them."""

    cfg = load_station_config()
    assert cfg.client("C1").randomness == "csprng"
    with pytest.raises(ValueError, match="csprng"):
        client_log(cfg, "C1", 0)


# -- the CSPRNG client (AES-256-CTR keyed from the OS) ------------------------------------------

def _ctr(key: bytes, first_block: int, s0: int, n: int, per_block: int, dtype: str) -> np.ndarray:
    """Units (``per_block`` to a 16-byte block) of slots s0 … s0 + n − 1 of the CTR keystream whose slot 0
    is counter ``first_block`` (128-bit big-endian), from `cryptography` alone."""
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

    b0 = s0 // per_block
    nb_ = (s0 + n + per_block - 1) // per_block - b0
    ks = Cipher(algorithms.AES(key), modes.CTR((first_block + b0).to_bytes(16, "big"))).encryptor().update(bytes(16 * nb_))
    return np.frombuffer(ks, dtype=dtype)[s0 - per_block * b0:s0 - per_block * b0 + n].astype(np.uint64)


def _reference_codes(key: bytes, probs, px, s0: int, n: int, generator: str = "aes256-ctr-slot8-v2") -> np.ndarray:
    """Straight from the definitions, every slot in full. v1: CTR keystream (counter ⌊s/4⌋, big-endian),
    32-bit little-endian word x per slot. v2: byte s mod 16 of the block with counter ⌊s/16⌋ (y) and word
    s mod 4 of the block with counter 2^64 + ⌊s/4⌋ (w), x = (y mod 128)·2^25 + (w mod 2^24)·2 + ⌊y/128⌋.
    Category = number of joint thresholds at or below x >> 1, bit = x & 1."""
    from labqfl.sim_backends.qrng import joint_thresholds

    if generator == "aes256-ctr-slot32-v1":
        x = _ctr(key, 0, s0, n, 4, "<u4")
    else:
        y, w = _ctr(key, 0, s0, n, 16, "u1"), _ctr(key, 1 << 64, s0, n, 4, "<u4")
        x = ((y % 128) << np.uint64(25)) | ((w & np.uint64(0xFFFFFF)) << np.uint64(1)) | (y // 128)
    c = np.searchsorted(joint_thresholds(probs, px), x >> np.uint64(1), side="right")
    return ((c >> 1) * 4 + (c & 1) + 2 * (x & np.uint64(1))).astype(np.uint8)


@settings(max_examples=25, deadline=None)
@given(s0=st.integers(0, 2**40), n=st.integers(1, 3000),
       probs=st.sampled_from([[1.0], [0.5, 0.5], [0.891, 0.024, 0.085], [0.0, 0.3, 0.7], [1e-9, 1 - 2e-9, 1e-9]]),
       px=st.floats(0.01, 0.99), generator=st.sampled_from(["aes256-ctr-slot8-v2", "aes256-ctr-slot32-v1"]))
def test_csprng_pattern_and_random_access_match_the_definition(s0, n, probs, px, generator):
    """Dense drive pattern (CTR runs + the branch-free mapping), random-access choices (ECB of the counters)
    and the reference computed from the definition all agree, for any start slot and length, both
    generators."""
    from labqfl.sim_backends.qrng import CsprngChoiceLog

    log = CsprngChoiceLog("C1", tuple(probs), px, generator=generator)
    ref = _reference_codes(log.key, probs, px, s0, n, generator)
    out = np.empty(n, dtype=np.uint8)
    log.fill_codes(s0, out)
    np.testing.assert_array_equal(out, ref)
    pick = np.sort(np.random.default_rng(n).choice(n, min(n, 50), replace=False))
    rec = log.choices(s0 + pick.astype(np.int64))
    np.testing.assert_array_equal(rec.intensity_idx * 4 + rec.phase_idx, ref[pick])


def test_csprng_frequencies_fresh_keys_and_private_file(tmp_path):
    from labqfl.sim_backends.qrng import (
        CsprngChoiceLog,
        PrivateLogMissing,
        load_private_log,
        save_private_log,
    )

    c = load_station_config().clients[0]
    a = CsprngChoiceLog(c.name, tuple(c.intensity_probs), c.basis_x_prob)
    b = CsprngChoiceLog(c.name, tuple(c.intensity_probs), c.basis_x_prob)
    assert a.key != b.key and a.key.hex() not in repr(a) and a.randomness == "csprng"
    rec = a.choices(np.arange(400_000, dtype=np.int64))
    obs = np.bincount(rec.intensity_idx, minlength=len(c.intensities))
    assert stats.chisquare(obs, np.asarray(c.intensity_probs) * rec.slots.size).pvalue > 1e-4
    px = c.basis_x_prob
    obs = np.bincount(rec.phase_idx, minlength=4)
    assert stats.chisquare(obs, np.array([px / 2, (1 - px) / 2, px / 2, (1 - px) / 2]) * rec.slots.size).pvalue > 1e-4
    table = np.zeros((4, 4))
    np.add.at(table, (rec.phase_idx[:200_000], b.choices(np.arange(200_000)).phase_idx), 1)
    assert stats.chi2_contingency(table).pvalue > 1e-4
    # the private log round-trips, is 0600, never overwritten, and its absence is one clear error
    p = save_private_log(a, tmp_path, "st/abc/epoch-5")
    assert p == tmp_path / "nodes" / "C1" / "choices" / "st_abc_epoch-5.key"
    assert p.stat().st_mode & 0o777 == 0o600 and p.parent.stat().st_mode & 0o777 == 0o700
    back = load_private_log(tmp_path, "C1", "st/abc/epoch-5")
    s = np.arange(0, 10_000, 3, dtype=np.int64)
    np.testing.assert_array_equal(back.choices(s).phase_idx, a.choices(s).phase_idx)
    assert save_private_log(a, tmp_path, "st/abc/epoch-5") == p  # the same log again: no-op
    with pytest.raises(FileExistsError, match="different choice log"):
        save_private_log(b, tmp_path, "st/abc/epoch-5")
    np.testing.assert_array_equal(load_private_log(tmp_path, "C1", "st/abc/epoch-5").choices(s).phase_idx,
                                  a.choices(s).phase_idx)
    with pytest.raises(PrivateLogMissing, match="client C2's private choice log for acquisition st/abc/epoch-5 not found"):
        load_private_log(tmp_path, "C2", "st/abc/epoch-5")


def test_v1_private_logs_still_load_and_unknown_generators_are_refused(tmp_path):
    """A log written with ``aes256-ctr-slot32-v1`` loads as v1 (the same choices as when it was written); new
    logs are v2; a log naming another generator is one clear error, and no log object takes an unknown one."""
    from labqfl.sim_backends.qrng import (
        CSPRNG_GENERATOR_V1,
        CsprngChoiceLog,
        load_private_log,
        save_private_log,
    )

    old = CsprngChoiceLog("C1", (0.891, 0.024, 0.085), 0.967, generator=CSPRNG_GENERATOR_V1)
    new = CsprngChoiceLog("C1", (0.891, 0.024, 0.085), 0.967, key=old.key)
    assert new.generator == "aes256-ctr-slot8-v2"
    s = np.arange(5, 200_000, 7, dtype=np.int64)
    assert (old.codes(s) != new.codes(s)).mean() > 0.3  # the same key, two generators: different choices
    save_private_log(old, tmp_path, "acq-1")
    back = load_private_log(tmp_path, "C1", "acq-1")
    assert back.generator == CSPRNG_GENERATOR_V1
    np.testing.assert_array_equal(back.codes(s), old.codes(s))
    p = save_private_log(new, tmp_path, "acq-2")
    assert load_private_log(tmp_path, "C1", "acq-2").generator == "aes256-ctr-slot8-v2"
    p.chmod(0o600)
    p.write_text(p.read_text().replace("aes256-ctr-slot8-v2", "aes256-ctr-slot4-v9"))
    with pytest.raises(ValueError, match="generator 'aes256-ctr-slot4-v9', expected"):
        load_private_log(tmp_path, "C1", "acq-2")
    with pytest.raises(ValueError, match="unknown CSPRNG generator"):
        CsprngChoiceLog("C1", (1.0,), 0.5, generator="aes256-ctr-slot4-v9")


@pytest.mark.parametrize("probs,px", [([0.891, 0.024, 0.085], 0.967), ([0.0, 0.3, 0.7], 0.5), ([1.0], 0.2),
                                      ([0.125] * 8, 0.9), ([1e-9, 1 - 2e-9, 1e-9], 0.01), ([0.5, 0.5], 0.5)])
def test_v2_coarse_bytes_decide_exactly_when_no_threshold_splits_their_bin(probs, px):
    """Every coarse byte 0 … 255, both mapping paths (the 128-byte table where the CPU has AVX-512 VBMI, the
    8-bit lanes everywhere): the code when all of the byte's 2^24 values of v fall in one category
    (computed from the thresholds with Python integers), AMBIGUOUS exactly when a threshold lies strictly
    inside the byte's bin; then the finished word gives the category of its v, at the bin's both ends and
    on each threshold inside it."""
    from labqfl.sim_backends import slot8
    from labqfl.sim_backends.qrng import _finish_listed, code_thresholds, joint_thresholds

    from labqfl.bitops import HAS_BYTE_LUT

    thr = joint_thresholds(probs, px)
    t = [int(x) for x in thr[:-1]]
    y = np.arange(256 + 64 + 7, dtype=np.int64).astype(np.uint8)  # every byte, then a tail past whole 64-byte steps
    table, lo_t, hi_t = slot8.coarse_map(thr)
    out, lanes = np.empty(y.size, np.uint8), np.empty(y.size, np.uint8)
    slot8.bytes_to_codes(y, table, lo_t, hi_t, out)
    slot8.bytes_to_codes_lanes(y, lo_t, hi_t, lanes)
    np.testing.assert_array_equal(out, lanes)
    print("the 128-byte table path ran" if HAS_BYTE_LUT else "no AVX-512 VBMI here: the lanes path only")
    for b in range(256):
        u, bit = b & 127, b >> 7
        lo, hi = u << 24, (u << 24) + (1 << 24) - 1
        c_lo, c_hi = sum(x <= lo for x in t), sum(x <= hi for x in t)
        assert (out[b] == slot8.AMBIGUOUS) == (c_lo != c_hi), b
        if c_lo == c_hi:
            assert out[b] == (c_lo >> 1) * 4 + (c_lo & 1) + 2 * bit, b
        for v in {lo, hi, *(x for x in t if lo < x <= hi), *(x - 1 for x in t if lo < x <= hi)}:
            got = np.zeros(1, np.uint8)
            _finish_listed(got, np.zeros(1, np.int64), np.array([2], np.int64), np.array([b], np.uint8),
                           np.array([0, 0, v - lo, 0], np.uint32), code_thresholds(thr))  # slot 2: word 2
            c = sum(x <= v for x in t)
            assert got[0] == (c >> 1) * 4 + (c & 1) + 2 * bit, (b, v)
    pos = np.empty(y.size, np.int64)
    m = slot8.ambiguous_positions(out, pos)
    np.testing.assert_array_equal(pos[:m], np.flatnonzero(out == slot8.AMBIGUOUS))


def test_v2_on_the_default_station_refines_three_percent_of_slots_and_keeps_the_distribution():
    """On the default probabilities 4 of the 128 coarse bins hold a threshold (3.1 % of slots); a dense
    pattern of 2^20 slots holds such slots, each with the reference's code, and the codes' frequencies are
    the thresholds' (chi-square over all 12 codes)."""
    from labqfl.sim_backends import slot8
    from labqfl.sim_backends.qrng import CsprngChoiceLog, joint_thresholds

    probs, px = [0.891, 0.024, 0.085], 0.967
    log = CsprngChoiceLog("C1", tuple(probs), px)
    n, s0 = 1 << 20, 2**33 + 11
    coarse = np.empty(n, np.uint8)
    slot8.bytes_to_codes(_ctr(log.key, 0, s0, n, 16, "u1").astype(np.uint8), *slot8.coarse_map(
        joint_thresholds(probs, px)), coarse)
    amb = coarse == slot8.AMBIGUOUS
    assert 0.028 < amb.mean() < 0.034
    out = np.empty(n, np.uint8)
    log.fill_codes(s0, out)
    ref = _reference_codes(log.key, probs, px, s0, n)
    np.testing.assert_array_equal(out, ref)
    assert np.unique(out[amb]).size >= 4  # the refined slots land on both sides of their thresholds
    thr = joint_thresholds(probs, px).astype(np.float64)
    pc = np.diff(np.concatenate([[0.0], thr])) / 2**31  # category probabilities
    want = np.array([pc[c] / 2 for c in range(6) for _ in (0, 1)])  # codes k·4 + {b, b + 2}, b = c & 1
    codes = np.array([(c >> 1) * 4 + (c & 1) + 2 * bit for c in range(6) for bit in (0, 1)])
    obs = np.bincount(out, minlength=32)[codes]
    assert obs.sum() == n and stats.chisquare(obs, want * n).pvalue > 1e-4


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 2**63), epoch=st.integers(0, 2**40), s0=st.integers(0, 2**50), n=st.integers(1, 500),
       probs=st.sampled_from([[1.0], [0.8, 0.1, 0.1], [0.0, 0.3, 0.7]]), px=st.floats(0.01, 0.99))
def test_seeded_drive_pattern_matches_reference(seed, epoch, s0, n, probs, px):
    """The seeded client's drive pattern (what the physics reads) is its generator's choices."""
    from labqfl.sim_backends.qrng import ClientQRNGLog

    out = np.empty(n, dtype=np.uint8)
    ClientQRNGLog("C1", seed, epoch, tuple(probs), px).fill_codes(s0, out)
    k, a = choices_reference(seed, epoch, probs, px, np.arange(s0, s0 + n, dtype=np.int64))
    np.testing.assert_array_equal(out, k * 4 + a)


@pytest.mark.parametrize("probs,px", [([0.891, 0.024, 0.085], 0.967), ([0.0, 0.3, 0.7], 0.5), ([1.0], 0.2),
                                      ([0.125] * 8, 0.9), ([1e-9, 1 - 2e-9, 1e-9], 0.01)])
def test_word_codes_on_every_threshold_edge_equal_the_threshold_rule(probs, px):
    """The branch-free mapping (the 32-bit sign of v − t per threshold) on words whose v lies on,
    just below and just above every threshold, and at 0 and 2^31 − 1, with both bits: the same
    codes as counting the thresholds at or below v (the definition), for 1 to 8 intensity levels
    (1 to 15 thresholds, one compiled kernel per count), empty and near-empty categories included;
    fill_codes' kernel and the random-access kernel alike."""
    from labqfl.sim_backends.qrng import (
        _block_words,
        _words_to_codes,
        code_thresholds,
        joint_thresholds,
    )

    thr = joint_thresholds(probs, px)
    v = np.unique(np.clip(np.concatenate([thr.astype(np.int64) + d for d in (-2, -1, 0, 1, 2)] + [[0, 2**31 - 1]]),
                          0, 2**31 - 1)).astype(np.uint64)
    x = np.concatenate([2 * v, 2 * v + 1]).astype(np.uint32)
    c = np.searchsorted(thr, x.astype(np.uint64) >> np.uint64(1), side="right")
    ref = ((c >> 1) * 4 + (c & 1) + 2 * (x & 1)).astype(np.uint8)
    out = np.empty(x.size, np.uint8)
    _words_to_codes(x, code_thresholds(thr), out)
    np.testing.assert_array_equal(out, ref)
    # random access: word s mod 4 of block n (slots 7 apart: one counter block each, block n holds x[n]
    # at the slot's word)
    slots = np.arange(x.size, dtype=np.int64) * 7 + 3
    ks = np.zeros(4 * x.size, np.uint32)
    ks[4 * np.arange(x.size) + (slots & 3)] = x
    words = np.empty(x.size, np.uint32)
    _block_words(ks, slots, words)
    _words_to_codes(words, code_thresholds(thr), out)
    np.testing.assert_array_equal(out, ref)


def test_csprng_codes_of_long_unordered_questions_with_shared_blocks_match_the_reference():
    """The modulator link's path (:meth:`CsprngChoiceLog.codes`): one AES block per run of slots
    sharing a counter, in pieces of ``_QUERY_SLOTS`` through reused buffers. Dense ascending slots
    (most runs share a block, runs crossing a piece's edge), then the same slots shuffled with
    repeats, each equal to the reference (one ECB block per distinct counter); a second log's
    question in between must not leak into the buffers' next use; a negative slot is refused."""
    from labqfl.sim_backends.qrng import _QUERY_SLOTS, CsprngChoiceLog

    rng = np.random.default_rng(5)
    log, other = CsprngChoiceLog("C1", (0.891, 0.024, 0.085), 0.967), CsprngChoiceLog("C2", (0.5, 0.5), 0.5)
    dense = (2**40 + np.flatnonzero(rng.random(4 * _QUERY_SLOTS + 1000) < 0.3)).astype(np.int64)
    assert dense.size > _QUERY_SLOTS and (np.diff(dense >> 2) == 0).mean() > 0.2
    for slots in (dense, rng.permutation(np.concatenate([dense[:5000], dense[:5000], dense[-3:]]))):
        ref = log.choices_reference(slots)
        np.testing.assert_array_equal(log.codes(slots), ref.intensity_idx * 4 + ref.phase_idx)
        o = other.choices_reference(slots[:1000])
        np.testing.assert_array_equal(other.codes(slots[:1000]), o.intensity_idx * 4 + o.phase_idx)
        rec = log.choices(slots)
        np.testing.assert_array_equal(rec.intensity_idx, ref.intensity_idx)
        np.testing.assert_array_equal(rec.phase_idx, ref.phase_idx)
    assert log.codes(np.empty(0, np.int64)).size == 0
    with pytest.raises(ValueError, match=">= 0"):
        log.codes(np.array([4, -1, 8], np.int64))


def test_v2_paths_without_avx512_give_the_same_codes(tmp_path):
    """The portable paths (8-bit lanes instead of the 128-byte table, set bit by set bit instead of the compress
    store) on every host: a subprocess compiles for the baseline x86-64 CPU (``NUMBA_CPU_NAME``/``FEATURES``,
    its own cache), finds neither AVX-512 feature, and its dense pattern and bitmap answers equal the reference."""
    import os
    import subprocess
    import sys
    import textwrap

    script = textwrap.dedent("""
        import numpy as np
        from labqfl.bitops import HAS_BYTE_COMPRESS, HAS_BYTE_LUT
        from labqfl.nodes.wire import slot_bits
        from labqfl.sim_backends.qrng import CsprngChoiceLog
        assert not HAS_BYTE_COMPRESS and not HAS_BYTE_LUT
        log = CsprngChoiceLog("C1", (0.891, 0.024, 0.085), 0.967)
        n, s0 = 300_000, 2**35 + 3
        out = np.empty(n, np.uint8)
        log.fill_codes(s0, out)
        ref = log.choices_reference(s0 + np.arange(n))
        ref = ref.intensity_idx * 4 + ref.phase_idx
        assert np.array_equal(out, ref)
        slots = s0 + np.flatnonzero(np.random.default_rng(0).random(n) < 0.25)
        runs = np.array([[s0, s0 + n]], np.int64)
        assert np.array_equal(log.codes_of_bitmap(runs.reshape(-1), slot_bits(slots, runs), slots.size), ref[slots - s0])
        print("portable paths equal")
    """)
    env = {**os.environ, "NUMBA_CPU_NAME": "x86-64", "NUMBA_CPU_FEATURES": "", "NUMBA_CACHE_DIR": str(tmp_path)}
    r = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0 and "portable paths equal" in r.stdout, r.stderr[-2000:]
