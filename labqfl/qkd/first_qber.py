"""The QBER a pair's first block assumes for error correction, predicted from its public test
rounds (later blocks take the previous block's measured QBER; :meth:`labqfl.qkd.twoparty.PairEndI.qber_estimate`).

Not a security parameter: the key length uses the errors error correction actually found and the
bits it disclosed (:mod:`labqfl.qkd.estimation`). It sets the code rate (LDPC) or the first block
size (Cascade). LDPC: a high estimate costs disclosed bits, a low one undecoded frames; since session 43 the
first LDPC block plans for the range from this prediction minus one standard deviation to plus one
(:meth:`labqfl.qkd.twoparty.PairEndI.qber_low`, ``plan_ldpc(q, qber_low=…)``). Cascade: a
high one halves the first-pass block and costs much more than a low one (:data:`CASCADE_FIRST_QBER_SIGMAS`).
"""

from __future__ import annotations

import math

from labqfl.contracts.types import PairCounts

#: Fewest clicks in the matched X test cells for the first block to estimate its QBER from them
#: (fewer: ``ProtocolSettings.qber_default``, by default :data:`LDPC_QBER_DEFAULT` or :data:`CASCADE_QBER_DEFAULT`).
MIN_TEST_CLICKS = 200
#: Fewest clicks in a one-sided test cell (the other client sent vacuum) for its arrival mean to be used.
MIN_ONE_SIDED_CLICKS = 100
#: Standard deviations of the matched cells' error count added to the first block's estimate: an
#: estimate 10–20 % low left LDPC frames undecoded at QBER 2–3.5 % (none down to half the QBER at
#: 0.5–1 %), one too high costs disclosed bits (f ≈ 1.45 up to 1.2× the QBER, 1.8 at 1.6×, 2.3 at 2.2×).
FIRST_QBER_SIGMAS = 1.0
#: LDPC's first block with fewer than :data:`MIN_TEST_CLICKS` matched test clicks (a high guess:
#: frames decoded at a higher code rate than needed cost bits, undecoded ones the block).
LDPC_QBER_DEFAULT = 0.02
#: Cascade's first block takes one standard deviation *below* the model's estimate, and 1 % without
#: enough test clicks. Cascade's cost is asymmetric in the error of the estimate: its first-pass block
#: k1 = 2^⌈log2(1/Q̂) − ½⌉ (:meth:`labqfl.qkd.cascade.CascadeSchedule.for_frame`) halves at
#: Q̂ = 1.105 %, and at a key QBER of 0.5 % k1 = 64 costs f 1.139 on 970 000 bits (1.043 at k1 = 256),
#: while an estimate far too low costs little (0.5 % assumed: +0.011 at a true 3 %, +0.015 at 5 %,
#: +0.024 at 8 %; 200 000-bit frames). Parametric bootstrap of twelve real first blocks' test counts
#: (20 draws each, 240 frames, review s39 F4): f 1.0646 (27.5 % of frames > 1.07) with +1σ and 2 %,
#: 1.0367 ± 0.0004 (none > 1.07, max 1.064) with −1σ and 1 %; the true QBER would give 1.0351.
CASCADE_FIRST_QBER_SIGMAS = -1.0
CASCADE_QBER_DEFAULT = 0.01


def _x_error_rate(a: float, b: float, vis: float, dark: float) -> float:
    """Error rate of an equal-basis cell whose pulses arrive at the splitter with mean photon
    numbers ``a`` and ``b`` (detected ones: times the detection efficiency), interfere with
    visibility ``vis`` and see a dark-click probability ``dark`` per detector and slot: the
    channel model (:mod:`labqfl.contracts.channel_model`, t = 1/2) with the wrong port carrying
    m1 = (a + b)/2 − V√(ab), the right one m0 = (a + b)/2 + V√(ab), each clicking with
    p = 1 − (1 − dark)e^(−m); a double click counts as half an error."""
    root = math.sqrt(a * b)
    p0 = dark - math.expm1(-((a + b) / 2 + vis * root)) * (1 - dark)
    p1 = dark - math.expm1(-max((a + b) / 2 - vis * root, 0.0)) * (1 - dark)
    click = p0 + p1 - p0 * p1
    return (p1 - p0 * p1 / 2) / click if click > 0 else 0.5


