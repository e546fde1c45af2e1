"""secure_key_length refuses a PairCounts it cannot bound soundly, naming the field (review s31, F1/F2).

A negative signal probability once gave 4.8x the key of the true settings (the pooled gains were
weighted by it); NaN and infinite scalars crashed in ``int()`` with a message naming nothing.
"""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Any

import numpy as np
import pytest

from labqfl.contracts.types import PairCounts
from labqfl.qkd.estimation import secure_key_length
from labqfl.qkd.keyrate import expected_counts

_make: Any = None


@pytest.fixture(autouse=True, scope="module")
def _factory(channel_factory: Any) -> None:
    global _make
    _make = channel_factory


def _base() -> tuple[PairCounts, int, int]:
    c = expected_counts(_make(), 1e9)
    n = int(c.clicks[0, 0, 0, 0])
    return c, n, int(1.2 * n * 0.08)


def test_the_base_case_gives_key() -> None:
    c, n, leak = _base()
    assert secure_key_length(c, n, 0.01, leak).key_length_bits > 0


@pytest.mark.parametrize(("field", "value", "match"), [
    ("intensity_probs_i", (-0.5, 0.05, 0.05), r"intensity_probs_i .*\(-0\.5.*expected finite values >= 0"),
    ("intensity_probs_j", (1.8, 0.1, 0.1), r"intensity_probs_j .*sums to 2\.0.*sum to 1"),
    ("intensity_probs_i", (0.01, 0.05, 0.05), r"intensity_probs_i .*sums to .*sum to 1"),
    ("intensity_probs_i", (math.nan, 0.05, 0.05), r"intensity_probs_i .*nan.*finite"),
    ("intensity_probs_i", (0.9, 0.1), r"intensities_i .*3 values but intensity_probs_i has 2"),
    ("basis_x_prob_i", -0.2, r"basis_x_prob_i .*-0\.2.*strictly between 0 and 1"),
    ("basis_x_prob_j", 0.0, r"basis_x_prob_j .*strictly between 0 and 1"),
    ("basis_x_prob_i", 1.0, r"basis_x_prob_i .*strictly between 0 and 1"),
    ("basis_x_prob_i", 1.5, r"basis_x_prob_i .*strictly between 0 and 1"),
    ("basis_x_prob_j", math.nan, r"basis_x_prob_j .*nan"),
    ("intensities_i", (math.nan, 0.1, 0.0), r"intensities_i .*nan.*finite values >= 0"),
    ("intensities_j", (0.03, -0.1, 0.0), r"intensities_j .*-0\.1.*>= 0"),
    ("intensities_i", (0.03, math.inf, 0.0), r"intensities_i .*inf"),
    ("n_slots", math.nan, r"n_slots .*finite number > 0, got nan"),
    ("n_slots", math.inf, r"n_slots .*finite number > 0, got inf"),
    ("n_slots", 0, r"n_slots .*> 0, got 0"),
])
def test_bad_pair_settings_are_refused_naming_the_field(field: str, value: object, match: str) -> None:
    c, n, leak = _base()
    with pytest.raises(ValueError, match=match):
        secure_key_length(replace(c, **{field: value}), n, 0.01, leak)  # type: ignore[arg-type]


@pytest.mark.parametrize(("arg", "value", "match"), [
    ("n_key_bits", math.nan, r"n_key_bits must be a finite whole number >= 0, got nan"),
    ("n_key_bits", math.inf, r"n_key_bits .*got inf"),
    ("n_key_bits", 1000.5, r"n_key_bits .*whole number.*1000\.5"),
    ("n_key_bits", -1, r"n_key_bits .*>= 0, got -1"),
    ("leak_ec_bits", math.nan, r"leak_ec_bits .*got nan"),
    ("leak_ec_bits", math.inf, r"leak_ec_bits .*got inf"),
    ("leak_ec_bits", 10.25, r"leak_ec_bits .*whole number"),
    ("leak_ec_bits", "12", r"leak_ec_bits must be a number, got '12'"),
    ("qber_key", math.nan, r"qber_key .*finite.*got nan"),
    ("qber_key", math.inf, r"qber_key .*got inf"),
])
def test_non_finite_or_fractional_scalars_are_refused_naming_the_argument(arg: str, value: object, match: str) -> None:
    c, n, leak = _base()
    kw: dict[str, object] = {"n_key_bits": n, "qber_key": 0.01, "leak_ec_bits": leak, arg: value}
    with pytest.raises(ValueError, match=match):
        secure_key_length(c, **kw)  # type: ignore[arg-type]


def test_whole_numbers_of_any_numeric_type_are_accepted() -> None:
    c, n, leak = _base()
    ref = secure_key_length(c, n, 0.01, leak).key_length_bits
    assert secure_key_length(c, np.int64(n), np.float64(0.01), float(leak)).key_length_bits == ref  # type: ignore[arg-type]
    big = replace(c, n_slots=np.int64(1e9))  # type: ignore[arg-type]
    assert secure_key_length(big, n, 0.01, leak).key_length_bits == ref


def test_measured_key_cell_counts_allow_no_extra_sifted_bit() -> None:
    """Measured (integer) clicks: not one sifted bit more than the key cell clicked (review s32 F2: a 1e-6
    tolerance meant for model expectations let +14 bits in and gave +8 bits of key); model (float) counts keep
    their rounding tolerance."""
    c, _, leak = _base()
    clicks = np.floor(np.asarray(c.clicks, dtype=float))
    measured = replace(c, clicks=clicks)
    n = int(clicks[0, 0, 0, 0])
    assert secure_key_length(measured, n, 0.01, leak).key_length_bits > 0
    with pytest.raises(ValueError, match=r"n_key_bits=.* exceeds the clicks in the key cell"):
        secure_key_length(measured, n + 1, 0.01, leak)
    model = replace(c, clicks=clicks + np.where(np.arange(clicks.size).reshape(clicks.shape) == 0, 0.25, 0.0))
    assert secure_key_length(model, n, 0.01, leak).key_length_bits > 0
