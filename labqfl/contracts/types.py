"""Data types that flow between the QKD stages (the contract between simulator, measurement
node, clients and post-processing).

Conventions (see docs/protocol.md):

* A **slot** is one laser pulse, indexed from 0 at the start of acquisition (int64).
* Each client, in each slot where it is active, chooses an **intensity index** k (uint8, index
  into its ``intensities``; 0 = signal) and a **phase index** a ∈ {0,1,2,3} (uint8), phase a·π/2.
  basis = a % 2 (0 = X = {0, π}, 1 = Y = {π/2, 3π/2}); bit = a // 2.
* The untrusted measurement node announces, per slot with a click, the **outcome**:
  1 = only D0 clicked, 2 = only D1 clicked, 3 = both.  D0 is the output where the two pulses
  interfere constructively for phase difference 0 (bit equal); a click in D1 for equal bases
  therefore means the bits differ.
* Pairs are named ``"Ci-Cj"`` with Ci before Cj on the loop; client i modulates the clockwise
  pulse, client j the counter-clockwise one.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, cast

import numpy as np

if TYPE_CHECKING:
    from labqfl.config import StationConfig

#: Error-correction engines of the pipeline (``DistillSettings.engine``): Cascade or LDPC.
ENGINES = ("cascade", "ldpc")
#: The engine every front end and settings object uses unless told otherwise.
DEFAULT_ENGINE = ENGINES[0]

#: Station time the default ``labqfl run`` acquires [s]. On the default station 10 s is one block of
#: 1.67e8 slots per pair by the block-size rule, predicted 57-86 kbit/s per pair (docs/station.md);
#: 60 s (1e9 slots per pair, the block the embedded operating point is optimised for) predicts
#: 73-101 kbit/s, and the whole job takes about three times as long on two cores (docs/nodes.md).
DEFAULT_DURATION_S = 10.0

#: Fewest clicks an error rate of test data is shown from (tables, GUI, report plot): below it its binomial
#: standard error √(e(1−e)/n) is 1 percentage point or more at e ≈ 1 %, as large as the rate (physics review
#: s34 F4: "0.00 %" from 5 decoy–decoy clicks).
MIN_TEST_CLICKS = 100

#: Longest acquisition (and block) any front end or node accepts [s], about 11.6 days: what the
#: simulator streams at most. Before this bound a 1e9 s ``labqfl run`` failed with "DEADLINE_EXCEEDED"
#: (its session deadlines, 150 wall s per simulated s, overflowed gRPC's clock; see
#: :data:`labqfl.net.transport.MAX_DEADLINE_S`) and ``labqfl acquire`` named the simulator's argument.
#: Time tags are int64 picoseconds, which end at 2^63 ps ≈ 9.2·10^6 s: the bound was 10^7 s, past
#: which tags overflowed (physics review s34); 10^6 s leaves 8·10^6 s for a time tagger's clock that
#: did not start at 0 (:data:`TAG_TIME_HEADROOM_S`).
MAX_DURATION_S = 1e6
#: Time a tagger's clock may already show at the first tag of a MAX_DURATION_S acquisition without its
#: int64 picosecond timestamps overflowing [s]
TAG_TIME_HEADROOM_S = (2**63 - 1) / 1e12 - MAX_DURATION_S


def duration_problem(value: float) -> str | None:
    """Why ``value`` is not a usable acquisition or block length [s] (``None``: it is): one phrase,
    "must be a number of seconds in (0, 1e+06], got …", for the caller to prefix with the option
    or field it came from."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        v = math.nan
    ok = math.isfinite(v) and 0 < v <= MAX_DURATION_S
    return None if ok else f"must be a number of seconds in (0, {MAX_DURATION_S:g}], got {value!r}"

OUTCOME_D0 = 1
OUTCOME_D1 = 2
OUTCOME_BOTH = 3


def pair_name(a: str, b: str) -> str:
    return f"{a}-{b}"


def split_pair(name: str) -> tuple[str, str]:
    a, sep, b = name.partition("-")
    if not sep or not a or not b:
        raise ValueError(f"pair name {name!r} is not of the form 'Ci-Cj'")
    return a, b