def key_qber_from_tests(counts: PairCounts, sigmas: float = FIRST_QBER_SIGMAS) -> float | None:
    """The key cell's QBER predicted from the public test data only, for a block without a previous
    block's measured QBER (``None``: fewer than :data:`MIN_TEST_CLICKS` matched test clicks;
    not clipped).

    The key cell (signal, signal, X, X) keeps its errors secret until error correction, and the
    matched X test cells (:meth:`~labqfl.contracts.types.PairCounts.matched_test_cells`; on the
    default station the decoy–decoy cell) are no direct proxy for it. The intensities are defined
    *leaving the clients*, so equal decoys arrive unequal at the splitter after the pair's two
    paths (η_cw ≠ η_ccw), and the wrong port carries the imbalance term (√A − √B)²/2 besides the
    visibility term (1 − V)√(AB) (single-photon interference of two coherent states: Lucamarini
    et al., Nature 557, 400 (2018), Methods; :mod:`labqfl.contracts.channel_model`). The signals
    are set per client to arrive balanced, the decoys are not: on the default station the
    decoy–decoy cell of C1-C2 and C3-C4 (A/B = 0.66 and 1.51) has 2.7–3× the key cell's QBER;
    dark counts (≈1e-6 per slot) weigh nothing there, and a fit of the errors as linear in the
    intensity would carry the decoys' imbalance over to the signals. So:

    1. the arrival means per intensity, a_k (Ci's pulse alone) and b_k (Cj's alone), from the
       one-sided test cells where the other client sent vacuum: gain Q = 1 − (1 − Y0)e^(−a_k),
       Y0 the vacuum–vacuum gain (all bases: the total click probability does not depend on the
       phases); the intensities as announced, so a miscalibrated modulator is measured, not assumed;
    2. the effective visibility V (interference, phase drift, phase-modulator errors: what the
       imbalance does not explain), fitted so that the matched X cells' predicted errors
       (:func:`_x_error_rate`, each cell weighted by its clicks) add up to the observed ones;
    3. the key cell's error rate at the signals' arrival means and that V, plus ``sigmas``
       standard deviations of the matched cells' binomial error count carried through the fit
       (:data:`FIRST_QBER_SIGMAS`, LDPC's: a conservative estimate; on the default station's 3 s
       first block it adds 0.0007–0.0016, 13–30 % of the key's QBER, 20 % on average;
       :data:`CASCADE_FIRST_QBER_SIGMAS` = −1 subtracts one, the result not below 0).

    Without vacuum test cells, or with fewer than :data:`MIN_ONE_SIDED_CLICKS` clicks in one
    that is needed, the matched cells' error rate is taken as it is (high by the imbalance term).
    Assumes a 50:50 splitter and equal detector efficiencies (0.5 and 0.80/0.78 on the default
    station: the model's own estimate is within 0.3 % of the key cell's QBER there).
    """
    n, errors_x2 = counts.matched_test_counts(bases=(0,))
    if n < MIN_TEST_CLICKS:
        return None
    e = errors_x2 / 2
    cells = counts.matched_test_cells(bases=(0,))
    plain = e / n
    vi = [k for k, mu in enumerate(counts.intensities_i) if mu <= 0]
    vj = [k for k, mu in enumerate(counts.intensities_j) if mu <= 0]
    if not vi or not vj:
        return plain
    clicks = counts.clicks.sum(axis=(2, 3))
    sent = counts.expected_sent().sum(axis=(2, 3))

    def gain(a: int, b: int) -> float | None:
        return float(clicks[a, b] / sent[a, b]) if 0 <= clicks[a, b] < sent[a, b] else None

    y0 = gain(vi[0], vj[0])
    if y0 is None:
        return plain
    dark = -math.expm1(0.5 * math.log1p(-y0))  # per detector: 1 − √(1 − Y0)
    means: dict[tuple[int, int], float] = {}  # (side, intensity index) → arrival mean
    for a, b in {(a, b) for a, b, _ in cells} | {(0, 0)}:
        for side, k, cell in ((0, a, (a, vj[0])), (1, b, (vi[0], b))):
            g = gain(*cell)
            if g is None or clicks[cell] < MIN_ONE_SIDED_CLICKS:
                return plain
            means[side, k] = max(math.log1p(-y0) - math.log1p(-g), 0.0)
    weighted = [(int(counts.clicks[a, b, x, x]), means[0, a], means[1, b]) for a, b, x in cells]
    return _predict_key_qber(weighted, (means[0, 0], means[1, 0]), e, dark, sigmas)


def _predict_key_qber(weighted: list[tuple[int, float, float]], key: tuple[float, float], e: float, dark: float,
                      sigmas: float) -> float:
    """Steps 2–3 of :func:`key_qber_from_tests`: the visibility V that makes the matched cells
    (``weighted``: clicks, arrival means a and b) predict ``e`` errors, then the key cell's error rate at
    the signals' arrival means ``key`` and that V, plus ``sigmas`` standard deviations of the error count
    carried through the fit (negative ``sigmas``: minus; not below 0)."""

    def predicted(vis: float) -> float:  # the matched cells' errors at visibility ``vis``
        return sum(w * _x_error_rate(a, b, vis, dark) for w, a, b in weighted)

    if predicted(1.0) >= e:
        vis = 1.0
    elif predicted(0.0) <= e:
        vis = 0.0
    else:  # predicted errors fall as V rises
        lo, hi = 0.0, 1.0
        for _ in range(40):
            mid = (lo + hi) / 2
            lo, hi = (mid, hi) if predicted(mid) > e else (lo, mid)
        vis = (lo + hi) / 2
    q = _x_error_rate(*key, vis, dark)
    if sigmas == 0:
        return q
    sd_e = math.sqrt(sum(w * r * (1 - r) for w, r in ((w, _x_error_rate(a, b, vis, dark)) for w, a, b in weighted)))
    v0, v1 = max(vis - 1e-3, 0.0), min(vis + 1e-3, 1.0)
    de = predicted(v0) - predicted(v1)  # > 0
    dq = _x_error_rate(*key, v0, dark) - _x_error_rate(*key, v1, dark)
    return max(q + sigmas * sd_e * dq / de, 0.0) if de > 0 else q
