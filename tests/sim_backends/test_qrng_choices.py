"""The CSPRNG client's random-access choices (one ECB block per slot, fused kernel) against the
first implementation (distinct counter blocks by ``numpy.unique``), bit for bit."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(0, 2000), span=st.integers(1, 2**44),
       probs=st.sampled_from([[1.0], [0.5, 0.5], [0.891, 0.024, 0.085], [0.6, 0.2, 0.2], [1e-9, 1 - 2e-9, 1e-9]]),
       px=st.floats(0.01, 0.99), order=st.sampled_from(["sorted", "shuffled", "repeats"]),
       generator=st.sampled_from(["aes256-ctr-slot8-v2", "aes256-ctr-slot32-v1"]))
def test_csprng_choices_equal_the_reference_for_any_slots(seed, n, span, probs, px, order, generator):
    """Sorted, shuffled or repeated slots, sparse or dense (several slots per AES block), both generators."""
    from labqfl.sim_backends.qrng import CsprngChoiceLog

    rng = np.random.default_rng(seed)
    log = CsprngChoiceLog("C2", tuple(probs), px, key=rng.bytes(32), generator=generator)
    s = rng.integers(0, span, n, dtype=np.int64)
    if order == "sorted":
        s = np.sort(s)
    elif order == "repeats" and n:
        s = np.concatenate([s, s[: n // 2], s >> 1])
    fast, ref = log.choices(s), log.choices_reference(s)
    np.testing.assert_array_equal(fast.slots, ref.slots)
    np.testing.assert_array_equal(fast.intensity_idx, ref.intensity_idx)
    np.testing.assert_array_equal(fast.phase_idx, ref.phase_idx)
    assert fast.intensity_idx.dtype == fast.phase_idx.dtype == np.uint8


@pytest.mark.parametrize("generator", ["aes256-ctr-slot8-v2", "aes256-ctr-slot32-v1"])
def test_csprng_choices_of_consecutive_slots_match_the_drive_pattern(generator):
    """A dense run (every slot of 4096 v1 / 1024 v2 AES blocks) equals the CTR pattern the modulators play."""
    from labqfl.sim_backends.qrng import CsprngChoiceLog

    log = CsprngChoiceLog("C1", (0.6, 0.2, 0.2), 0.7, generator=generator)
    s0 = 123_456_789
    pattern = np.empty(16_384, dtype=np.uint8)
    log.fill_codes(s0, pattern)
    rec = log.choices(s0 + np.arange(16_384, dtype=np.int64))
    np.testing.assert_array_equal(rec.intensity_idx * 4 + rec.phase_idx, pattern)