@dataclass(frozen=True)
class Announcements:
    """What the measurement node publishes for one pair: clicked slots and their outcomes."""

    pair: str
    slots: np.ndarray  # int64, strictly increasing
    outcomes: np.ndarray  # uint8 in {1, 2, 3}

    def __post_init__(self) -> None:
        if self.slots.dtype != np.int64 or self.outcomes.dtype != np.uint8:
            raise TypeError(f"Announcements expect int64 slots and uint8 outcomes, got {self.slots.dtype}/{self.outcomes.dtype}")
        if self.slots.shape != self.outcomes.shape:
            raise ValueError(f"slots and outcomes differ in length: {self.slots.shape} vs {self.outcomes.shape}")


@dataclass(frozen=True, repr=False)
class ModulationRecord:
    """One client's own choices for a set of slots (its side of the pipeline only). The phase
    indices carry the client's raw key bits, so ``repr``/``str`` show only sizes."""

    client: str
    slots: np.ndarray  # int64
    intensity_idx: np.ndarray  # uint8
    phase_idx: np.ndarray  # uint8 in 0..3

    def __repr__(self) -> str:
        return f"ModulationRecord(client={self.client!r}, n_slots={int(np.asarray(self.slots).size)})"

    __str__ = __repr__


class ModulationLog(Protocol):
    """A client's record of what it sent (its QRNG output / AWG pattern), queried by slot."""

    client: str

    def choices(self, slots: np.ndarray) -> ModulationRecord:
        """The client's intensity and phase indices in the given slots (int64 array)."""
        ...


def drive_codes(log: ModulationLog, slots: np.ndarray) -> np.ndarray:
    """What ``log``'s client applied in ``slots`` as drive codes k·4 + a (uint8; intensity index k,
    phase index a), the form a modulator link carries: the log class's own ``codes(slots)`` where
    it has one (one pass, no split and re-join), else its :meth:`ModulationLog.choices` joined.
    The method is looked up on the class, so a wrapper that forwards unknown attributes
    (:class:`labqfl.modulation.PlayedChoiceLog`) keeps its own checks."""
    own = getattr(type(log), "codes", None)
    if own is not None:
        return cast(np.ndarray, own(log, slots))
    rec = log.choices(slots)
    return np.asarray(rec.intensity_idx, np.uint8) << np.uint8(2) | np.asarray(rec.phase_idx, np.uint8)


#: Sifting rule of labqfl's protocol (docs/protocol.md): the raw key of a pair is made of the
#: slots where BOTH clients chose the signal intensity (index 0) AND basis X, and the node
#: announced a click (outcome 1, 2 or 3). Key bit at Ci: its bit; at Cj: its bit XOR (outcome == 2).
#: A double click (3) is mapped to a uniformly random bit by Cj (squashing), counted as a click.
#: Every other clicked slot is test data: both clients announce intensity, basis and bit.
KEY_INTENSITY_INDEX = 0
KEY_BASIS = 0  # X


