"""Client QRNG: Numba kernel vs pure-Python reference, frequencies, independence of clients."""

from __future__ import annotations

import numpy as np
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
    import pytest

    cfg = load_station_config()
    assert cfg.client("C1").randomness == "csprng"
    with pytest.raises(ValueError, match="csprng"):
        client_log(cfg, "C1", 0)