@dataclass
class PairCounts:
    """Observed statistics of one pair over one block, handed to parameter estimation.

    Arrays have shape (K_i, K_j, 2, 2): intensity index of Ci, of Cj, basis of Ci, of Cj.
    ``clicks``: announced slots (outcome 1, 2 or 3) with those choices.
    ``errors``: among them, for equal bases only, slots whose outcome contradicts the bits
    (D1 for equal bits or D0 for different bits; a double click counts as an error with
    probability 1/2 — counted as half in ``errors_x2`` = 2·errors to stay integer).
    ``double_clicks``: outcome 3 counts.
    ``n_slots``: slots in which this pair was scheduled (all choices). Expected numbers sent per
    combination are n_slots·p_k(i)·p_k(j)·p_b(i)·p_b(j).
    """

    pair: str
    n_slots: int
    intensities_i: tuple[float, ...]
    intensities_j: tuple[float, ...]
    intensity_probs_i: tuple[float, ...]
    intensity_probs_j: tuple[float, ...]
    basis_x_prob_i: float
    basis_x_prob_j: float
    clicks: np.ndarray
    errors_x2: np.ndarray
    double_clicks: np.ndarray

    def expected_sent(self) -> np.ndarray:
        pi = np.asarray(self.intensity_probs_i)[:, None, None, None]
        pj = np.asarray(self.intensity_probs_j)[None, :, None, None]
        bi = np.array([self.basis_x_prob_i, 1 - self.basis_x_prob_i])[None, None, :, None]
        bj = np.array([self.basis_x_prob_j, 1 - self.basis_x_prob_j])[None, None, None, :]
        return self.n_slots * pi * pj * bi * bj

    def matched_test_cells(self, bases: tuple[int, ...] = (0, 1)) -> list[tuple[int, int, int]]:
        """The cells (k_i, k_j, basis) that :meth:`matched_test_counts` sums: equal bases (in
        ``bases``), equal non-zero intensities, the key cell (signal, signal, X, X) left out."""
        ki, kj = self.intensities_i, self.intensities_j
        cells = []
        for a, mu_a in enumerate(ki):
            for b, mu_b in enumerate(kj):
                # numpy.isclose's rule (rtol 1e-5, atol 1e-8) on finite scalars, without its array overhead
                if mu_a <= 0 or mu_b <= 0 or not abs(mu_a - mu_b) <= 1e-8 + 1e-5 * abs(mu_b):
                    continue
                cells += [(a, b, basis) for basis in bases if not (a == 0 and b == 0 and basis == 0)]
        return cells

    def matched_test_counts(self, bases: tuple[int, ...] = (0, 1)) -> tuple[int, int]:
        """(clicks, 2·errors) of the test data whose two pulses should interfere perfectly:
        equal bases (in ``bases``; 0 = X, 1 = Y) and equal non-zero intensities, without the key
        cell (signal, signal, X, X), whose errors stay secret until error correction
        (:meth:`matched_test_cells`).

        The optical error rate of the loop (visibility, drift, attacks): ``errors_x2 / 2 / clicks``.
        Cells of unequal intensities are left out: the wrong output port carries
        η(μ_i + μ_j − 2V√(μ_i μ_j))/2 (:mod:`labqfl.contracts.channel_model`), which is not zero for
        μ_i ≠ μ_j even at V = 1, so a perfect loop shows errors there. Equal intensities *leaving
        the clients* can still arrive unequal at the splitter (different path losses), which is why
        the first block's QBER estimate (:func:`labqfl.qkd.first_qber.key_qber_from_tests`) does not
        take this rate as it is.
        """
        clicks = errors_x2 = 0
        for a, b, basis in self.matched_test_cells(bases):
            clicks += int(self.clicks[a, b, basis, basis])
            errors_x2 += int(self.errors_x2[a, b, basis, basis])
        return clicks, errors_x2

    def __add__(self, other: PairCounts) -> PairCounts:
        if other.pair != self.pair or other.clicks.shape != self.clicks.shape:
            raise ValueError(f"cannot add counts of {other.pair} to {self.pair}")
        return PairCounts(self.pair, self.n_slots + other.n_slots, self.intensities_i, self.intensities_j,
                          self.intensity_probs_i, self.intensity_probs_j, self.basis_x_prob_i, self.basis_x_prob_j,
                          self.clicks + other.clicks, self.errors_x2 + other.errors_x2,
                          self.double_clicks + other.double_clicks)


def acquisition_id(cfg: StationConfig, epoch: int) -> str:
    """Identity of one acquisition's raw data: station, clients' QRNG seeds and the epoch.

    Block IDs derive from it, so the same acquisition (e.g. one recording) can be distilled into a
    key store only once. The simulator, the recordings, the Station and the pipeline all name an
    acquisition by it.
    """
    seeds = ";".join(f"{c.name}={c.seed}" for c in cfg.clients)
    h = hashlib.sha256(f"{cfg.name}|{seeds}".encode()).hexdigest()[:16]
    return f"{cfg.name}/{h}/epoch-{int(epoch)}"
