"""Cascade information reconciliation (Brassard & Salvail 1993) with tuned block sizes.

Bob holds the noisy key and drives the protocol; Alice answers parity questions.  Both run over a
:class:`labqfl.qkd.messaging.Channel`, which counts every parity Alice reveals (``leaked_bits``).

Protocol (as implemented, identical in the fast kernels and in :func:`cascade_reference`)
-----------------------------------------------------------------------------------------
Both parties derive, from a public ``seed``, one *pass* per entry of the block-size schedule:

* an **affine pass** with block size k: position j of the pass holds key index
  ``(c + a·j) mod n`` (``a`` a random unit mod n, ``c`` random), blocks are consecutive runs of k
  positions (the last one shorter); on frames < 2^19 bits the ``a`` of every pass after the first
  is the best of 8 seeded draws at separating the bits of earlier passes' blocks
  (:func:`_spread_multiplier`);
* a **bipartition pass** (schedule entry :data:`HALF`, "k = n/2"): a random bit per key index
  splits the key in two blocks, each ordered by increasing index.

These pseudo-random permutations cost O(1) memory per pass, so a 10^6-bit frame needs no
10^6-entry permutation tables; any permutation is *correct* for Cascade — they only decorrelate
error positions between passes.

For pass p = 0, 1, ...: Alice reveals the parity of every block of pass p — except, from pass 1
on, the last block's, which Bob computes from the parity of the whole key (the XOR of pass 0's
block parities): one disclosed bit less per pass.  Then, repeatedly, Bob takes the *first* pass
q ≤ p that has blocks whose parity differs from Alice's ("odd" blocks) and runs a BINARY search
in each of them (left half = first ⌊s/2⌋ bits of the range), one parity per bisection level
(two levels per channel round trip, see "Round trips" below); the bit found in each block is flipped, which toggles the parity of the blocks
holding it in every other started pass (the *cascade effect*).  Pass p ends when no started pass
has an odd block.  Alice's answers are remembered per sub-block (*sub-block reuse*, Martinez-Mateo
et al. arXiv:1407.3257 §4): a parity Bob already knows is never asked again, and the right half's
parity follows from the parent's.  **Implied halves are not asked**: Bob records Alice's bit
for every one-bit half whose parity he learns (asked, or the parent's minus its sibling's); when
every bit of a half of at most :data:`IMPLIED_MAX` bits is known, or every bit of the other half
(the range's own parity being Bob's plus one), the parity is a sum of parities already disclosed
and Bob computes it.  Such a query would add nothing to the span of Alice's disclosures
(Martinez-Mateo et al. §4 count only independent parities); on 10^4-bit frames at 8 % it was
1.7–2.1 % of all parities sent (GF(2) rank test in
``tests/qkd/reconciliation/test_cascade_leakage.py``).  The fast kernel lets searches in affine passes advance
together (fewer round trips); a search in a bipartition pass, or in an affine pass from
:data:`DEFER_FROM_PASS` on, asks only when no lower pass has a search waiting, as in the
reference (a flip found there often makes its block even for free — on 10^4-bit frames asking
at once cost 2 % more leakage, on 10^6-bit frames at 4–8 % letting the third pass ask at once
cost 0.6–0.8 %).  With :attr:`CascadeSchedule.halves_in_turn` (frames < 2^16 bits) the second block
of a bipartition waits for the first block's search in the same way.

**Round trips** (what a networked pair pays per message; the parities disclosed are the same):

* *Block parities asked ahead*: a frame stops only after ``confirm`` clean bipartitions in a row
  (or its last pass), so every pass up to the first one where such a run *could* be complete runs
  whatever happens (:func:`_last_certain`): Bob asks for all their block parities at once — in the
  first round the affine passes' and the first ``confirm`` bipartitions', after a bipartition that
  found an error the next ``confirm`` — and opens each pass in the same kernel call as the end of
  the previous one.  Exactly the parities of a run that asks for each pass when it starts are
  disclosed (no pass is asked for that does not run), and Bob acts on them at the same moments, so
  the corrected bits and the leak are unchanged; a clean confirmation costs no round trip.
* *Two bisection levels per round trip* (:attr:`CascadeSchedule.two_level`): Bob's query carries
  his own parity of the half he asks about, so Alice, comparing it with hers, knows which half
  holds the odd error count and, if Bob asked for it, answers the parity of that half's left half
  too (:func:`_alice_round`): one level decided on each side of the round trip.  Alice discloses
  one parity per level, as before; Bob's parity is no new information — in the one-level protocol
  his next query names the half he chose, which reveals A(half) ⊕ B(half), i.e. B(half) once
  Alice's parity is public.  Bob asks for the second parity only where he would have to ask for it
  next round (not implied, :func:`_next_level_unknown`).  A search that a flip elsewhere restarts
  or ends in the same round may leave that second parity unused: paired on the same frames, f
  moved by −0.0037 … +0.0005 (10^4–10^7 bits, 0.5–8 %), beyond its standard error upwards only
  at 10^6 bits / 1 % (+0.0005 ± 0.0002, 53 frames), for 1.5–2.3× fewer round trips
  (docs/reconciliation.md).

**Interleaved frames** (``frame_bits``, :class:`CascadeBob`): a key cut into K frames is
reconciled with one ``cascade/round`` message per round carrying every frame's requests, and one
kernel call per round on each side (:func:`_bob_step`, :func:`_alice_round`); frame f runs exactly
the one-frame protocol with seed (seed + f) mod 2^63, so K frames take the round trips of one.

A schedule may end with *confirmation*: Bob stops once ``confirm`` bipartitions in a row find no
odd block, which bounds the frame error rate by 2^-confirm (:class:`CascadeSchedule`).

**Verification continued** (:func:`reconcile_cascade_verified`, the pair protocol's ``ec/more``,
docs/protocol.md §5): every key block is verified after reconciliation anyway, so where that
verification may be repeated (:func:`~labqfl.qkd.verification.verification_tag_plan`) frames shorter
than 2^19 bits stop after 3 clean bipartitions (:func:`verified_confirm`) instead of 16.  A frame
that still holds errors fails verification; Bob then continues the same run (:meth:`CascadeBob.more`:
the next bipartitions, :data:`RETRY_CONFIRM` clean ones in a row, with every sub-block parity he
learnt) and the pair verifies again with Δ_i fresh tag bits.  The continued run's parities and the
Δ_i bits are counted in the leak; a key no attempt verifies is never delivered.  On 10^4-bit frames
f (everything counted) 1.0629 → 1.0474 at 1 %, 1.0510 → 1.0482 at 8 %.

Block-size schedules (Martinez-Mateo, Pacher, Peev, Ciurana, Martin, "Demystifying the
information reconciliation protocol Cascade", arXiv:1407.3257):

* :meth:`CascadeSchedule.original`: k1 = ⌈0.73/Q⌉, k_{i+1} = 2·k_i, 4 passes ("Cascade orig.").
* :meth:`CascadeSchedule.tuned` ("Cascade opt. (8)"): α = log2(1/Q) − 1/2,
  k1 = 2^⌈α⌉, k2 = 2^⌈(α+12)/2⌉, k3 = 4096, k_i = n/2 for i ≥ 4, 14 passes.
* :meth:`CascadeSchedule.for_frame` (the default): opt. (8) adapted to the frame length n (k1
  halved below 128 first-pass blocks, a third pass of 8192 bits — 16384 from 7 % — only from
  2^19 bits on; below 2^16 bits k2's exponent rounded down within ¼ of an integer, the second
  pass's searches deferred, implied parities derived at every QBER and a bipartition's blocks
  searched in turn), then bipartitions with confirmation (16 clean bipartitions in a row: frame
  error rate ≤ runs · 2^-16).

Efficiency ``f = leaked_bits / (n · h(Q))`` (h the binary entropy) is ≥ 1 by Shannon's bound.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import secrets
import types
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numba
import numpy as np
from numba import prange
from numba.cpython.unsafe.numbers import trailing_zeros

from labqfl.qkd.messaging import Channel, LocalChannel, Message, MessageError
from labqfl.qkd.reconciliation import (
    ReconciliationInputError,
    ReconciliationResult,
    validate_reconciliation_input,
)

__all__ = [
    "HALF",
    "CascadeAlice",
    "CascadeBob",
    "CascadeInconsistencyError",
    "CascadeSchedule",
    "cascade_reference",
    "reconcile_cascade",
    "reconcile_cascade_verified",
    "verified_confirm",
    "verified_halves",
]

_NO_REFCOUNT: dict[str, Any] = {"cache": True, "nogil": True, "_nrt": False}
"""Every kernel here is compiled without Numba's reference counting (``_nrt=False``): with it,
each array argument a kernel stores in a local costs an atomic ``NRT_incref`` and
``NRT_decref`` per call, and the small helpers the search calls per parity (range parities,
index arithmetic) take six to nine arrays each.  On a 10^6-bit frame at QBER 2 % those calls were
24 % of the CPU time (perf, samples attributed with the kernels' load addresses).  Such a kernel
must not allocate (Numba refuses to compile that) or hand an array back to Python (nothing would
own it): buffers come from the caller.  ``tests/qkd/reconciliation/test_cascade_kernels.py``
checks that every kernel is compiled so and that none Python calls returns an array."""

HALF = -1
"""Schedule entry meaning "block size n/2": a random bipartition of the key."""

MAX_BITS = 1 << 27
"""Largest frame Cascade accepts (sub-block keys pack pass, block and node in 64 bits)."""

FRAME_CONFIRM = 16
"""Default ``confirm`` of :meth:`CascadeSchedule.for_frame`: a run of clean bipartitions that
starts with residual errors passes with probability 2^-16 ≈ 1.5·10^-5 (with 12, one 10^4-bit frame
of 1 400 in ``labqfl bench cascade-grid`` kept 8 errors, paired in the same blocks of both affine
passes, through 12 clean bipartitions)."""

THIRD_PASS_MIN_BITS = 1 << 19
""":meth:`CascadeSchedule.for_frame` adds a third affine pass from this frame length on."""

THIRD_PASS_BITS = 8192
"""Block size of that third pass (opt. (8) has 4096); :data:`THIRD_PASS_BITS_HIGH_QBER` from
:data:`HIGH_QBER` on."""

THIRD_PASS_BITS_HIGH_QBER = 16384
HIGH_QBER = 0.07

IMPLIED_MAX = 4
"""Default :attr:`CascadeSchedule.implied_max`: the largest half (in bits) whose parity Bob derives
from Alice's bits he already knows instead of asking."""

IMPLIED_MIN_QBER = 0.03
""":meth:`CascadeSchedule.for_frame` derives implied parities from this QBER on, and at every QBER
on frames shorter than :data:`SHORT_FRAME_BITS`.  On long frames below 3 % such parities are rare
and the bookkeeping made the 10^6-bit kernel ~1.5× slower.  On 10^4-bit frames, where the second
pass's searches wait for the first pass's (``defer_from`` = 1), it pays at 1–2 % too (400 frames,
paired: f −0.0009 ± 0.0001 at 1 %, −0.0028 ± 0.0004 at 2 %; docs/reconciliation.md)."""

IN_TURN = 1 << 8
"""Flag added to ``defer`` (the kernels' :attr:`CascadeSchedule.defer_from` argument) when
:attr:`CascadeSchedule.halves_in_turn` is set."""

DEFER_FROM_PASS = 2
"""Default :attr:`CascadeSchedule.defer_from`: searches of affine passes from this index on (and of
every bipartition pass) ask only when no lower pass has a search waiting (see
:func:`_cascade_round`)."""

SHORT_FRAME_K2_SLACK = 0.25
"""Below :data:`SHORT_FRAME_BITS`, :meth:`CascadeSchedule.for_frame` takes k2 = 2^⌈(α+12)/2 − ¼⌉:
opt. (8)'s exponent is rounded down when it lies less than ¼ above an integer.  10^4 bits, 300 +
300 frames: at 4 % ((α+12)/2 = 8.07) k2 = 256 instead of 512 gave f −0.0010 ± 0.0006 and
−0.0011 ± 0.0006 with 0.72× the round trips; at 1 % (9.07) 512 instead of 1024: −0.0003 ± 0.0013,
0.71× the round trips; at 3 % (8.28) 256 would cost +0.0014 ± 0.0007."""

SHORT_FRAME_BITS = 1 << 16
""":meth:`CascadeSchedule.for_frame` on frames shorter than this: the second pass's searches wait
for the first pass's too (``defer_from`` = 1).  10^4 bits, 300 frames: f −0.002 at 1, 4 and 8 %
for 1.3–1.7× the round trips; 10^5 bits (20 frames) would gain as much for 2.3–2.5× the round
trips, and is within f ≤ 1.05 without it."""

FRAME_EXTRA_HALVES = 12
"""Bipartition passes :meth:`CascadeSchedule.for_frame` allows beyond ``confirm``."""

RETRY_CONFIRM = 8
"""``confirm`` of :meth:`CascadeBob.more`, Bob's continuation after a failed verification."""

RETRY_EXTRA_HALVES = 4
"""Bipartition passes a schedule with reduced ``confirm`` keeps, per further verification attempt,
beyond :data:`RETRY_CONFIRM` (:func:`reconcile_cascade_verified`)."""


def verified_confirm(qber: float, n: int) -> int:
    """``confirm`` for frames of n bits whose key a verification with further attempts checks
    (:func:`reconcile_cascade_verified`, the pair protocol; docs/protocol.md §5): 3 below
    :data:`THIRD_PASS_MIN_BITS`, else :data:`FRAME_CONFIRM`.

    A frame that still holds errors after c clean bipartitions (probability P_res(c)) costs a
    continued run (:meth:`CascadeBob.more`, :data:`RETRY_CONFIRM` more) and Δ_1 = 3 tag bits, ≈ 55–80
    bits in all, so the expected leak is the run's with c confirmations + P_res(c)·(≈ 70) — minimal near
    c = 3, where 7–21 % of 10^4-bit frames need the second attempt.  Paired against 16 confirmations,
    ``noisy_frame(10**4, Q, 1000 + i)``, seed i, 400–600 frames, f with everything counted: 1 %
    1.0629 → 1.0474 (c = 4: 1.0484, c = 2: 1.0472 for 15 % retries), 2 % 1.0468 → 1.0383, 3 %
    1.0422 → 1.0361, 4 % 1.0442 → 1.0393, 5 % 1.0443 → 1.0402, 6 % 1.0447 → 1.0411, 8 % 1.0510 →
    1.0482 (c = 4 within 0.0003 of c = 3 at 2–6 %); 10^5 bits, 40 frames: 1 % −0.0015, 4 % −0.0005.
    From 2^19 bits (third pass, 10^6-bit speed target) 16 confirmations are ≤ 0.0002 of f: kept."""
    return VERIFIED_CONFIRM_SHORT if n < THIRD_PASS_MIN_BITS else FRAME_CONFIRM


VERIFIED_CONFIRM_SHORT = 3
""":func:`verified_confirm` below :data:`THIRD_PASS_MIN_BITS`."""


def verified_halves(qber: float, n: int, attempts: int, retry_confirm: int = RETRY_CONFIRM) -> tuple[int, int]:
    """``(confirm, extra_halves)`` of :meth:`CascadeSchedule.for_frame` for n-bit frames whose key
    ``attempts`` verification attempts may check: :func:`verified_confirm` confirmations, and enough
    bipartition passes for :meth:`CascadeBob.more` to run ``retry_confirm`` more (plus
    :data:`RETRY_EXTRA_HALVES`) per further attempt; the default (:data:`FRAME_CONFIRM`) where only one
    attempt is possible."""
    c = verified_confirm(qber, n) if attempts > 1 else FRAME_CONFIRM
    if c >= FRAME_CONFIRM:
        return FRAME_CONFIRM, FRAME_EXTRA_HALVES
    return c, FRAME_EXTRA_HALVES + (attempts - 1) * (retry_confirm + RETRY_EXTRA_HALVES)


class CascadeInconsistencyError(MessageError):
    """Alice's parities contradict each other (a tampered or desynchronised channel): Bob stops."""


# ----------------------------------------------------------------------------------- schedule
@dataclass(frozen=True)
class CascadeSchedule:
    """Block size of each pass (:data:`HALF` = random bipartition, "n/2").

    ``confirm`` (0 = run every pass): Bob stops as soon as ``confirm`` bipartition passes in a row
    found no odd block.  A random bipartition puts an odd number of any non-empty set of residual
    errors in its first block with probability exactly ½ (one independent fair bit per index, drawn
    after those errors were fixed), so a frame that still holds errors passes ``confirm`` clean
    bipartitions in a row with probability 2^-confirm whatever the frame size.  A detection starts a
    new run, so the frame error rate is ≤ (runs started with errors) · 2^-confirm — in practice one
    or two runs.  Each confirmation costs one disclosed parity (the other block's follows from
    the key parity).

    ``implied_max`` (bits, 0 = off): Bob derives, instead of asking, the parity of a half of at
    most this many bits that follows from Alice's bits he already knows (module docstring).  Bob's
    choice alone; Alice answers whatever is asked.

    ``defer_from`` (pass index ≥ 1): searches of affine passes from this pass on, like those of
    bipartitions, ask Alice only when no lower pass has a search waiting, and restart lazily after a
    flip (:func:`_cascade_round`).  Bob's choice alone: it changes which parities he asks and when,
    never what Alice answers.

    ``two_level``: Bob asks, with each bisection query, for the next level's parity in the half
    that Alice's answer will show to be odd (module docstring, "Round trips"): half the round trips
    of the binary searches for the same parities.  Bob's choice alone.

    ``halves_in_turn``: when both blocks of a bipartition are odd, Bob searches the first only; the
    second block's search starts (from its root) once no search of that pass or a lower one is left,
    and only if the block is still odd.  The errors left by the affine passes lie in cycles over their
    blocks (every block of both passes even), so the cascade that the first search's flip sets off
    usually fixes an odd number of errors in the second block and makes it even: its whole search
    (≈ log2(n/2) parities) is saved.  On 10^4-bit frames, paired on 300 frames: f −0.0060 ± 0.0005
    at 1 %, −0.0058 ± 0.0003 at 2 %, −0.0046 ± 0.0002 at 8 %, for 3–5 % more round trips
    (docs/reconciliation.md).  Bob's choice alone.
    """

    block_sizes: tuple[int, ...]
    name: str = "custom"
    confirm: int = 0
    implied_max: int = IMPLIED_MAX
    defer_from: int = DEFER_FROM_PASS
    two_level: bool = True
    halves_in_turn: bool = False

    def __post_init__(self) -> None:
        if not self.block_sizes:
            raise ReconciliationInputError("a Cascade schedule needs at least one pass")
        for k in self.block_sizes:
            if k != HALF and k < 1:
                raise ReconciliationInputError(f"Cascade block sizes must be >= 1 or HALF, got {k}")
        if len(self.block_sizes) > 100:
            raise ReconciliationInputError("a Cascade schedule has at most 100 passes")
        if not 1 <= self.defer_from <= 100:
            raise ReconciliationInputError(f"defer_from must lie between 1 and 100 (a pass index), got {self.defer_from}")
        if not 0 <= self.implied_max <= 64:
            raise ReconciliationInputError(f"implied_max must lie between 0 and 64 bits, got {self.implied_max}")
        halves = len(self.block_sizes) - len(tuple(k for k in self.block_sizes if k != HALF))
        if not 0 <= self.confirm <= halves:
            raise ReconciliationInputError(
                f"confirm must lie between 0 and the number of bipartition passes ({halves}), got {self.confirm}")

    @classmethod
    def original(cls, qber: float) -> CascadeSchedule:
        """Brassard–Salvail: k1 = ⌈0.73/Q⌉, doubling, 4 passes."""
        k1 = math.ceil(0.73 / max(qber, 1e-5))
        return cls((k1, 2 * k1, 4 * k1, 8 * k1), "original")

    @classmethod
    def tuned(cls, qber: float, passes: int = 14) -> CascadeSchedule:
        """Martinez-Mateo et al. "Cascade opt. (8)": α = log2(1/Q) − 0.5, k1 = 2^⌈α⌉,
        k2 = 2^⌈(α+12)/2⌉, k3 = 4096, then n/2 (random bipartitions) up to ``passes`` passes."""
        alpha = math.log2(1.0 / max(qber, 1e-5)) - 0.5
        ks = [2 ** math.ceil(alpha), 2 ** math.ceil((alpha + 12.0) / 2.0), 4096]
        ks += [HALF] * max(0, passes - 3)
        return cls(tuple(ks[:passes]), "tuned")

    @classmethod
    def for_frame(cls, qber: float, n: int, confirm: int = FRAME_CONFIRM,
                  extra_halves: int = FRAME_EXTRA_HALVES) -> CascadeSchedule:
        """The default: block sizes chosen per frame length n (bits) and QBER.

        Starts from Martinez-Mateo et al. opt. (8) (arXiv:1407.3257, eq. (8)): α = log2(1/Q) − ½,
        k1 = 2^⌈α⌉, k2 = 2^⌈(α+12)/2⌉, then, measured with this implementation (``labqfl bench
        cascade-grid``; docs/reconciliation.md):

        * k1 halved when the frame would have fewer than 128 first-pass blocks (10^4 bits at
          1 %: 64 instead of 128);
        * a third affine pass only for n ≥ 2^19 (:data:`THIRD_PASS_MIN_BITS`): on 10^4–10^5-bit
          frames its parities cost more than it saves; on long frames it clears the residual
          errors in a few hundred to a few thousand round trips, where the bipartitions alone
          would need 2–9× more.  Its blocks are 8192 bits (16384 from Q = 7 % on, where k2 is
          also doubled) rather than opt. (8)'s 4096: on 10^6 bits with searches of passes ≥ 2
          waiting for lower passes (:data:`DEFER_FROM_PASS`), f 1.038 → 1.035 at 2 %,
          1.047 → 1.045 at 6 %, 1.053 → 1.049 at 8 % (docs/reconciliation.md);
        * then random bipartitions until ``confirm`` in a row find nothing (see the class
          docstring), at most ``confirm`` + :data:`FRAME_EXTRA_HALVES`;
        * below :data:`SHORT_FRAME_BITS` the second pass's searches wait for the first pass's
          (``defer_from`` = 1), k2's exponent is rounded down when within
          :data:`SHORT_FRAME_K2_SLACK` of an integer (1 % and 4 %), implied parities are
          derived at every QBER (elsewhere from :data:`IMPLIED_MIN_QBER` on) and the blocks of a
          bipartition are searched in turn (``halves_in_turn``).
        """
        if n < 1:
            raise ReconciliationInputError(f"frame length n must be >= 1, got {n}")
        alpha = math.log2(1.0 / max(qber, 1e-5)) - 0.5
        k1 = 2 ** math.ceil(alpha)
        if k1 > 1 and k1 > n // 128:
            k1 //= 2
        e2 = (alpha + 12.0) / 2.0
        if n < SHORT_FRAME_BITS:
            e2 -= SHORT_FRAME_K2_SLACK
        ks = [k1, max(2 ** math.ceil(e2), 2 * k1)]
        if n >= THIRD_PASS_MIN_BITS:
            if qber >= HIGH_QBER:
                ks[1] *= 2
                ks.append(THIRD_PASS_BITS_HIGH_QBER)
            else:
                ks.append(THIRD_PASS_BITS)
        ks += [HALF] * (confirm + extra_halves)
        implied = qber >= IMPLIED_MIN_QBER or n < SHORT_FRAME_BITS
        return cls(tuple(ks), "frame", confirm, IMPLIED_MAX if implied else 0,
                   1 if n < SHORT_FRAME_BITS else DEFER_FROM_PASS, halves_in_turn=n < SHORT_FRAME_BITS)

    @classmethod
    def for_link(cls, qber: float, n: int, confirm: int = FRAME_CONFIRM,
                 extra_halves: int = FRAME_EXTRA_HALVES) -> CascadeSchedule:
        """The pair protocol's schedule (:mod:`labqfl.qkd.twoparty`, in process and between nodes):
        :meth:`for_frame` with the second pass's blocks halved (at least twice the first pass's) on
        frames of at least :data:`THIRD_PASS_MIN_BITS` bits.

        Between nodes a round trip, not a parity, is what Cascade costs: ≈ 3 ms each on the node
        transport with the six pairs' ends on two cores (docs/nodes.md), against ≈ 0.1 ms of both ends'
        compute. The second pass's cascade of searches back into the first pass is what makes the
        rounds: its blocks hold ≈ 5 errors at 0.5 %, and a flip there opens a first-pass block
        whose search flips another, one round trip or two per link of the chain. Halved blocks
        hold half as many, the chains die sooner: on a 2.2·10^6-bit block (three 2^20-bit frames,
        4 seeds each, ``docs/reconciliation.md``) 267 → 135 round trips at 0.5 %, 589 → 294 at 1 %,
        641 → 303 at 2 %, 1 709 → 697 at 4 %, for f +0.004 … +0.007 (1.033 → 1.040 at 0.5 %).
        At the default station's QBER (0.5–0.7 %) the error correction leaks ≈ 0.05 bit per sifted
        bit, so that f costs ≈ 0.1 % of the final key. Bob's choice alone (the schedule travels in
        ``cascade/init``); :meth:`for_frame` stays the schedule of ``reconcile_cascade`` and the
        benchmarks, which measure f."""
        s = cls.for_frame(qber, n, confirm, extra_halves)
        if n < THIRD_PASS_MIN_BITS:
            return dataclasses.replace(s, name="link")
        ks = list(s.block_sizes)
        ks[1] = max(ks[1] // 2, 2 * ks[0])
        return dataclasses.replace(s, block_sizes=tuple(ks), name="link")


# ----------------------------------------------------------------------------------- passes
@dataclass
class _Passes:
    """Pass descriptors shared by Alice and Bob (derived from n, seed, schedule)."""

    n: int
    kind: np.ndarray  # int64 [P]: 0 affine, 1 bipartition
    k: np.ndarray  # int64 [P]: block size (affine)
    a: np.ndarray  # int64 [P]
    c: np.ndarray  # int64 [P]
    ainv: np.ndarray  # int64 [P]
    nb: np.ndarray  # int64 [P]: number of blocks
    masks: np.ndarray  # uint64 [P, W]: bipartition membership (bit set -> block 1)
    cum: np.ndarray  # int64 [P, W+1]: ones in words < w
    top_off: np.ndarray  # int64 [P+1]: offsets of each pass's block parities in a flat array
    seed: int = 0
    built: np.ndarray = field(default_factory=lambda: np.zeros(0, bool))  # bool [P]: masks drawn

    @property
    def npasses(self) -> int:
        return int(self.kind.size)

    def ensure(self, q: int) -> None:
        """Draw bipartition pass q's membership bits (lazily: a confirmation pass that is never
        started costs no time; rows of ``masks``/``cum`` stay untouched zero pages until then)."""
        if self.built[q]:
            return
        if self.kind[q] == 1:
            key = int(bipartition_keys(np.array([self.seed], np.uint64), np.array([q]))[0])
            _fill_bipartition(self.masks[q], self.cum[q], np.uint64(key), self.n)
        self.built[q] = True

    def block_size(self, q: int, b: int) -> int:
        if self.kind[q] == 1:
            ones = int(self.cum[q, -1])
            return ones if b == 1 else self.n - ones
        k = int(self.k[q])
        return min(k, self.n - b * k)

    def block_sizes(self, q: int, blocks: np.ndarray | None = None) -> np.ndarray:
        """Sizes of ``blocks`` (default: all blocks) of pass q, int64."""
        b = np.arange(int(self.nb[q]), dtype=np.int64) if blocks is None else blocks.astype(np.int64)
        if self.kind[q] == 1:
            ones = int(self.cum[q, -1])
            return np.where(b == 1, ones, self.n - ones).astype(np.int64)
        k = int(self.k[q])
        return np.minimum(k, self.n - b * k).astype(np.int64)


_SS_INIT_A, _SS_MULT_A = np.uint32(0x43B0D7E5), np.uint32(0x931E8875)
_SS_INIT_B, _SS_MULT_B = np.uint32(0x8B51F9DD), np.uint32(0x58F38DED)
_SS_MIX_L, _SS_MIX_R = np.uint32(0xCA01F9DD), np.uint32(0x4973F715)
_PCG_MULT = 0x2360ED051FC65DA44385DF649FCCF645
_M128 = (1 << 128) - 1


def bipartition_keys(seeds: np.ndarray, passes: np.ndarray) -> np.ndarray:
    """Bipartition pass q's key of the frame with seed s, for every pair (s, q) of ``seeds`` and
    ``passes`` (1-D, equal length): the same 63-bit numbers as
    ``np.random.default_rng([s, q]).integers(0, 1 << 63)``, computed for all of them at once.

    That call costs ≈ 20 µs (a SeedSequence, a PCG64 and a Generator per pass), ≈ 4.5 ms for
    8 frames × 28 passes on each side, in the serial part of a frame-parallel run.  Here:
    NumPy's SeedSequence (O'Neill's seed_seq hash; numpy/random/bit_generator.pyx: entropy
    [seed, q] as little-endian 32-bit words, a pool of 4, ``mix_entropy``, ``generate_state(4,
    uint64)``) vectorised over the passes in uint32 arithmetic, then PCG64 (XSL-RR 128/64, O'Neill
    2014; ``pcg_setseq_128_srandom_r`` and one step) in Python integers; ``integers(0, 2^63)`` is
    Lemire's method with range 2^63, which for a 64-bit draw r returns r >> 1.  Tested equal to
    NumPy's call on random seeds and passes."""
    sd = [int(v) for v in np.asarray(seeds).ravel().tolist()]
    q = np.asarray(passes, np.int64).ravel()
    if len(sd) != q.size:
        raise ValueError(f"bipartition_keys: {len(sd)} seeds for {q.size} passes")
    m = q.size
    if m == 0:
        return np.zeros(0, np.uint64)
    if min(sd) < 0 or max(sd) >= 1 << 64 or q.min() < 0 or q.max() >= 1 << 32:
        raise ValueError("bipartition_keys: seeds must lie in [0, 2^64) and passes in [0, 2^32)")
    # the entropy words: a seed below 2^32 is one word, then q (NumPy's _coerce_to_uint32_array)
    sdv = np.array(sd, dtype=np.uint64)
    two = sdv >> np.uint64(32) != 0
    ent = np.zeros((3, m), np.uint32)
    ent[0] = (sdv & np.uint64(0xFFFFFFFF)).astype(np.uint32)
    ent[1] = np.where(two, (sdv >> np.uint64(32)).astype(np.uint32), q.astype(np.uint32))
    ent[2] = np.where(two, q.astype(np.uint32), 0)  # a missing word hashes as 0, as NumPy pads
    with np.errstate(over="ignore"):
        hc = [_SS_INIT_A]

        def hashmix(v: np.ndarray) -> np.ndarray:
            v = np.bitwise_xor(v, hc[0], dtype=np.uint32)
            hc[0] = np.uint32(hc[0] * _SS_MULT_A)
            v = np.multiply(v, hc[0], dtype=np.uint32)
            return np.bitwise_xor(v, v >> np.uint32(16), dtype=np.uint32)

        pool = [hashmix(ent[t] if t < 3 else np.zeros(m, np.uint32)) for t in range(4)]
        for src in range(4):
            for dst in range(4):
                if src != dst:
                    r = np.subtract(np.multiply(_SS_MIX_L, pool[dst], dtype=np.uint32),
                                    np.multiply(_SS_MIX_R, hashmix(pool[src]), dtype=np.uint32), dtype=np.uint32)
                    pool[dst] = np.bitwise_xor(r, r >> np.uint32(16), dtype=np.uint32)
        hb = _SS_INIT_B
        state = []
        for t in range(8):
            v = np.bitwise_xor(pool[t % 4], hb, dtype=np.uint32)
            hb = np.uint32(hb * _SS_MULT_B)
            v = np.multiply(v, hb, dtype=np.uint32)
            state.append(np.bitwise_xor(v, v >> np.uint32(16), dtype=np.uint32).astype(np.uint64))
    s64 = [(state[2 * t] | (state[2 * t + 1] << np.uint64(32))).tolist() for t in range(4)]
    out = []
    for hi0, lo0, hi1, lo1 in zip(*s64, strict=True):
        inc = (((hi1 << 64) | lo1) << 1 | 1) & _M128
        st = ((inc + ((hi0 << 64) | lo0)) * _PCG_MULT + inc) & _M128  # state 0 stepped (= inc), += initstate, step
        st = (st * _PCG_MULT + inc) & _M128  # the first draw steps, then outputs
        rot = st >> 122
        x = ((st >> 64) ^ st) & 0xFFFFFFFFFFFFFFFF
        out.append((((x >> rot) | (x << (64 - rot))) & 0xFFFFFFFFFFFFFFFF) >> 1)
    return np.array(out, dtype=np.uint64)


@numba.njit(**_NO_REFCOUNT)
def _fill_bipartition(words: np.ndarray, cum: np.ndarray, key: np.uint64, n: int) -> None:
    """Membership bits of a bipartition pass: word w = SplitMix64(key + w·γ) (Steele, Lea & Flood,
    "Fast splittable pseudorandom number generators", OOPSLA 2014), bits ≥ n cleared; ``cum``:
    running count of ones (cum[w] = ones in words < w)."""
    gamma = np.uint64(0x9E3779B97F4A7C15)
    acc = 0
    W = words.size
    for w in range(W):
        z = key + np.uint64(w + 1) * gamma
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z = z ^ (z >> np.uint64(31))
        if w == W - 1 and n % 64:
            z &= (np.uint64(1) << np.uint64(n % 64)) - np.uint64(1)
        words[w] = z
        cum[w] = acc
        acc += _popcount(z)
    cum[W] = acc


SPREAD_CANDIDATES = 8
"""Multipliers :func:`_build_passes` draws for every affine pass after the first; it keeps the one
that best separates the bits of each earlier affine pass's blocks (:func:`_co_block_rate`)."""

SPREAD_MAX_FRAME_BITS = 1 << 19
"""Frames from this length on keep the first multiplier drawn: there the choice changed f by at most
0.0005 (10^6 bits, 3 frames per QBER) and the CPU time of single frames by −16 … +4 %
(10^6 bits at 2 %, 4 frames, load ≈ 10), so long frames keep the landed passes."""

SPREAD_MAX_BLOCK = 1 << 16
"""Earlier affine passes with larger blocks are not scored (the score costs one step per bit of a
block; such passes leave no short-range pairs worth separating)."""


def _co_block_rate(n: int, a_r: int, k_r: int, ainv_q: int, k_q: int) -> float:
    """Expected fraction of the pairs of bits sharing a block of affine pass r (multiplier a_r,
    block size k_r) that also share a block of affine pass q (inverse multiplier ainv_q, k_q).

    Two bits d positions apart in pass r are a_r·d apart in the key, hence δ = a_r·a_q⁻¹·d (mod n)
    apart in pass q; blocks of k_q consecutive positions hold both with probability
    max(0, 1 − |δ|/k_q) (|δ| the distance mod n), and a block of pass r has k_r − d such pairs.
    The positions λ·d mod n (d = 1 … k_r − 1) are the points of a rank-1 lattice with multiplier
    λ = a_r·a_q⁻¹: most λ spread them evenly (rate ≈ (k_r·k_q/n − 1)/(k_r − 1), the least any
    layout allows once k_r·k_q > n), a few λ — small multiples or near-fractions of n — bunch them
    and make two errors of one first-pass block share a second-pass block far more often (the
    "good lattice points" of Korobov, Niederreiter 1992, *Random Number Generation and Quasi-Monte
    Carlo Methods*, ch. 5, are such well-spread multipliers).  A pair of errors in one block of both
    passes survives both and costs Cascade 2–3× the parities of an isolated error
    (docs/reconciliation.md)."""
    d = np.arange(1, k_r, dtype=np.int64)
    delta = ((a_r * ainv_q) % n * d) % n
    delta = np.minimum(delta, n - delta)
    w = (k_r - d).astype(np.float64)
    return float((w * np.clip(1.0 - delta / k_q, 0.0, None)).sum() / w.sum())


def _spread_multiplier(n: int, q: int, seed: int, kq: int, a: np.ndarray, k: np.ndarray, kind: np.ndarray,
                       first: int) -> int:
    """Multiplier of affine pass q: the first of :data:`SPREAD_CANDIDATES` units mod n (``first``,
    then draws from the public seed's stream (seed, q, 1)) with the lowest largest
    :func:`_co_block_rate` against the earlier affine passes (blocks ≤ :data:`SPREAD_MAX_BLOCK`);
    ``first`` itself on frames of :data:`SPREAD_MAX_FRAME_BITS` bits or more.
    Both parties derive it from the public seed; it only decorrelates errors better."""
    earlier = [r for r in range(q) if kind[r] == 0 and 1 < k[r] <= SPREAD_MAX_BLOCK]
    if not earlier or n < 4 or n >= SPREAD_MAX_FRAME_BITS:
        return first
    rng = np.random.default_rng([int(seed), q, 1])
    best, best_rate = first, math.inf
    for t in range(SPREAD_CANDIDATES):
        aa = first
        if t:
            aa = int(rng.integers(1, n))
            while math.gcd(aa, n) != 1:
                aa = int(rng.integers(1, n))
        ai = pow(aa, -1, n)
        rate = max(_co_block_rate(n, int(a[r]), int(k[r]), ai, kq) for r in earlier)
        if rate < best_rate:
            best, best_rate = aa, rate
    return best


def _build_passes(n: int, seed: int, block_sizes: tuple[int, ...], tables: bool = True) -> _Passes:
    """The passes of one frame; ``tables=False`` leaves out the P × W membership tables (empty),
    for :class:`_FrameSet`, which keeps its own."""
    P = len(block_sizes)
    W = (n + 63) // 64 if tables else 0
    kind = np.zeros(P, np.int64)
    k = np.ones(P, np.int64)
    a = np.zeros(P, np.int64)
    c = np.zeros(P, np.int64)
    ainv = np.zeros(P, np.int64)
    nb = np.ones(P, np.int64)
    masks = np.zeros((P, W), np.uint64)
    cum = np.zeros((P, W + 1), np.int64)
    for q, ks in enumerate(block_sizes):
        if ks == HALF:  # membership bits are drawn by _Passes.ensure when the pass starts
            kind[q] = 1
            nb[q] = 2
        else:
            rng = np.random.default_rng([int(seed), q])
            kk = min(int(ks), n)
            k[q] = kk
            nb[q] = -(-n // kk)
            if n > 1:
                while True:
                    aa = int(rng.integers(1, n))
                    if math.gcd(aa, n) == 1:
                        break
                cc = int(rng.integers(0, n))
                aa = _spread_multiplier(n, q, seed, kk, a, k, kind, aa)
                a[q], c[q], ainv[q] = aa, cc, pow(aa, -1, n)
    top_off = np.zeros(P + 1, np.int64)
    top_off[1:] = np.cumsum(nb)
    return _Passes(n, kind, k, a, c, ainv, nb, masks, cum, top_off, int(seed), kind == 0)


# ----------------------------------------------------------------------------------- kernels
_ALL = np.uint64(0xFFFFFFFFFFFFFFFF)


@numba.njit(inline="always", **_NO_REFCOUNT)
def _fold(v: np.uint64) -> int:
    v ^= v >> np.uint64(32)
    v ^= v >> np.uint64(16)
    v ^= v >> np.uint64(8)
    v ^= v >> np.uint64(4)
    v ^= v >> np.uint64(2)
    v ^= v >> np.uint64(1)
    return np.int64(v & np.uint64(1))  # type: ignore[return-value]


@numba.njit(**_NO_REFCOUNT)
def _select(masks: np.ndarray, cum: np.ndarray, q: int, b: int, r: int) -> int:
    """Key index of the r-th (0-based) member of bipartition block b (increasing index)."""
    W = masks.shape[1]
    lo, hi = 0, W - 1
    while lo < hi:  # smallest w with count(words <= w) > r
        mid = (lo + hi) // 2
        cnt = cum[q, mid + 1] if b == 1 else 64 * (mid + 1) - cum[q, mid + 1]
        if cnt > r:
            hi = mid
        else:
            lo = mid + 1
    w = lo
    before = cum[q, w] if b == 1 else 64 * w - cum[q, w]
    m = masks[q, w] if b == 1 else ~masks[q, w]
    rr = r - before
    for _ in range(rr):
        m &= m - np.uint64(1)
    bit = 0
    while ((m >> np.uint64(bit)) & np.uint64(1)) == np.uint64(0):
        bit += 1
    return w * 64 + bit


@numba.njit(inline="always", **_NO_REFCOUNT)
def _index_of(n: int, kind: np.ndarray, k: np.ndarray, a: np.ndarray, c: np.ndarray,
              masks: np.ndarray, cum: np.ndarray, q: int, b: int, r: int) -> int:
    if kind[q] == 1:
        return _select(masks, cum, q, b, r)
    return (c[q] + a[q] * (b * k[q] + r)) % n


@numba.njit(inline="always", **_NO_REFCOUNT)
def _block_of(n: int, kind: np.ndarray, k: np.ndarray, c: np.ndarray, ainv: np.ndarray,
              masks: np.ndarray, q: int, i: int) -> int:
    if kind[q] == 1:
        return np.int64((masks[q, i >> 6] >> np.uint64(i & 63)) & np.uint64(1))  # type: ignore[return-value]
    d = i - c[q]
    if d < 0:
        d += n
    return ((d * ainv[q]) % n) // k[q]


@numba.njit(inline="always", **_NO_REFCOUNT)
def _span_parity(words: np.ndarray, i0: int, i1: int) -> int:
    """Parity of bits i0..i1-1 of a packed row (bit i = word i>>6, bit i&63), i0 < i1."""
    w0 = i0 >> 6
    w1 = (i1 - 1) >> 6
    acc = np.uint64(0)
    for w in range(w0, w1 + 1):
        acc ^= words[w]
    acc ^= words[w0] & ((np.uint64(1) << np.uint64(i0 & 63)) - np.uint64(1))
    rem = i1 - (w1 << 6)
    if rem < 64:
        acc ^= words[w1] & (_ALL << np.uint64(rem))
    return _fold(acc)


@numba.njit(inline="always", **_NO_REFCOUNT)
def _range_parity(zp: np.ndarray, packed: np.ndarray, n: int, kind: np.ndarray, k: np.ndarray,
                  masks: np.ndarray, cum: np.ndarray, q: int, b: int, lo: int, hi: int) -> int:
    """Parity of members lo..hi-1 (ranks within block b of pass q).

    ``zp[q]``: the key packed in pass-q order (affine passes); ``packed``: the key packed in
    natural order (bipartition passes, combined with the membership mask).
    """
    if hi <= lo:
        return 0
    if kind[q] == 0:
        base = b * k[q]
        return _span_parity(zp[q], base + lo, base + hi)
    i0 = _select(masks, cum, q, b, lo)
    i1 = _select(masks, cum, q, b, hi - 1) + 1
    w0 = i0 >> 6
    w1 = (i1 - 1) >> 6
    acc64 = np.uint64(0)
    for w in range(w0, w1 + 1):
        m = masks[q, w] if b == 1 else ~masks[q, w]
        v = packed[w] & m
        if w == w0:
            v &= _ALL << np.uint64(i0 & 63)
        if w == w1:
            rem = i1 - (w1 << 6)
            if rem < 64:
                v &= (np.uint64(1) << np.uint64(rem)) - np.uint64(1)
        acc64 ^= v
    return _fold(acc64)


@numba.njit(**_NO_REFCOUNT)
def _top_parities(zp: np.ndarray, packed: np.ndarray, n: int, kind: np.ndarray, k: np.ndarray,
                  masks: np.ndarray, q: int, nb: int, out: np.ndarray, o: int) -> None:
    """Parities of the first nb blocks of pass q → ``out[o:o + nb]``."""
    if kind[q] == 1:
        acc1 = np.uint64(0)
        acc0 = np.uint64(0)
        for w in range(packed.size):
            acc1 ^= packed[w] & masks[q, w]
            acc0 ^= packed[w] & ~masks[q, w]
        out[o] = _fold(acc0)  # bits beyond n are zero in ``packed``
        if nb > 1:
            out[o + 1] = _fold(acc1)
        return
    kk = k[q]
    for blk in range(nb):
        out[o + blk] = _span_parity(zp[q], blk * kk, min(n, (blk + 1) * kk))


_GOLD = np.uint64(0x9E3779B97F4A7C15)


@numba.njit(inline="always", **_NO_REFCOUNT)
def _slot(key: int, logcap: int) -> int:
    return np.int64((np.uint64(key) * _GOLD) >> np.uint64(64 - logcap))  # type: ignore[return-value]


@numba.njit(**_NO_REFCOUNT)
def _h_get(keys: np.ndarray, vals: np.ndarray, logcap: int, key: int) -> int:
    mask = keys.size - 1
    i = _slot(key, logcap)
    while True:
        kk = keys[i]
        if kk == key:
            return vals[i]
        if kk == -1:
            return -1
        i = (i + 1) & mask


@numba.njit(**_NO_REFCOUNT)
def _h_put(keys: np.ndarray, vals: np.ndarray, logcap: int, key: int, val: int) -> None:
    mask = keys.size - 1
    i = _slot(key, logcap)
    while keys[i] != -1 and keys[i] != key:
        i = (i + 1) & mask
    keys[i] = key
    vals[i] = val


@numba.njit(**_NO_REFCOUNT)
def _h_rehash(keys: np.ndarray, vals: np.ndarray, nkeys: np.ndarray, nvals: np.ndarray, logcap: int) -> None:
    for i in range(keys.size):
        if keys[i] != -1:
            _h_put(nkeys, nvals, logcap, keys[i], vals[i])


@numba.njit(inline="always", **_NO_REFCOUNT)
def _cache_get(cbits: np.ndarray, coff: np.ndarray, cwpb: np.ndarray, kind: np.ndarray, keys: np.ndarray,
               vals: np.ndarray, logcap: int, q: int, b: int, node: int) -> int:
    """Alice's parity of heap node ``node`` of block b of pass q if Bob has it, else −1.  Affine
    passes keep a bitmap per block (``cwpb[q]`` words of known flags, then as many of values, at
    ``coff[q]`` + b·2·cwpb[q]): a search's nodes share a few cache lines; bipartitions use the
    hash table."""
    if kind[q] == 1:
        return _h_get(keys, vals, logcap, _node_key(q, b, node))
    base = coff[q] + 2 * b * cwpb[q] + (node >> 6)
    m = np.uint64(1) << np.uint64(node & 63)
    if cbits[base] & m:
        return 1 if cbits[base + cwpb[q]] & m else 0
    return -1


@numba.njit(inline="always", **_NO_REFCOUNT)
def _cache_put(cbits: np.ndarray, coff: np.ndarray, cwpb: np.ndarray, kind: np.ndarray, keys: np.ndarray,
               vals: np.ndarray, logcap: int, q: int, b: int, node: int, val: int) -> None:
    """Store Alice's parity of a heap node (see :func:`_cache_get`)."""
    if kind[q] == 1:
        _h_put(keys, vals, logcap, _node_key(q, b, node), val)
        return
    base = coff[q] + 2 * b * cwpb[q] + (node >> 6)
    m = np.uint64(1) << np.uint64(node & 63)
    cbits[base] |= m
    if val:
        cbits[base + cwpb[q]] |= m


@numba.njit(inline="always", **_NO_REFCOUNT)
def _node_key(q: int, b: int, h: int) -> int:
    return (q << 56) | (b << 28) | h


@numba.njit(inline="always", **_NO_REFCOUNT)
def _popcount(v: np.uint64) -> int:
    v = v - ((v >> np.uint64(1)) & np.uint64(0x5555555555555555))
    v = (v & np.uint64(0x3333333333333333)) + ((v >> np.uint64(2)) & np.uint64(0x3333333333333333))
    v = (v + (v >> np.uint64(4))) & np.uint64(0x0F0F0F0F0F0F0F0F)
    return np.int64((v * np.uint64(0x0101010101010101)) >> np.uint64(56))  # type: ignore[return-value]


@numba.njit(inline="always", **_NO_REFCOUNT)
def _rank_of(n: int, kind: np.ndarray, k: np.ndarray, c: np.ndarray, ainv: np.ndarray,
             masks: np.ndarray, cum: np.ndarray, q: int, b: int, i: int) -> int:
    """Rank of key index i within its block b of pass q (inverse of :func:`_index_of`)."""
    if kind[q] == 1:
        w = i >> 6
        before = cum[q, w] if b == 1 else 64 * w - cum[q, w]
        m = masks[q, w] if b == 1 else ~masks[q, w]
        return before + _popcount(m & ((np.uint64(1) << np.uint64(i & 63)) - np.uint64(1)))
    d = i - c[q]
    if d < 0:
        d += n
    return (d * ainv[q]) % n - b * k[q]


@numba.njit(inline="always", **_NO_REFCOUNT)
def _kget(kn: np.ndarray, kx: np.ndarray, i: int) -> int:
    """Alice's bit i if Bob knows it (0/1), else −1."""
    m = np.uint64(1) << np.uint64(i & 63)
    if kn[i >> 6] & m:
        return 1 if kx[i >> 6] & m else 0
    return -1


@numba.njit(inline="always", **_NO_REFCOUNT)
def _kset(kn: np.ndarray, kx: np.ndarray, i: int, v: int) -> None:
    m = np.uint64(1) << np.uint64(i & 63)
    kn[i >> 6] |= m
    if v:
        kx[i >> 6] |= m
    else:
        kx[i >> 6] &= ~m


@numba.njit(inline="always", **_NO_REFCOUNT)
def _bit(words: np.ndarray, i: int) -> int:
    """Bit i of a packed row (bit i = word i >> 6, bit i & 63)."""
    return np.int64((words[i >> 6] >> np.uint64(i & 63)) & np.uint64(1))  # type: ignore[return-value]


@numba.njit(**_NO_REFCOUNT)
def _known_parity(n: int, kind: np.ndarray, k: np.ndarray, a: np.ndarray, c: np.ndarray,
                  masks: np.ndarray, cum: np.ndarray, q: int, b: int, lo: int, hi: int,
                  kn: np.ndarray, kx: np.ndarray) -> int:
    """Alice's parity of ranks lo..hi-1 of block b of pass q from known bit values, or −1."""
    acc = 0
    for r in range(lo, hi):
        v = _kget(kn, kx, _index_of(n, kind, k, a, c, masks, cum, q, b, r))
        if v < 0:
            return -1
        acc ^= v
    return acc


@numba.njit(**_NO_REFCOUNT)
def _implied_left(n: int, kind: np.ndarray, k: np.ndarray, a: np.ndarray, c: np.ndarray,
                  masks: np.ndarray, cum: np.ndarray, q: int, b: int, lo: int, mid: int, hi: int,
                  pl: int, ypk: np.ndarray, kn: np.ndarray, kx: np.ndarray, imax: int) -> int:
    """Alice's parity of the left half [lo, mid) when it follows from known bit values, else −1.

    Either every bit of the left half is known (its parity is their XOR), or every bit of the
    right half [mid, hi) is: then A(left) = A(range) ⊕ A(right), and A(range) = B(range) ⊕ 1
    because a search's range is odd (Bob's parity ``pl`` of the left half plus his right-half bits
    give B(range)).  Only halves of at most ``imax`` bits are examined.
    """
    if mid - lo <= imax:
        v = _known_parity(n, kind, k, a, c, masks, cum, q, b, lo, mid, kn, kx)
        if v >= 0:
            return v
    if hi - mid <= imax:
        v = _known_parity(n, kind, k, a, c, masks, cum, q, b, mid, hi, kn, kx)
        if v >= 0:
            br = 0
            for r in range(mid, hi):
                br ^= _bit(ypk, _index_of(n, kind, k, a, c, masks, cum, q, b, r))
            return pl ^ br ^ 1 ^ v
    return -1


@numba.njit(**_NO_REFCOUNT)
def _learn(n: int, kind: np.ndarray, k: np.ndarray, a: np.ndarray, c: np.ndarray,
           masks: np.ndarray, cum: np.ndarray, q: int, b: int, lo: int, mid: int, hi: int,
           al: int, pl: int, ypk: np.ndarray, kn: np.ndarray, kx: np.ndarray) -> None:
    """Record Alice's bit for a one-bit half once Alice's parity ``al`` of the left half is known:
    a one-bit left half is that bit; a one-bit right half is A(range) ⊕ al = B(range) ⊕ 1 ⊕ al."""
    if mid - lo == 1:
        _kset(kn, kx, _index_of(n, kind, k, a, c, masks, cum, q, b, lo), al)
    if hi - mid == 1:
        i = _index_of(n, kind, k, a, c, masks, cum, q, b, mid)
        _kset(kn, kx, i, pl ^ _bit(ypk, i) ^ 1 ^ al)


@numba.njit(inline="always", **_NO_REFCOUNT)
def _push(fb: int, onstk: np.ndarray, work: np.ndarray, sp: int) -> int:
    """Put search ``fb`` on the work stack unless it is already there; returns the new stack size."""
    if not onstk[fb]:
        onstk[fb] = 1
        work[sp] = fb
        sp += 1
    return sp


@numba.njit(inline="always", **_NO_REFCOUNT)
def _restart(fb: int, st: np.ndarray, slo: np.ndarray, shi: np.ndarray, sh: np.ndarray, bsize: np.ndarray) -> None:
    """(Re)start the binary search of top block ``fb`` at its root (whole block, heap index 1)."""
    st[fb] = 1
    slo[fb] = 0
    shi[fb] = bsize[fb]
    sh[fb] = 1


@numba.njit(inline="always", **_NO_REFCOUNT)
def _next_level_unknown(zp: np.ndarray, ypk: np.ndarray, n: int, kind: np.ndarray, k: np.ndarray, a: np.ndarray,
                        c: np.ndarray, masks: np.ndarray, cum: np.ndarray, q: int, b: int, lo: int, hi: int,
                        kn: np.ndarray, kx: np.ndarray, imax: int) -> bool:
    """Whether a search that lands on a child h of its node (ranks [lo, hi) of block b of pass q, with
    an odd number of errors) would have to ask Alice the parity of its left half: the range has
    two bits or more and that parity is not implied by bits Bob knows.  Bob asks for it in the same
    round as the level above (:func:`_cascade_round`, two-level rounds).  It is never cached: the
    search asks about h's parent because that parity was neither cached nor implied, and implied
    parities stay implied (known bits are never forgotten), so no search has ever stood on h or
    asked about its halves."""
    if hi - lo < 2:
        return False
    mid = lo + (hi - lo) // 2
    if imax > 0 and (mid - lo <= imax or hi - mid <= imax):
        pl = _range_parity(zp, ypk, n, kind, k, masks, cum, q, b, lo, mid)
        if _implied_left(n, kind, k, a, c, masks, cum, q, b, lo, mid, hi, pl, ypk, kn, kx, imax) >= 0:
            return False
    return True


@numba.njit(**_NO_REFCOUNT)
def _cascade_round(init: np.ndarray, nprev: int, qidx: np.ndarray, answers: np.ndarray,
                   ypk: np.ndarray, zp: np.ndarray, started: int, n: int, kind: np.ndarray,
                   k: np.ndarray, a: np.ndarray, c: np.ndarray, ainv: np.ndarray,
                   masks: np.ndarray, cum: np.ndarray, top_off: np.ndarray, fpass: np.ndarray,
                   bsize: np.ndarray, alice_top: np.ndarray, bob_top: np.ndarray, st: np.ndarray,
                   slo: np.ndarray, shi: np.ndarray, sh: np.ndarray, work: np.ndarray,
                   waitl: np.ndarray, onstk: np.ndarray, inwait: np.ndarray,
                   found: np.ndarray, fval: np.ndarray, hkeys: np.ndarray, hvals: np.ndarray, logcap: int, out_q: np.ndarray,
                   out_b: np.ndarray, out_lo: np.ndarray, out_hi: np.ndarray,
                   deferred: np.ndarray, counters: np.ndarray, flipped: np.ndarray,
                   kn: np.ndarray, kx: np.ndarray, indef: np.ndarray, imax: int, cbits: np.ndarray,
                   coff: np.ndarray, cwpb: np.ndarray, defer: int, sfl: np.ndarray, two_level: int) -> int:
    """One round of Bob's side of Cascade: all BINARY searches of all started passes advance.

    A search lives on a block (flat index fb = top_off[pass] + block); ``st[fb]``: 0 none,
    1 active, 2 asked, 3 waiting for a parity from Alice (or parked: its pass is deferred and a
    lower pass has a search waiting), 4 stale (a block of an affine pass from ``defer``
    (:attr:`CascadeSchedule.defer_from`) on whose parity a flip changed: it restarts from its root only when no
    lower pass has a search waiting; ``deferred``/``indef`` list the parked and stale ones; with
    :data:`IN_TURN` set in ``defer``, the second block of a bipartition is stale in the same way and
    restarts only when no search of its own pass or a lower one waits).  Invariant: Alice's and Bob's parities of the
    search's range [slo, shi) (ranks within the block) differ.  Steps: (1) start searches on
    ``init`` blocks; (2) store Alice's ``answers`` to last round's queries (blocks ``qidx``; one
    or two parities each, as the search's flags ``sfl`` asked) and descend one or two levels; (3) descend every active search through sub-blocks of known parity; a search
    reaching one bit has found an error — after all descents the found bits are flipped (unless a
    concurrent search already fixed that bit); each flip toggles the parity of the bit's block in
    every started pass: a search whose range holds the bit restarts at its block's root (or stops
    if the block became even), an odd block without a search gets one; repeat until every search
    waits for Alice.  (4) Emit one query (pass, block, lo, hi) per waiting search, with flags
    ``sfl[fb]``: bit 0 Bob's parity of [lo, mid), bits 1/2 the next level in the left/right half
    if ``two_level`` and it is not implied (:func:`_next_level_unknown`); return how many.
    ``counters[0]`` accumulates the number of flipped bits.

    ``flipped`` (packed, one bit per key index) marks the bits flipped so far.  With Alice's true
    parities every bit a search reaches is an error (the search keeps the invariant above), so a
    flip corrects it and no honest run flips a bit twice; a second flip of the same bit proves
    that some parity of Alice's contradicts the others (tampered or desynchronised).  The kernel
    then stops and returns −1 with the bit in ``counters[2]`` — without this check such a bit is
    flipped back and forth between two passes forever.  It also bounds the work: at most n flips,
    and between flips every search only descends.
    """
    turn = defer & IN_TURN
    defer &= IN_TURN - 1
    sp = 0
    nw = 0
    nd = 0  # deferred[:nd]: parked (st 3) and stale (st 4) searches of deferrable passes
    for t in range(counters[1]):
        fb = deferred[t]
        if st[fb] == 4:  # stale: keep it parked until its pass is the lowest with work
            deferred[nd] = fb
            nd += 1
            continue
        indef[fb] = 0
        if st[fb] != 3:
            continue  # restarted (then already on the stack) or ended by a flip
        if imax > 0 and shi[fb] - slo[fb] <= 2 * imax + 1:
            st[fb] = 1  # small range: descend again, its half may be implied by now
            sp = _push(fb, onstk, work, sp)
        elif not inwait[fb]:  # still waiting for the same parity: no need to descend again
            inwait[fb] = 1
            waitl[nw] = fb
            nw += 1
    for t in range(init.size):
        fb = init[t]
        if turn and kind[fpass[fb]] == 1 and fb - top_off[fpass[fb]] == 1:
            st[fb] = 4  # in turn: the second block waits until its first block's search is over
            if not indef[fb]:
                indef[fb] = 1
                deferred[nd] = fb
                nd += 1
            continue
        _restart(fb, st, slo, shi, sh, bsize)
        sp = _push(fb, onstk, work, sp)
    pos = 0
    for t in range(nprev):
        fb = qidx[t]
        q = fpass[fb]
        b = fb - top_off[q]
        fl = sfl[fb]
        for lvl in range(2):  # Alice's parity of the left half, then (if asked) of the next level's
            lo = slo[fb]
            hi = shi[fb]
            mid = lo + (hi - lo) // 2
            if lvl == 0:
                pl = fl & 1  # Bob's parity of [lo, mid), sent with the query (his bits have not changed since)
            else:
                pl = _range_parity(zp, ypk, n, kind, k, masks, cum, q, b, lo, mid)
            ans = answers[pos]
            pos += 1
            _cache_put(cbits, coff, cwpb, kind, hkeys, hvals, logcap, q, b, 2 * sh[fb], ans)
            if imax > 0 and hi - lo <= 3:
                _learn(n, kind, k, a, c, masks, cum, q, b, lo, mid, hi, ans, pl, ypk, kn, kx)
            if pl != ans:
                shi[fb] = mid
                sh[fb] = 2 * sh[fb]
                if not fl & 2:
                    break
            else:
                slo[fb] = mid
                sh[fb] = 2 * sh[fb] + 1
                if not fl & 4:
                    break
            fl = 0  # at most two levels
        st[fb] = 1
        sp = _push(fb, onstk, work, sp)
    while True:
        nf = 0
        while sp > 0:
            sp -= 1
            fb = work[sp]
            onstk[fb] = 0
            if st[fb] != 1:
                continue
            q = fpass[fb]
            b = fb - top_off[q]
            while True:
                lo = slo[fb]
                hi = shi[fb]
                if hi - lo == 1:
                    i = _index_of(n, kind, k, a, c, masks, cum, q, b, lo)
                    found[nf] = i
                    fval[nf] = 1 - _bit(ypk, i)  # Alice's bit
                    nf += 1
                    st[fb] = 0
                    break
                mid = lo + (hi - lo) // 2
                known = _cache_get(cbits, coff, cwpb, kind, hkeys, hvals, logcap, q, b, 2 * sh[fb])
                pl = -1
                if known < 0 and (mid - lo <= imax or hi - mid <= imax):
                    pl = _range_parity(zp, ypk, n, kind, k, masks, cum, q, b, lo, mid)
                    known = _implied_left(n, kind, k, a, c, masks, cum, q, b, lo, mid, hi, pl, ypk, kn, kx, imax)
                if known < 0:
                    st[fb] = 3
                    if not inwait[fb]:
                        inwait[fb] = 1
                        waitl[nw] = fb
                        nw += 1
                    break
                if pl < 0:
                    pl = _range_parity(zp, ypk, n, kind, k, masks, cum, q, b, lo, mid)
                if imax > 0 and hi - lo <= 3:
                    _learn(n, kind, k, a, c, masks, cum, q, b, lo, mid, hi, known, pl, ypk, kn, kx)
                if pl != known:
                    shi[fb] = mid
                    sh[fb] = 2 * sh[fb]
                else:
                    slo[fb] = mid
                    sh[fb] = 2 * sh[fb] + 1
        if nf == 0:
            # take up the stale searches of the lowest deferrable pass once no lower pass waits
            pstale = fpass.size
            for t in range(nd):
                if st[deferred[t]] == 4 and fpass[deferred[t]] < pstale:
                    pstale = fpass[deferred[t]]
            if pstale == fpass.size:
                break
            pwait = fpass.size
            for t in range(nw):
                if st[waitl[t]] == 3 and fpass[waitl[t]] < pwait:
                    pwait = fpass[waitl[t]]
            if pstale > pwait or (turn and kind[pstale] == 1 and pstale == pwait):
                break
            keep = 0
            for t in range(nd):
                fb = deferred[t]
                if st[fb] == 4 and fpass[fb] == pstale:
                    indef[fb] = 0
                    _restart(fb, st, slo, shi, sh, bsize)
                    sp = _push(fb, onstk, work, sp)
                else:
                    deferred[keep] = fb
                    keep += 1
            nd = keep
            continue
        for t in range(nf):
            i = found[t]
            if _bit(ypk, i) == fval[t]:
                continue  # already fixed by a concurrent search in another pass
            fbit = np.uint64(1) << np.uint64(i & 63)
            if flipped[i >> 6] & fbit:
                counters[2] = i
                return -1
            flipped[i >> 6] |= fbit
            ypk[i >> 6] ^= np.uint64(1) << np.uint64(i & 63)
            counters[0] += 1
            for r in range(started):
                if kind[r] == 0:
                    d = i - c[r]
                    if d < 0:
                        d += n
                    pos = (d * ainv[r]) % n
                    zp[r, pos >> 6] ^= np.uint64(1) << np.uint64(pos & 63)
                b = _block_of(n, kind, k, c, ainv, masks, r, i)
                fb = top_off[r] + b
                bob_top[fb] ^= 1
                odd = alice_top[fb] != bob_top[fb]
                if (kind[r] == 0 and r >= defer) or (turn and kind[r] == 1 and b == 1):
                    # deferred affine pass, or the second block of a bipartition searched in turn:
                    # (re)start lazily, when no lower pass (nor, in turn, the first block) has work
                    if st[fb] == 4 or st[fb] == 0 or slo[fb] <= _rank_of(n, kind, k, c, ainv, masks, cum,
                                                                         r, b, i) < shi[fb]:
                        if not odd:
                            st[fb] = 0
                        else:
                            st[fb] = 4
                            if not indef[fb]:
                                indef[fb] = 1
                                deferred[nd] = fb
                                nd += 1
                elif st[fb] != 0:
                    rank = _rank_of(n, kind, k, c, ainv, masks, cum, r, b, i)
                    if slo[fb] <= rank < shi[fb]:
                        if not odd:
                            st[fb] = 0
                        else:
                            _restart(fb, st, slo, shi, sh, bsize)
                            sp = _push(fb, onstk, work, sp)
                elif odd:
                    _restart(fb, st, slo, shi, sh, bsize)
                    sp = _push(fb, onstk, work, sp)
    first = fpass.size
    for t in range(nw):
        fb = waitl[t]
        if st[fb] == 3 and fpass[fb] < first:
            first = fpass[fb]
    nq = 0
    for t in range(nw):
        fb = waitl[t]
        inwait[fb] = 0
        if st[fb] != 3:
            continue
        if fpass[fb] != first and (kind[fpass[fb]] == 1 or fpass[fb] >= defer):
            # parked: a flip found in a lower pass may restart or end it for free
            if not indef[fb]:
                indef[fb] = 1
                deferred[nd] = fb
                nd += 1
            continue
        st[fb] = 2  # asked
        q = fpass[fb]
        b = fb - top_off[q]
        lo = slo[fb]
        hi = shi[fb]
        mid = lo + (hi - lo) // 2
        fl = _range_parity(zp, ypk, n, kind, k, masks, cum, q, b, lo, mid)
        if two_level:
            if _next_level_unknown(zp, ypk, n, kind, k, a, c, masks, cum, q, b, lo, mid, kn, kx, imax):
                fl |= 2
            if _next_level_unknown(zp, ypk, n, kind, k, a, c, masks, cum, q, b, mid, hi, kn, kx, imax):
                fl |= 4
        sfl[fb] = fl
        out_q[nq] = q
        out_b[nq] = b
        out_lo[nq] = lo
        out_hi[nq] = hi
        qidx[nq] = fb
        nq += 1
    counters[1] = nd
    return nq


@numba.njit(**_NO_REFCOUNT)
def _materialize_packed(packed: np.ndarray, n: int, c: int, row: np.ndarray, ai_s: np.ndarray) -> None:
    """row ← the key in affine pass order, packed: bit j of row = key bit (c + a·j) mod n.
    ``ai_s[s]`` = a⁻¹·s mod n for s ≤ 64 (:attr:`_FrameSet.ai_s`).  The key's set bits are
    scattered: key bit p goes to position a⁻¹·(p − c) mod n, which for p = 64·w + s is the word's
    start position (advanced by a⁻¹·64 mod n from word to word) plus a⁻¹·s, a sum of two residues
    reduced by one subtraction, and only the ones (half the bits) are visited, by their trailing
    zeros.  On the 2-core AMD EPYC (Zen 3, AVX2) this takes 0.84–0.90 ms per 10^6 bits against
    1.26–1.39 for gathering each row word's 64 bits (vectorised into AVX2 gathers), which on a
    Zen 4 with AVX-512 gathers took 0.63 ms (docs/reconciliation.md, issue 23 item 2)."""
    W = row.size
    for u in range(W):
        row[u] = np.uint64(0)
    one = np.uint64(1)
    jw = (ai_s[1] * ((n - c % n) % n)) % n  # position of key bit 0 (products < 2^54: n ≤ 2^27)
    last = W - 1
    tail = (one << np.uint64(n & 63)) - one if n & 63 else ~np.uint64(0)  # bits ≥ n hold no key bit
    for w in range(W):
        v = packed[w] & tail if w == last else packed[w]
        while v != 0:
            j = jw + ai_s[trailing_zeros(v)]  # type: ignore[call-arg]  # a Numba intrinsic
            j = j - n if j >= n else j
            row[j >> 6] |= one << np.uint64(j & 63)
            v &= v - one
        jw += ai_s[64]
        if jw >= n:
            jw -= n


@numba.njit(**_NO_REFCOUNT)
def _last_certain(kind_row: np.ndarray, done: int, clean: int, confirm: int) -> int:
    """Last pass that certainly runs once pass ``done`` (−1: none yet) has ended with ``clean``
    clean bipartitions in a row: a frame stops after pass p only when ``confirm`` bipartitions in a
    row found nothing (or p is the last pass), so every pass up to the first one whose run of clean
    bipartitions *could* reach ``confirm`` runs whatever the passes find.  Bob asks for the block
    parities of all of them at once (:func:`_bob_step`): the disclosed parities are those of a run
    that asks for each pass when it starts."""
    last = done
    mc = clean
    for p in range(done + 1, kind_row.size):
        if confirm > 0 and mc >= confirm:
            break
        last = p
        mc = mc + 1 if kind_row[p] == 1 else 0
    return last


@numba.njit(**_NO_REFCOUNT)
def _tell_frame_pass(f: int, p: int, told: np.ndarray, bo: np.ndarray, top_off: np.ndarray,
                     alice_top: np.ndarray) -> None:
    """Store Alice's block parities ``told`` of pass p of frame f (all but the last from p = 1 on:
    that one is the frame parity, known from pass 0, plus the others)."""
    g = bo[f]
    o0, o1 = top_off[f, p], top_off[f, p + 1]
    par = 0
    for b in range(told.size):
        alice_top[g + o0 + b] = told[b]
        par ^= told[b]
    if p > 0:  # Alice's frame parity (the XOR of pass 0's block parities) fixes the last block
        for b in range(top_off[f, 1]):
            par ^= alice_top[g + b]
        alice_top[g + o1 - 1] = par


@numba.njit(**_NO_REFCOUNT)
def _open_frame_pass(f: int, p: int, ns: np.ndarray, wo: np.ndarray, bo: np.ndarray,
                     kind: np.ndarray, k: np.ndarray, c: np.ndarray, ai_s: np.ndarray, nb: np.ndarray,
                     top_off: np.ndarray, masks: np.ndarray, cum: np.ndarray, bkeys: np.ndarray, built: np.ndarray,
                     ypk: np.ndarray, zp: np.ndarray, bsize: np.ndarray, alice_top: np.ndarray, bob_top: np.ndarray,
                     init: np.ndarray, clean: np.ndarray) -> int:
    """Bob opens pass p of frame f (Alice's block parities already stored, :func:`_tell_frame_pass`):
    draws the bipartition or lays out his bits in pass order, computes his block parities, and
    writes the frame-local indices of the odd blocks to ``init[bo[f]:]``; returns how many there
    are."""
    P = kind.shape[1]
    n = ns[f]
    W = wo[f + 1] - wo[f]
    g = bo[f]
    o0 = top_off[f, p]
    mk = masks[P * wo[f]:P * wo[f + 1]].reshape((P, W))
    cm = cum[P * (wo[f] + f):P * (wo[f + 1] + f + 1)].reshape((P, W + 1))
    if kind[f, p] == 1 and not built[f, p]:
        _fill_bipartition(mk[p], cm[p], bkeys[f, p], n)
    built[f, p] = True
    for b in range(nb[f, p]):
        if kind[f, p] == 1:
            bsize[g + o0 + b] = cm[p, W] if b == 1 else n - cm[p, W]
        else:
            bsize[g + o0 + b] = min(k[f, p], n - b * k[f, p])
    zf = zp[P * wo[f]:P * wo[f + 1]].reshape((P, W))
    yf = ypk[wo[f]:wo[f + 1]]
    if kind[f, p] == 0:
        _materialize_packed(yf, n, c[f, p], zf[p], ai_s[f, p])
    _top_parities(zf, yf, n, kind[f], k[f], mk, p, nb[f, p], bob_top, g + o0)
    nodd = 0
    for b in range(nb[f, p]):
        if bob_top[g + o0 + b] != alice_top[g + o0 + b]:
            init[g + nodd] = o0 + b
            nodd += 1
    clean[f] = clean[f] + 1 if (kind[f, p] == 1 and nodd == 0) else 0
    return nodd


@numba.njit(**_NO_REFCOUNT)
def _bob_frame(f: int, disclosed: np.ndarray, nq: np.ndarray, cur: np.ndarray, clean: np.ndarray,
               passes_run: np.ndarray, ns: np.ndarray, wo: np.ndarray, bo: np.ndarray,
               kind: np.ndarray, k: np.ndarray, a: np.ndarray, c: np.ndarray, ainv: np.ndarray, nb: np.ndarray,
               top_off: np.ndarray, masks: np.ndarray, cum: np.ndarray, bkeys: np.ndarray, built: np.ndarray,
               ypk: np.ndarray, zp: np.ndarray, fpass: np.ndarray, bsize: np.ndarray, alice_top: np.ndarray,
               bob_top: np.ndarray, st: np.ndarray, slo: np.ndarray, shi: np.ndarray, sh: np.ndarray,
               work: np.ndarray, waitl: np.ndarray, onstk: np.ndarray, inwait: np.ndarray, found: np.ndarray,
               fval: np.ndarray, qidx: np.ndarray, hkeys: np.ndarray, hvals: np.ndarray, ho: np.ndarray,
               logcap: np.ndarray, hcount: np.ndarray, out_q: np.ndarray, out_b: np.ndarray, out_lo: np.ndarray,
               out_hi: np.ndarray, deferred: np.ndarray, counters: np.ndarray, flipped: np.ndarray,
               known_n: np.ndarray, known_x: np.ndarray, indef: np.ndarray, init: np.ndarray, imax: int,
               confirm: int, cbits: np.ndarray, co: np.ndarray, coff: np.ndarray, cwpb: np.ndarray, defer: int,
               sfl: np.ndarray, got: np.ndarray, waiting: np.ndarray, two_level: int, qpos: np.ndarray,
               nhash: np.ndarray, ai_s: np.ndarray) -> int:
    """Frame f's part of :func:`_bob_step`: its answers, then :func:`_cascade_round`, opening each
    next pass whose block parities are at hand, until it has queries, waits for block parities or
    is done.  Touches only frame f's slices.  Returns 0, or −1 on inconsistent parities."""
    P = kind.shape[1]
    nprev = nq[f]
    if nprev == 0 and not waiting[f]:
        return 0  # finished
    W = wo[f + 1] - wo[f]
    b0, b1 = bo[f], bo[f + 1]
    hcount[f] += nhash[f]
    while True:
        ninit = 0
        if waiting[f]:
            if not got[f, cur[f]]:
                break
            ninit = _open_frame_pass(f, cur[f], ns, wo, bo, kind, k, c, ai_s, nb, top_off, masks, cum, bkeys,
                                     built, ypk, zp, bsize, alice_top, bob_top, init, clean)
            waiting[f] = 0
        r = _cascade_round(
            init[b0:b0 + ninit], nprev, qidx[b0:b1], disclosed[qpos[f]:qpos[f + 1]],
            ypk[wo[f]:wo[f + 1]], zp[P * wo[f]:P * wo[f + 1]].reshape((P, W)), cur[f] + 1, ns[f], kind[f], k[f],
            a[f], c[f], ainv[f], masks[P * wo[f]:P * wo[f + 1]].reshape((P, W)),
            cum[P * (wo[f] + f):P * (wo[f + 1] + f + 1)].reshape((P, W + 1)), top_off[f], fpass[b0:b1],
            bsize[b0:b1], alice_top[b0:b1], bob_top[b0:b1], st[b0:b1], slo[b0:b1], shi[b0:b1], sh[b0:b1],
            work[b0:b1], waitl[b0:b1], onstk[b0:b1], inwait[b0:b1], found[b0:b1], fval[b0:b1],
            hkeys[ho[f]:ho[f + 1]], hvals[ho[f]:ho[f + 1]], logcap[f], out_q[b0:b1], out_b[b0:b1],
            out_lo[b0:b1], out_hi[b0:b1], deferred[b0:b1], counters[f], flipped[wo[f]:wo[f + 1]],
            known_n[wo[f]:wo[f + 1]], known_x[wo[f]:wo[f + 1]], indef[b0:b1], imax, cbits[co[f]:co[f + 1]],
            coff[f], cwpb[f], defer, sfl[b0:b1], two_level)
        nprev = 0
        if r < 0:
            return -1
        nq[f] = r
        if r > 0:
            break
        passes_run[f] = cur[f] + 1
        if cur[f] + 1 < P and not (confirm > 0 and clean[f] >= confirm):
            cur[f] += 1
            waiting[f] = 1
        else:
            break
    return 0


@numba.njit(**_NO_REFCOUNT)
def _bob_step(disclosed: np.ndarray, opened: np.ndarray, nq: np.ndarray, cur: np.ndarray, clean: np.ndarray,
              passes_run: np.ndarray, needgrow: np.ndarray, ns: np.ndarray, wo: np.ndarray,
              bo: np.ndarray, kind: np.ndarray, k: np.ndarray, a: np.ndarray, c: np.ndarray, ainv: np.ndarray,
              nb: np.ndarray, top_off: np.ndarray, masks: np.ndarray, cum: np.ndarray, bkeys: np.ndarray,
              built: np.ndarray, ypk: np.ndarray, zp: np.ndarray, fpass: np.ndarray,
              bsize: np.ndarray, alice_top: np.ndarray, bob_top: np.ndarray, st: np.ndarray, slo: np.ndarray,
              shi: np.ndarray, sh: np.ndarray, work: np.ndarray, waitl: np.ndarray, onstk: np.ndarray,
              inwait: np.ndarray, found: np.ndarray, fval: np.ndarray, qidx: np.ndarray, hkeys: np.ndarray,
              hvals: np.ndarray, ho: np.ndarray, logcap: np.ndarray, hcount: np.ndarray, out_q: np.ndarray,
              out_b: np.ndarray, out_lo: np.ndarray, out_hi: np.ndarray, deferred: np.ndarray,
              counters: np.ndarray, flipped: np.ndarray, known_n: np.ndarray, known_x: np.ndarray,
              indef: np.ndarray, init: np.ndarray, imax: int, confirm: int, obuf: np.ndarray, qbuf: np.ndarray,
              res: np.ndarray, cbits: np.ndarray, co: np.ndarray, coff: np.ndarray, cwpb: np.ndarray,
              defer: int, sfl: np.ndarray, got: np.ndarray, waiting: np.ndarray, req: np.ndarray,
              two_level: int, qpos: np.ndarray, nhash: np.ndarray, ai_s: np.ndarray, ferr: np.ndarray,
              parallel: int) -> int:
    """Bob's whole round over K frames, given Alice's reply ``disclosed`` to his last
    ``cascade/round``: Alice's block parities of the passes listed in ``opened`` (frame·128 + pass)
    are stored (``got``), every frame with queries last round (``nq[f]`` of them) takes its answers
    (one or two parities per query, :func:`_alice_round`), and every such frame runs
    :func:`_cascade_round`.  A frame whose pass has nothing left to ask opens its next pass at once
    — its block parities were asked for ahead (:func:`_last_certain`) — and runs it in the same
    call, until a pass has queries, the last pass is done or ``confirm`` bipartitions in a row found
    nothing (:class:`CascadeSchedule`); ``waiting[f]``: pass ``cur[f]`` is to be opened.  Writes the
    next request — the passes whose block parities each frame asks for now (frame·128 + pass; all
    passes up to the last that certainly runs, ``req[f]``: passes asked so far) into ``obuf``, the
    queries into ``qbuf`` (frame·128 + pass, block, lo, hi, flags, :func:`_alice_round`) frame by
    frame — and their counts into ``res[0]``, ``res[1]``; ``res[3]``: block parities in
    ``disclosed``.

    Returns 0; −3 if ``disclosed`` has the wrong length (nothing changed); −2 if a frame's parity
    cache must grow first (``needgrow``; nothing changed); −1 on inconsistent parities (frame in
    ``res[2]``, its key bit in ``counters[f, 2]``; ``ferr``: scratch, one entry per frame).  Frames
    are independent: each runs the protocol a one-frame run runs, in :func:`_bob_frame`, which
    touches only its frame's slices — with ``parallel`` (the :func:`_parallel_copy`,
    ``_bob_step_parallel``) and more than one frame with work, on Numba's threads.
    """
    K = ns.size
    ntop = 0
    for t in range(opened.size):
        p = opened[t] & 127
        ntop += nb[opened[t] >> 7, p] - (1 if p > 0 else 0)
    if ntop > disclosed.size:
        return -3
    pos = ntop  # qpos[:K + 1]: frame f's answers are disclosed[qpos[f]:qpos[f + 1]]; nhash[:K]: answers
    for f in range(K):  # that go to a hash table (bipartition passes)
        qpos[f] = pos
        nhash[f] = 0
        for t in range(nq[f]):
            fb = qidx[bo[f] + t]
            fl = sfl[bo[f] + fb]
            if pos >= disclosed.size:
                return -3
            left = disclosed[pos] != (fl & 1)
            m = 1 + (1 if (left and fl & 2) or (not left and fl & 4) else 0)
            pos += m
            nhash[f] += m * kind[f, fpass[bo[f] + fb]]
        if hcount[f] + nhash[f] > (1 << logcap[f]) // 2:
            needgrow[f] = 1
    qpos[K] = pos
    if pos != disclosed.size:
        return -3
    for f in range(K):
        if needgrow[f]:
            return -2
    pos = 0
    for t in range(opened.size):
        f = opened[t] >> 7
        p = opened[t] & 127
        m = nb[f, p] - (1 if p > 0 else 0)
        _tell_frame_pass(f, p, disclosed[pos:pos + m], bo, top_off, alice_top)
        got[f, p] = True
        pos += m
    res[3] = ntop
    args = (disclosed, nq, cur, clean, passes_run, ns, wo, bo, kind, k, a, c, ainv, nb, top_off, masks, cum,
            bkeys, built, ypk, zp, fpass, bsize, alice_top, bob_top, st, slo, shi, sh, work, waitl, onstk, inwait,
            found, fval, qidx, hkeys, hvals, ho, logcap, hcount, out_q, out_b, out_lo, out_hi, deferred, counters,
            flipped, known_n, known_x, indef, init, imax, confirm, cbits, co, coff, cwpb, defer, sfl, got, waiting,
            two_level, qpos, nhash, ai_s)
    active = 0
    for f in range(K):
        active += nq[f] > 0 or waiting[f]
    if parallel and active > 1:
        for f in prange(K):  # frames are independent: numba.get_num_threads() of them at a time
            ferr[f] = _bob_frame(f, *args)
    else:
        for f in range(K):
            ferr[f] = _bob_frame(f, *args)
    for f in range(K):
        if ferr[f] < 0:
            res[2] = f
            return -1
    nopen = 0
    nqt = 0
    for f in range(K):
        b0 = bo[f]
        if nq[f] > 0 or waiting[f]:
            last = _last_certain(kind[f], cur[f] - waiting[f], clean[f], confirm)
            for p in range(req[f], last + 1):
                obuf[nopen] = f * 128 + p
                nopen += 1
            req[f] = max(req[f], last + 1)
        for j in range(nq[f]):
            s = b0 + j
            qbuf[5 * nqt] = f * 128 + out_q[s]
            qbuf[5 * nqt + 1] = out_b[s]
            qbuf[5 * nqt + 2] = out_lo[s]
            qbuf[5 * nqt + 3] = out_hi[s]
            qbuf[5 * nqt + 4] = sfl[b0 + qidx[s]]
            nqt += 1
    res[0] = nopen
    res[1] = nqt
    return 0


@numba.njit(**_NO_REFCOUNT)
def _alice_open(f: int, p: int, ns: np.ndarray, wo: np.ndarray, kind: np.ndarray, k: np.ndarray, c: np.ndarray,
                ai_s: np.ndarray, nb: np.ndarray, masks: np.ndarray, cum: np.ndarray, bkeys: np.ndarray,
                built: np.ndarray, ready: np.ndarray, zp: np.ndarray, xpk: np.ndarray, out: np.ndarray,
                pos: int) -> None:
    """Alice opens pass p of frame f (draws the bipartition or lays out her bits in pass order, once)
    and writes its block parities (all but the last from p = 1 on) to ``out[pos:]``."""
    P = kind.shape[1]
    n = ns[f]
    W = wo[f + 1] - wo[f]
    mk = masks[P * wo[f]:P * wo[f + 1]].reshape((P, W))
    zf = zp[P * wo[f]:P * wo[f + 1]].reshape((P, W))
    xf = xpk[wo[f]:wo[f + 1]]
    if kind[f, p] == 1 and not built[f, p]:
        _fill_bipartition(mk[p], cum[P * (wo[f] + f):P * (wo[f + 1] + f + 1)].reshape((P, W + 1))[p],
                          bkeys[f, p], n)
    built[f, p] = True
    if kind[f, p] == 0 and not ready[f, p]:
        _materialize_packed(xf, n, c[f, p], zf[p], ai_s[f, p])
    ready[f, p] = True
    _top_parities(zf, xf, n, kind[f], k[f], mk, p, nb[f, p] - (1 if p > 0 else 0), out, pos)


@numba.njit(inline="always", **_NO_REFCOUNT)
def _alice_query(queries: np.ndarray, j: int, f: int, n: int, kind: np.ndarray, k: np.ndarray, nb: np.ndarray,
                 ready: np.ndarray, cm: np.ndarray, zf: np.ndarray, mk: np.ndarray, xf: np.ndarray, out: np.ndarray,
                 pos: int, limit: int) -> int:
    """Alice's one or two parities for query j of frame f < K (:func:`_alice_round`; the frame's
    length n and its views: running counts ``cm``, rows ``zf``, masks ``mk``, packed key ``xf``),
    written to ``out[pos:]`` (below ``limit``); returns how many, or the error code."""
    P = kind.shape[1]
    q = int(np.int64(queries[5 * j])) & 127  # signed: lo, hi and mid mix with int64 (uint64 would give floats)
    b = int(np.int64(queries[5 * j + 1]))
    lo = int(np.int64(queries[5 * j + 2]))
    hi = int(np.int64(queries[5 * j + 3]))
    fl = int(np.int64(queries[5 * j + 4]))
    if q >= P or not ready[f, q]:
        return -3
    if b >= nb[f, q]:
        return -4
    if kind[f, q] == 1:
        size = cm[q, cm.shape[1] - 1] if b == 1 else n - cm[q, cm.shape[1] - 1]
    else:
        size = min(k[f, q], n - b * k[f, q])
    if hi - lo < 2 or hi > size or fl > 7:
        return -4
    got = 0
    for lvl in range(2):
        mid = lo + (hi - lo) // 2
        if pos + got >= limit:
            return -5
        par = _range_parity(zf, xf, n, kind[f], k[f], mk, cm, q, b, lo, mid)
        out[pos + got] = par
        got += 1
        if lvl == 1:
            break
        if par != (fl & 1):  # the odd half is the left one
            hi = mid
            if not fl & 2:
                break
        else:
            lo = mid
            if not fl & 4:
                break
        if hi - lo < 2:
            return -4
    return got


@numba.njit(**_NO_REFCOUNT)
def _alice_round(opens: np.ndarray, queries: np.ndarray, ns: np.ndarray, wo: np.ndarray, kind: np.ndarray,
                 k: np.ndarray, c: np.ndarray, ai_s: np.ndarray, nb: np.ndarray, masks: np.ndarray, cum: np.ndarray,
                 bkeys: np.ndarray, built: np.ndarray, ready: np.ndarray, zp: np.ndarray, xpk: np.ndarray,
                 out: np.ndarray, opos: np.ndarray, parallel: int) -> int:
    """Alice's answer to one ``cascade/round``: the block parities of every (frame·128 + pass) in
    ``opens`` (all but the last block's from pass 1 on), then one or two parities per query
    (frame·128 + pass, block, lo, hi, flags) in ``queries``, written to ``out``.  A query names a
    search's range, ranks lo..hi−1 (≥ 2) of the block; Alice answers the parity of its left half
    [lo, mid), mid = lo + ⌊(hi − lo)/2⌋.  Flag bit 0 is Bob's own parity of that half, so the half
    holding the odd error count is known to Alice too: left if the parities differ, else right.
    Bit 1 (left) or bit 2 (right) asks, for that half, the parity of *its* left half as well — the
    next bisection level in the same round (the half must hold ≥ 2 bits).
    Returns how many; −1 no such frame or pass, −2 a pass opened before pass 0 of its frame, −3 a
    query into a pass whose block parities were not disclosed, −4 no such block or range (or
    flags), −5 more parities than ``out`` holds.  ``opos``: scratch, one entry per open; ``parallel``:
    open the frames' passes on numba.get_num_threads() threads (many queries of several frames go
    to :func:`_alice_queries_parallel` instead)."""
    K, P = kind.shape
    pos = 0
    for t in range(opens.size):  # check every open and place its parities, before any work
        f = int(opens[t] >> 7)
        p = int(opens[t] & 127)
        if f >= K or p >= P:
            return -1
        if p > 0 and not ready[f, 0]:
            first = False  # pass 0 of the frame opened earlier in this request
            for u in range(t):
                first |= opens[u] == opens[t] - p
            if not first:
                return -2
        m = nb[f, p] - (1 if p > 0 else 0)
        if pos + m > out.size:
            return -5
        opos[t] = pos
        pos += m
    args = (ns, wo, kind, k, c, ai_s, nb, masks, cum, bkeys, built, ready, zp, xpk, out)
    if parallel and opens.size > 1:
        for f in prange(K):  # frames are independent: numba.get_num_threads() of them at a time
            for t in range(opens.size):
                if int(opens[t] >> 7) == f:
                    _alice_open(f, int(opens[t] & 127), *args, opos[t])
    else:
        for t in range(opens.size):
            _alice_open(int(opens[t] >> 7), int(opens[t] & 127), *args, opos[t])
    nq = queries.size // 5
    fv = -1  # the frame whose views (cm, zf, mk, xf) are at hand: queries come frame by frame
    W = wo[1] - wo[0]
    cm = cum[:P * (W + 1)].reshape((P, W + 1))
    zf = zp[:P * W].reshape((P, W))
    mk = masks[:P * W].reshape((P, W))
    xf = xpk[:W]
    for j in range(nq):
        f = int(queries[5 * j] >> 7)
        if f >= K:
            return -3
        if f != fv:
            fv = f
            W = wo[f + 1] - wo[f]
            cm = cum[P * (wo[f] + f):P * (wo[f + 1] + f + 1)].reshape((P, W + 1))
            zf = zp[P * wo[f]:P * wo[f + 1]].reshape((P, W))
            mk = masks[P * wo[f]:P * wo[f + 1]].reshape((P, W))
            xf = xpk[wo[f]:wo[f + 1]]
        got = _alice_query(queries, j, f, ns[f], kind, k, nb, ready, cm, zf, mk, xf, out, pos, out.size)
        if got < 0:
            return got
        pos += got
    return pos


@numba.njit(parallel=True, **_NO_REFCOUNT)
def _alice_queries_parallel(queries: np.ndarray, seg: np.ndarray, ns: np.ndarray, wo: np.ndarray, kind: np.ndarray,
                            k: np.ndarray, nb: np.ndarray, masks: np.ndarray, cum: np.ndarray, ready: np.ndarray,
                            zp: np.ndarray, xpk: np.ndarray, out: np.ndarray, pos: int, qcnt: np.ndarray,
                            qout: np.ndarray) -> int:
    """The queries of :func:`_alice_round` answered frame-parallel: ``seg`` cuts them into runs of
    one frame each (frames strictly increasing, all < K, checked by the caller), answered on
    numba.get_num_threads() threads into ``qout`` (two per query, ``qcnt`` how many or the error
    code), then packed into ``out[pos:]`` in request order — the serial loop's reply, or its first
    error.  Compiled (with ``parallel=True``) only when a run with ``threads`` > 1 first has
    :data:`PARALLEL_QUERIES` queries in a round."""
    P = kind.shape[1]
    nq = queries.size // 5
    for t in prange(seg.size - 1):
        f = int(queries[5 * seg[t]] >> 7)
        W = wo[f + 1] - wo[f]
        cm = cum[P * (wo[f] + f):P * (wo[f + 1] + f + 1)].reshape((P, W + 1))
        zf = zp[P * wo[f]:P * wo[f + 1]].reshape((P, W))
        mk = masks[P * wo[f]:P * wo[f + 1]].reshape((P, W))
        xf = xpk[wo[f]:wo[f + 1]]
        for j in range(seg[t], seg[t + 1]):
            qcnt[j] = _alice_query(queries, j, f, ns[f], kind, k, nb, ready, cm, zf, mk, xf, qout, 2 * j, qout.size)
            if qcnt[j] < 0:
                break
    for j in range(nq):  # in request order: the first error, else the answers packed
        if qcnt[j] < 0:
            return qcnt[j]
        if pos + qcnt[j] > out.size:
            return -5
        for u in range(qcnt[j]):
            out[pos + u] = qout[2 * j + u]
        pos += qcnt[j]
    return pos


def _parallel_copy(kernel: Any) -> Any:
    """``kernel`` compiled again with ``parallel=True`` (its ``prange`` over frames then runs on
    Numba's threads), cached under a name of its own.  Only runs with ``threads`` > 1 use it, so
    only they pay its compilation (cold: ≈ 24 s for both copies, on top of ≈ 23 s for the serial
    kernels; measured on the 2-core development VM)."""
    fn = kernel.py_func
    name = fn.__name__ + "_parallel"
    copy = types.FunctionType(fn.__code__, fn.__globals__, name, fn.__defaults__, fn.__closure__)
    copy.__qualname__ = name
    return numba.njit(parallel=True, **_NO_REFCOUNT)(copy)


_bob_step_parallel = _parallel_copy(_bob_step)
_alice_round_parallel = _parallel_copy(_alice_round)


def _pack(bits: np.ndarray) -> np.ndarray:
    W = (bits.size + 63) // 64
    buf = np.zeros(W * 8, np.uint8)
    pb = np.packbits(bits, bitorder="little")
    buf[:pb.size] = pb
    return buf.view("<u8").astype(np.uint64)


# ----------------------------------------------------------------------------------- frames
def split_frames(n: int, frame_bits: int | None) -> np.ndarray:
    """Lengths (int64) of the frames a key of ``n`` bits is cut into: one frame if ``frame_bits``
    is None or ≥ n, else K = ⌈n / frame_bits⌉ frames as equal as possible (the first n mod K one
    bit longer), in key order."""
    if frame_bits is not None and frame_bits < 1:
        raise ReconciliationInputError(f"frame_bits must be >= 1 bit, got {frame_bits}")
    if frame_bits is None or n <= frame_bits:
        return np.array([n], np.int64)
    K = -(-n // frame_bits)
    m, r = divmod(n, K)
    sizes = np.full(K, m, np.int64)
    sizes[:r] += 1
    return sizes


def frame_seeds(seed: int, frames: int) -> np.ndarray:
    """Public seed of each frame's passes (int64): frame f uses (seed + f) mod 2^63."""
    return ((np.arange(frames, dtype=np.uint64) + np.uint64(seed)) & np.uint64((1 << 63) - 1)).astype(np.int64)


PIPELINE_FRAME_BITS = 1 << 20
"""Frame length the pair protocol (:mod:`labqfl.qkd.twoparty`) reconciles a block in: a block of
n bits becomes ⌈n / 2^20⌉ interleaved frames (:class:`CascadeBob`), each ≥ 2^19 bits once the
block is, so each keeps the third pass of :meth:`CascadeSchedule.for_frame`; f on 10^6-bit frames
equals that on 10^7-bit ones (docs/reconciliation.md), and the round trips are those of one
10^6-bit frame instead of one 10^7-bit frame's."""

MAX_FRAMES = 1 << 24
"""Most frames one run interleaves (a frame and pass share one uint32 in the messages)."""


@dataclass
class _FrameSet:
    """The passes of K frames (same schedule, own length and seed) in flat buffers that the
    kernels slice per frame: offsets of bits ``no``, 64-bit words ``wo`` and top-level blocks
    ``bo`` (each [K+1]); ``masks`` (and a party's key in pass order) holds frame f's P × W rows
    at P·wo[f], ``cum`` its P × (W+1) running counts at P·(wo[f] + f).  Bipartition rows are drawn
    when the pass opens, from ``bkeys`` (``built`` marks them)."""

    ns: np.ndarray
    no: np.ndarray
    wo: np.ndarray
    bo: np.ndarray
    kind: np.ndarray  # int64 [K, P]: 0 affine, 1 bipartition
    k: np.ndarray
    a: np.ndarray
    c: np.ndarray
    ainv: np.ndarray
    nb: np.ndarray
    top_off: np.ndarray  # int64 [K, P+1]
    masks: np.ndarray
    cum: np.ndarray
    bkeys: np.ndarray  # uint64 [K, P]
    built: np.ndarray  # bool [K, P]
    ai_s: np.ndarray  # int64 [K, P, 65]: a⁻¹·s mod n, s ≤ 64 (affine passes, :func:`_materialize_packed`)

    @property
    def frames(self) -> int:
        return int(self.ns.size)

    @property
    def npasses(self) -> int:
        return int(self.kind.shape[1])

    @classmethod
    def build(cls, sizes: np.ndarray, seeds: np.ndarray, block_sizes: tuple[int, ...]) -> _FrameSet:
        per = [_build_passes(int(n), int(s), block_sizes, tables=False) for n, s in zip(sizes, seeds, strict=True)]
        K, P = len(per), len(block_sizes)
        ns = np.asarray(sizes, np.int64)

        def offsets(v: np.ndarray) -> np.ndarray:
            return np.concatenate([[0], np.cumsum(v)]).astype(np.int64)

        wo = offsets((ns + 63) // 64)

        def stack(name: str) -> np.ndarray:
            return np.ascontiguousarray(np.stack([getattr(p, name) for p in per]))

        bkeys = np.zeros((K, P), np.uint64)  # as _Passes.ensure draws them
        fq = np.nonzero(np.stack([p.kind == 1 for p in per]))
        bkeys[fq] = bipartition_keys(np.asarray(seeds)[fq[0]], fq[1])
        return cls(ns, offsets(ns), wo, offsets(np.array([p.top_off[-1] for p in per], np.int64)), stack("kind"),
                   stack("k"), stack("a"), stack("c"), stack("ainv"), stack("nb"), stack("top_off"),
                   np.empty(P * int(wo[-1]), np.uint64), np.empty(P * (int(wo[-1]) + K), np.int64), bkeys,
                   np.zeros((K, P), bool),  # (a bipartition's rows are written whole when it opens)
                   np.ascontiguousarray(stack("ainv")[:, :, None] * np.arange(65, dtype=np.int64) % ns[:, None, None]))


def _schedule_array(schedule: CascadeSchedule) -> np.ndarray:
    return np.asarray(schedule.block_sizes, dtype=np.int64)


PARALLEL_QUERIES = 2048
"""Alice answers a round's queries frame-parallel from this many on (fewer are not worth waking
the threads for)."""

_ALICE_ERRORS = {-1: "names a frame or pass that does not exist",
                 -2: "opens a pass before pass 0 of its frame",
                 -3: "queries a pass whose block parities were not revealed",
                 -4: "names a block or range that does not exist",
                 -5: "asks for more parities than the frames have blocks"}


def _check_threads(threads: int) -> int:
    if isinstance(threads, bool) or not isinstance(threads, int | np.integer) or threads < 1:
        raise ReconciliationInputError(f"threads must be a positive integer, got {threads!r}")
    return int(threads)


@contextlib.contextmanager
def _numba_threads(threads: int) -> Iterator[None]:
    """Numba's thread count for the calling thread set to ``threads`` (at most
    ``NUMBA_NUM_THREADS``) inside the block; nothing is changed for 1 (the kernels then run no
    parallel loop)."""
    if threads <= 1:
        yield
        return
    before = numba.get_num_threads()
    numba.set_num_threads(min(threads, int(numba.config.NUMBA_NUM_THREADS)))  # type: ignore[attr-defined]
    try:
        yield
    finally:
        numba.set_num_threads(before)


# ----------------------------------------------------------------------------------- parties
class CascadeAlice:
    """Alice's side (a :class:`~labqfl.qkd.messaging.Responder`): answers Bob's parity requests.

    Messages: ``cascade/init`` {n, frames (lengths of the K frames, int64; absent: one frame),
    seeds (one per frame; absent: ``seed``), schedule} → ``cascade/ok``; ``cascade/round`` {open:
    uint32 frame·128 + pass for every pass whose block parities Bob asks for; query: uint32
    (frame·128 + pass, block, lo, hi, flags) per bisection step: the search's range, ranks lo..hi−1
    within the block, and flags (bit 0: Bob's parity of its left half; bits 1/2: also the next
    level if the left/right half is the odd one, :func:`_alice_round`)} → every asked block parity
    (from pass 1 on all but the last block's, which follows from the frame's parity) in the order
    asked, then one or two parities per query, all disclosed; the reply is
    ``cascade/block-parities`` when it carries block parities, else ``cascade/parities``.
    ``cascade/done`` → ``cascade/ok`` with Alice's own count of disclosed bits.  A request naming
    a frame, pass, block or range that does not exist, or a pass whose block parities were not
    disclosed yet, raises :class:`~labqfl.qkd.messaging.MessageError`.  ``threads``: how many
    frames' passes she opens at once, and, in a round with at least :data:`PARALLEL_QUERIES`
    queries that come frame by frame, how many frames' queries she answers at once (as
    :class:`CascadeBob`'s; the replies do not depend on it).
    """

    def __init__(self, alice_bits: np.ndarray, *, threads: int = 1) -> None:
        if not isinstance(alice_bits, np.ndarray) or alice_bits.dtype != np.uint8 or alice_bits.ndim != 1:
            raise ReconciliationInputError("alice_bits must be a 1-D uint8 array of 0/1")
        self.threads = _check_threads(threads)
        self._x = np.ascontiguousarray(alice_bits)
        self._F: _FrameSet | None = None
        self._xpk = np.zeros(0, np.uint64)
        self._zp = np.zeros(0, np.uint64)
        self._ready = np.zeros((0, 0), bool)
        self.disclosed_bits = 0
        self.finished = False

    def _init(self, request: Message) -> Message:
        n = int(request.get("n"))
        if n != self._x.size:
            raise MessageError(f"cascade/init: Bob has {n} bits, Alice has {self._x.size}")
        sizes = np.asarray(request.fields.get("frames", np.array([n])), dtype=np.int64)
        seeds = np.asarray(request.get("seeds") if "seeds" in request.fields else [int(request.get("seed"))],
                           dtype=np.int64)
        if (sizes.ndim != 1 or sizes.size != seeds.size or not 0 < sizes.size <= MAX_FRAMES or sizes.min() < 1
                or sizes.max() > MAX_BITS or int(sizes.sum()) != n or seeds.min() < 0):
            raise MessageError(f"cascade/init: {sizes.size} frame lengths summing to {int(sizes.sum())} and "
                               f"{seeds.size} seeds for {n} bits; expected one length in [1, {MAX_BITS}] and one "
                               f"non-negative seed per frame, at most {MAX_FRAMES} frames")
        sched = tuple(int(v) for v in np.asarray(request.get("schedule"), dtype=np.int64))
        CascadeSchedule(sched)  # validates
        self._F = F = _FrameSet.build(sizes, seeds, sched)
        self._xpk = np.zeros(int(F.wo[-1]), np.uint64)
        for f in range(F.frames):
            self._xpk[F.wo[f]:F.wo[f + 1]] = _pack(self._x[F.no[f]:F.no[f + 1]])
        self._zp = np.empty(F.npasses * int(F.wo[-1]), np.uint64)  # an affine pass's row is written whole when it opens
        self._ready = np.zeros((F.frames, F.npasses), bool)
        return Message("cascade/ok")

    def _round(self, F: _FrameSet, request: Message) -> Message:
        opens = np.asarray(request.get("open"), dtype=np.uint32)
        queries = np.asarray(request.get("query"), dtype=np.uint32)
        if opens.ndim != 1 or queries.ndim != 1 or queries.size % 5:
            raise MessageError("cascade/round: open must be 1-D and query a 1-D multiple of 5 entries")
        nq = queries.size // 5
        out = np.empty(int(F.bo[-1]) + 2 * nq, np.uint8)
        # many queries of several frames, frame by frame (as an honest Bob sends them), are answered
        # frame-parallel after the opens (_alice_queries_parallel); seg cuts them into one run per frame
        seg = None
        if self.threads > 1 and nq >= PARALLEL_QUERIES:
            fq = queries[::5] >> 7
            if int(fq[-1]) < F.frames and bool(np.all(fq[1:] >= fq[:-1])):
                seg = np.append(np.flatnonzero(np.r_[True, fq[1:] != fq[:-1]]), nq).astype(np.int64)
                seg = seg if seg.size > 2 else None
        threads = min(self.threads, max(opens.size, 1 if seg is None else seg.size - 1))
        with _numba_threads(threads):
            kernel = _alice_round_parallel if min(self.threads, opens.size) > 1 else _alice_round
            got = kernel(opens, queries if seg is None else queries[:0], F.ns, F.wo, F.kind, F.k, F.c, F.ai_s, F.nb,
                         F.masks, F.cum, F.bkeys, F.built, self._ready, self._zp, self._xpk, out,
                         np.empty(opens.size, np.int64), int(kernel is _alice_round_parallel))
            if got >= 0 and seg is not None:
                got = _alice_queries_parallel(queries, seg, F.ns, F.wo, F.kind, F.k, F.nb, F.masks, F.cum, self._ready,
                                              self._zp, self._xpk, out, got, np.empty(nq, np.int64),
                                              np.empty(2 * nq, np.uint8))
        if got < 0:
            raise MessageError(f"cascade/round: a request {_ALICE_ERRORS[got]}")
        self.disclosed_bits += got
        return Message("cascade/block-parities" if opens.size else "cascade/parities", {}, out[:got])

    def handle(self, request: Message) -> Message:
        kind = request.kind
        if kind == "cascade/init":
            return self._init(request)
        if self._F is None:
            raise MessageError("cascade: request before cascade/init")
        if kind == "cascade/round":
            return self._round(self._F, request)
        if kind == "cascade/done":
            self.finished = True
            return Message("cascade/ok", {"disclosed": self.disclosed_bits})
        raise MessageError(f"cascade: unexpected message {kind!r}")


_BLOCK_ARRAYS = ("bsize", "slo", "shi", "sh", "work", "waitl", "found", "qidx", "deferred",
                 "out_q", "out_b", "out_lo", "out_hi", "init", "sfl")
_BLOCK_FLAGS = ("alice_top", "bob_top", "st", "onstk", "inwait", "fval", "indef")


@dataclass
class _BobWork:
    """Bob's working state for K frames (:meth:`CascadeBob.run`), in flat buffers sliced per frame
    like :class:`_FrameSet`'s: his bits (packed ``ypk``, and in each affine pass's order ``zp``;
    :meth:`corrected` unpacks them), the per-top-level-block arrays of :func:`_cascade_round` (``arr``: block sizes,
    Alice's and Bob's parities, the bisection stack and wait lists, the found bits, the deferred
    queries, the query buffers ``out_*``, the odd blocks ``init`` of an opened pass), the bits Bob
    knows of Alice's, the parity caches (open-addressing hash tables, frame f's of capacity
    2**logcap[f] at ``ho[f]``, holding ``hcount[f]`` entries), and each frame's progress: current
    pass ``cur``, clean bipartitions in a row ``clean``, passes run, queries asked ``nq``."""

    ypk: np.ndarray
    zp: np.ndarray
    fpass: np.ndarray
    arr: dict[str, np.ndarray]
    counters: np.ndarray  # int64 [K, 3]: flipped bits, deferred count, inconsistent bit
    flipped: np.ndarray
    known_n: np.ndarray
    known_x: np.ndarray
    hkeys: np.ndarray
    hvals: np.ndarray
    ho: np.ndarray
    logcap: np.ndarray
    prog: dict[str, np.ndarray]
    cbits: np.ndarray  # uint64: affine passes' parity bitmaps, frame f's at co[f], pass q's at + coff[f, q]
    co: np.ndarray
    coff: np.ndarray
    cwpb: np.ndarray  # int64 [K, P]: words per block and flag kind (known / value)
    got: np.ndarray  # bool [K, P]: Alice's block parities of the pass received
    qpos: np.ndarray  # int64 [K + 1]: scratch of _bob_step (where each frame's answers start)

    @classmethod
    def allocate(cls, bits: np.ndarray, F: _FrameSet) -> _BobWork:
        """Zeroed state for ``bits`` (copied); the hash tables (bipartition parities) start small
        and are grown by :meth:`grow`, the affine passes' bitmaps have a bit pair per heap node."""
        W = int(F.wo[-1])
        ypk = np.zeros(W, np.uint64)
        for f in range(F.frames):
            ypk[F.wo[f]:F.wo[f + 1]] = _pack(bits[F.no[f]:F.no[f + 1]])
        ntop = int(F.bo[-1])
        logcap = np.full(F.frames, 10, np.int64)  # bipartition parities only; grown as needed
        # affine pass q: a block's heap nodes are < 2^(⌈log2 k⌉+1); one known and one value bit each
        depth = np.ceil(np.log2(np.maximum(F.k, 1))).astype(np.int64)
        cwpb = np.where(F.kind == 0, np.maximum(1, (np.int64(2) << depth) // 64), 0).astype(np.int64)
        per_pass = 2 * cwpb * F.nb
        coff = np.concatenate([np.zeros((F.frames, 1), np.int64), np.cumsum(per_pass, axis=1)], axis=1)
        co = np.concatenate([[0], np.cumsum(coff[:, -1])]).astype(np.int64)
        ho = np.concatenate([[0], np.cumsum(np.int64(1) << logcap)]).astype(np.int64)
        arr = {name: np.zeros(ntop, np.int32) for name in _BLOCK_ARRAYS}
        arr.update({name: np.zeros(ntop, np.uint8) for name in _BLOCK_FLAGS})
        fpass = np.concatenate([np.repeat(np.arange(F.npasses, dtype=np.int64), F.nb[f]) for f in range(F.frames)])
        prog = {name: np.zeros(F.frames, np.int64) for name in ("cur", "clean", "passes_run", "nq", "hcount",
                                                                 "needgrow", "waiting", "req", "nhash", "ferr")}
        return cls(ypk=ypk, zp=np.empty(F.npasses * W, np.uint64), fpass=fpass, arr=arr,
                   counters=np.zeros((F.frames, 3), np.int64), flipped=np.zeros(W, np.uint64),
                   known_n=np.zeros(W, np.uint64), known_x=np.zeros(W, np.uint64),
                   hkeys=np.full(int(ho[-1]), -1, np.int64), hvals=np.zeros(int(ho[-1]), np.int8),
                   ho=ho, logcap=logcap, prog=prog, cbits=np.zeros(int(co[-1]), np.uint64), co=co,
                   coff=np.ascontiguousarray(coff[:, :-1]), cwpb=cwpb, got=np.zeros((F.frames, F.npasses), bool),
                   qpos=np.zeros(F.frames + 1, np.int64))

    def corrected(self, F: _FrameSet) -> np.ndarray:
        """Bob's bits now (uint8 0/1, frames concatenated)."""
        out = np.empty(int(F.no[-1]), np.uint8)
        for f in range(F.frames):
            words = self.ypk[F.wo[f]:F.wo[f + 1]].astype("<u8")
            out[F.no[f]:F.no[f + 1]] = np.unpackbits(words.view(np.uint8), bitorder="little")[:int(F.ns[f])]
        return out

    def grow(self, frames: np.ndarray) -> None:
        """Double the parity caches of ``frames`` (rehashed; the other frames' are copied)."""
        logcap = self.logcap.copy()
        logcap[frames] += 1
        ho = np.concatenate([[0], np.cumsum(np.int64(1) << logcap)]).astype(np.int64)
        keys, vals = np.full(int(ho[-1]), -1, np.int64), np.zeros(int(ho[-1]), np.int8)
        for f in range(logcap.size):
            old = slice(int(self.ho[f]), int(self.ho[f + 1]))
            new = slice(int(ho[f]), int(ho[f + 1]))
            if logcap[f] == self.logcap[f]:
                keys[new], vals[new] = self.hkeys[old], self.hvals[old]
            else:
                _h_rehash(self.hkeys[old], self.hvals[old], keys[new], vals[new], int(logcap[f]))
        self.hkeys, self.hvals, self.ho, self.logcap = keys, vals, ho, logcap

    def start(self, F: _FrameSet, confirm: int, obuf: np.ndarray) -> int:
        """Every frame waits to open pass 0; writes the first request — the block parities of every
        pass that certainly runs (:func:`_last_certain`) — into ``obuf``; returns its length."""
        g = self.prog
        g["waiting"][:] = 1
        nopen = 0
        for f in range(F.frames):
            last = int(_last_certain(F.kind[f], -1, 0, confirm))
            obuf[nopen:nopen + last + 1] = f * 128 + np.arange(last + 1, dtype=np.uint32)
            nopen += last + 1
            g["req"][f] = last + 1
        return nopen

    def resume(self, F: _FrameSet, confirm: int, obuf: np.ndarray) -> int:
        """After the run ended: every frame with a pass left waits to open it, its run of clean
        bipartitions restarted (:meth:`CascadeBob.more`); writes the request for the block parities of
        the passes that certainly run now into ``obuf``; returns its length."""
        g = self.prog
        nopen = 0
        for f in range(F.frames):
            p = int(g["passes_run"][f])
            if p >= F.npasses:
                continue
            g["cur"][f], g["waiting"][f], g["clean"][f] = p, 1, 0
            last = int(_last_certain(F.kind[f], p - 1, 0, confirm))
            for q in range(max(int(g["req"][f]), p), last + 1):
                obuf[nopen] = f * 128 + q
                nopen += 1
            g["req"][f] = max(int(g["req"][f]), last + 1)
        return nopen

    def step(self, F: _FrameSet, disclosed: np.ndarray, opened: np.ndarray, imax: int, confirm: int,
             obuf: np.ndarray, qbuf: np.ndarray, res: np.ndarray, defer: int, two_level: bool,
             parallel: bool) -> int:
        """:func:`_bob_step` on this state (the caches grown first where needed)."""
        A, g = self.arr, self.prog
        while True:
            kernel = _bob_step_parallel if parallel else _bob_step
            code = kernel(
                disclosed, opened, g["nq"], g["cur"], g["clean"], g["passes_run"], g["needgrow"], F.ns, F.wo,
                F.bo, F.kind, F.k, F.a, F.c, F.ainv, F.nb, F.top_off, F.masks, F.cum, F.bkeys, F.built,
                self.ypk, self.zp, self.fpass, A["bsize"], A["alice_top"], A["bob_top"], A["st"], A["slo"],
                A["shi"], A["sh"], A["work"], A["waitl"], A["onstk"], A["inwait"], A["found"], A["fval"],
                A["qidx"], self.hkeys, self.hvals, self.ho, self.logcap, g["hcount"], A["out_q"], A["out_b"],
                A["out_lo"], A["out_hi"], A["deferred"], self.counters, self.flipped, self.known_n, self.known_x,
                A["indef"], A["init"], imax, confirm, obuf, qbuf, res, self.cbits, self.co, self.coff, self.cwpb,
                defer, A["sfl"], self.got, g["waiting"], g["req"], int(two_level), self.qpos, g["nhash"], F.ai_s, g["ferr"],
                int(parallel))
            if code != -2:
                return int(code)
            self.grow(np.flatnonzero(g["needgrow"]))
            g["needgrow"][:] = 0


class CascadeBob:
    """Bob's side: runs Cascade over a channel to Alice and corrects his bits.

    ``seed`` (public, sent to Alice) fixes the pass permutations; ``None`` draws one from the OS.
    ``frame_bits``: cut the key into frames of at most this many bits (:func:`split_frames`; None:
    one frame) that are reconciled **interleaved**: each message carries the requests of every
    frame and one kernel call per round serves them all.  Frame f runs exactly the protocol a
    one-frame run with seed (seed + f) mod 2^63 runs on its bits (:func:`frame_seeds`) — the same
    parities asked, the same corrected bits — only its requests share messages with the other
    frames', so K frames take the round trips of their slowest one.  ``schedule`` (default
    :meth:`CascadeSchedule.for_frame` at the shortest frame's length) is the same for every frame.
    ``threads``: how many frames Bob's kernel works on at once (Numba threads, at most
    ``NUMBA_NUM_THREADS``); the same bits, parities and messages for any value.  The default 1
    keeps Cascade on one core, for processes that share the machine with others (a node runs
    beside the acquisition); a frame set alone on a machine can use its cores.
    """

    def __init__(self, bob_bits: np.ndarray, qber: float, *, schedule: CascadeSchedule | None = None,
                 seed: int | None = None, frame_bits: int | None = None, threads: int = 1) -> None:
        if not isinstance(bob_bits, np.ndarray) or bob_bits.dtype != np.uint8 or bob_bits.ndim != 1:
            raise ReconciliationInputError("bob_bits must be a 1-D uint8 array of 0/1")
        self.threads = _check_threads(threads)
        self.frames = split_frames(int(bob_bits.size), frame_bits)
        if int(self.frames.max()) > MAX_BITS or self.frames.size > MAX_FRAMES:
            raise ReconciliationInputError(
                f"Cascade frames hold at most {MAX_BITS} bits and a run at most {MAX_FRAMES} frames, got "
                f"{self.frames.size} frames of up to {int(self.frames.max())} bits (set frame_bits)")
        self.bits = bob_bits
        self.qber = float(qber)
        self.schedule = schedule or CascadeSchedule.for_frame(self.qber, int(self.frames.min()))
        self.seed = secrets.randbits(63) if seed is None else int(seed)
        if self.seed < 0:
            raise ReconciliationInputError(f"seed must be a non-negative integer, got {seed}")
        self._state: tuple[_FrameSet, _BobWork, np.ndarray] | None = None  # after run(): for more()

    def run(self, channel: Channel) -> ReconciliationResult:
        """Run the protocol against Alice behind ``channel``; return Bob's corrected bits.  Raises
        :class:`CascadeInconsistencyError` on parities no honest Alice can send."""
        threads = min(self.threads, int(self.frames.size))
        with _numba_threads(threads):
            return self._run(channel, threads > 1)

    def _run(self, channel: Channel, parallel: bool) -> ReconciliationResult:
        seeds = frame_seeds(self.seed, int(self.frames.size))
        channel.request(Message("cascade/init", {"n": int(self.bits.size), "frames": self.frames, "seeds": seeds,
                                                 "schedule": _schedule_array(self.schedule)}))
        F = _FrameSet.build(self.frames, seeds, self.schedule.block_sizes)
        w = _BobWork.allocate(self.bits, F)
        obuf = np.zeros(F.frames * F.npasses, np.uint32)
        self._state = (F, w, obuf)
        return self._rounds(channel, parallel, w.start(F, self.schedule.confirm, obuf), self.schedule.confirm)

    def more(self, channel: Channel, confirm: int = RETRY_CONFIRM) -> ReconciliationResult:
        """Continue a finished :meth:`run` after its key failed verification (the same Alice, who
        keeps her state; over ``channel``, which may be a new one): every frame with passes of its
        schedule left opens its next pass with its run of clean bipartitions restarted, and stops
        again after ``confirm`` clean ones in a row.  The searches go on with everything the run
        learnt (Alice's sub-block parities, the cascade into the affine passes), so a residual error
        pair costs about what the run would have spent finding it with more confirmations.  Returns
        the result of this continuation alone (``leaked_bits``: what it disclosed on ``channel``;
        ``corrected``: Bob's bits now).  A frame with no pass left is not continued."""
        if self._state is None:
            raise ReconciliationInputError("CascadeBob.more: run() must have finished first")
        if not 1 <= confirm <= 100:
            raise ReconciliationInputError(f"confirm must lie between 1 and 100, got {confirm}")
        F, w, obuf = self._state
        threads = min(self.threads, int(self.frames.size))
        with _numba_threads(threads):
            return self._rounds(channel, threads > 1, w.resume(F, confirm, obuf), confirm)

    def _rounds(self, channel: Channel, parallel: bool, nopen: int, confirm: int) -> ReconciliationResult:
        assert self._state is not None
        F, w, obuf = self._state
        qbuf = np.zeros(5 * int(F.bo[-1]), np.uint32)
        res = np.zeros(4, np.int64)
        nqt = 0
        leaked_top = leaked_bs = rounds = 0
        while nopen or nqt:
            opened = obuf[:nopen].copy()
            rep = channel.request(Message("cascade/round", {"open": opened, "query": qbuf[:5 * nqt].copy()}))
            if rep.kind not in ("cascade/block-parities", "cascade/parities"):
                raise MessageError(f"cascade: bad reply {rep.kind!r} to cascade/round")
            code = w.step(F, rep.disclosed, opened, self.schedule.implied_max, confirm, obuf, qbuf,
                          res, self.schedule.defer_from | (IN_TURN if self.schedule.halves_in_turn else 0),
                          self.schedule.two_level, parallel)
            if code == -3:  # with two-level queries a flipped first-level parity changes the count too
                raise CascadeInconsistencyError(
                    f"cascade: inconsistent parities from Alice (tampered or desynchronised): reply {rep.kind!r} to "
                    f"cascade/round carries {rep.disclosed.size} parities, not the number its block parities and "
                    f"first-level answers call for; reconciliation stopped after {rounds} parity rounds")
            if code == -1:
                f = int(res[2])
                raise CascadeInconsistencyError(
                    f"cascade: inconsistent parities from Alice (tampered or desynchronised): key bit "
                    f"{int(F.no[f] + w.counters[f, 2])} would be flipped a second time in pass "
                    f"{int(w.prog['cur'][f])} (honest parities flip each bit at most once); reconciliation "
                    f"stopped after {rounds} parity rounds")
            leaked_top += int(res[3])
            leaked_bs += rep.disclosed.size - int(res[3])
            rounds += nqt > 0
            nopen, nqt = int(res[0]), int(res[1])
        channel.request(Message("cascade/done"))
        passes_run = int(w.prog["passes_run"].max())
        stats = channel.stats
        return ReconciliationResult(
            corrected=w.corrected(F), leaked_bits=int(stats.leaked_bits), qber=self.qber,
            method=f"cascade-{self.schedule.name}", success=True, frame_errors=0,
            iterations=passes_run, round_trips=stats.round_trips, messages=stats.messages,
            tag_bytes=stats.tag_bytes, corrected_errors=int(w.counters[:, 0].sum()),
            details={"seed": self.seed, "frames": F.frames, "block_sizes": list(self.schedule.block_sizes[:passes_run]),
                     "confirm": confirm, "clean_confirmations": int(w.prog["clean"].min()),
                     "leaked_block_parities": leaked_top, "leaked_binary_search": leaked_bs,
                     "parity_rounds": rounds, "payload_bytes": stats.payload_bytes})


def reconcile_cascade(alice_bits: np.ndarray, bob_bits: np.ndarray, qber: float, *,
                      seed: int | None = None, schedule: CascadeSchedule | str = "frame",
                      channel_authenticator: Any = None, frame_bits: int | None = None,
                      threads: int = 1) -> ReconciliationResult:
    """Correct ``bob_bits`` towards ``alice_bits`` with Cascade (both parties in process).

    ``alice_bits``, ``bob_bits``: 1-D uint8 arrays of 0/1, equal length n.  ``qber``: the
    estimated bit error rate in (0, 0.5), which sets the block sizes.  ``seed``: public seed of
    the pass permutations (None: from the OS).  ``schedule``: ``"frame"`` (default,
    :meth:`CascadeSchedule.for_frame`: block sizes per frame length and QBER, confirmation passes
    bounding the frame error rate near 2^-16), ``"tuned"`` (Martinez-Mateo et al. opt. (8), 14
    passes), ``"original"`` or a :class:`CascadeSchedule`.  ``frame_bits``: reconcile the key as
    interleaved frames of at most this many bits (each ≤ 2^27; :class:`CascadeBob`), ``threads`` of
    them at once on each side (default 1; the result does not depend on it).  Returns a
    :class:`ReconciliationResult`; ``leaked_bits`` counts every parity Alice revealed.
    """
    alice_bits, bob_bits, q = validate_reconciliation_input(alice_bits, bob_bits, qber)
    shortest = int(split_frames(int(alice_bits.size), frame_bits).min())
    if isinstance(schedule, str):
        if schedule == "frame":
            schedule = CascadeSchedule.for_frame(q, shortest)
        elif schedule == "tuned":
            schedule = CascadeSchedule.tuned(q)
        elif schedule == "original":
            schedule = CascadeSchedule.original(q)
        else:
            raise ReconciliationInputError(f"unknown Cascade schedule {schedule!r}; expected 'frame', 'tuned' or 'original'")
    alice = CascadeAlice(alice_bits, threads=threads)
    bob = CascadeBob(bob_bits, q, schedule=schedule, seed=seed, frame_bits=frame_bits, threads=threads)
    return bob.run(LocalChannel(alice, channel_authenticator))


def reconcile_cascade_verified(alice_bits: np.ndarray, bob_bits: np.ndarray, qber: float, *,
                               eps_cor: float = 1e-15, seed: int | None = None, confirm: int | None = None,
                               retry_confirm: int = RETRY_CONFIRM, frame_bits: int | None = None,
                               threads: int = 1) -> ReconciliationResult:
    """Cascade followed by the verification that every key block gets, continued until it passes:
    the in-process form of what the pair protocol runs (:mod:`labqfl.qkd.twoparty`, ``ec/start`` …
    ``verify/request``, then ``ec/more`` and ``verify/request`` again), used by the benchmarks.

    Reconciles with :meth:`CascadeSchedule.for_frame` and ``confirm`` confirmations (None:
    :func:`verified_confirm`, or :data:`FRAME_CONFIRM` where ``eps_cor`` allows no further attempt),
    then verifies with the tag plan of :func:`~labqfl.qkd.verification.verification_tag_plan`: Alice's
    tag under a fresh seed against Bob's.  If they differ, Bob continues his run
    (:meth:`CascadeBob.more`: the schedule's next passes with everything the run learnt, until
    ``retry_confirm`` clean bipartitions in a row) and the pair verifies again with Δ_i fresh tag
    bits (every earlier tag must match too), at most as many times as the plan allows.
    ``leaked_bits`` counts every parity of every run **and the Δ_i bits of each further attempt**; the first attempt's t_0 bits are not in
    it (the key length charges them as log2(2/ε_cor), as for every block).  ``success``: a
    verification passed — if False the key must be discarded.  ``details``: ``attempts`` (1 = the
    first verification passed), ``retry_leak`` (bits disclosed after the first failure),
    ``tag_plan``, ``confirm``, and the first run's details under ``first_run``.
    """
    from labqfl.qkd.toeplitz import toeplitz_seed
    from labqfl.qkd.verification import hash_tag, verification_tag_plan

    alice_bits, bob_bits, q = validate_reconciliation_input(alice_bits, bob_bits, qber)
    n = int(alice_bits.size)
    plan = verification_tag_plan(eps_cor)
    if n < sum(plan):  # a key shorter than the tags: the single check of the pipeline (t = min(t_0, n))
        plan = (min(plan[0], n),)
    shortest = int(split_frames(n, frame_bits).min())
    c, extra = verified_halves(q, shortest, len(plan), retry_confirm)
    if confirm is None:
        confirm = c
    extra = FRAME_EXTRA_HALVES + (len(plan) - 1) * (retry_confirm + RETRY_EXTRA_HALVES) if confirm < FRAME_CONFIRM \
        else extra
    alice = CascadeAlice(alice_bits, threads=threads)
    bob = CascadeBob(bob_bits, q, schedule=CascadeSchedule.for_frame(q, shortest, confirm, extra), seed=seed,
                     frame_bits=frame_bits, threads=threads)
    first = bob.run(LocalChannel(alice))
    y, leak, rounds, tags = first.corrected, first.leaked_bits, first.round_trips, []
    ok = False
    for attempt, t in enumerate(plan):
        if attempt:
            more = bob.more(LocalChannel(alice), retry_confirm)
            y, leak, rounds = more.corrected, leak + more.leaked_bits + t, rounds + more.round_trips
        vseed = toeplitz_seed(n, t)
        tags.append((vseed, t, hash_tag(alice_bits, vseed, t)))
        ok = all(np.array_equal(hash_tag(y, s, k), tag) for s, k, tag in tags)
        if ok:
            break
    return ReconciliationResult(
        corrected=y, leaked_bits=int(leak), qber=q, method=first.method, success=ok,
        frame_errors=0 if ok else 1, iterations=first.iterations, round_trips=rounds + len(tags),
        messages=first.messages, corrected_errors=int(np.count_nonzero(y != bob_bits)),
        details={"attempts": len(tags), "retry_leak": int(leak - first.leaked_bits), "tag_plan": list(plan),
                 "confirm": confirm, "first_run": first.details,
                 "clean_confirmations": first.details["clean_confirmations"],
                 "block_sizes": first.details["block_sizes"]})


# ----------------------------------------------------------------------------------- reference
def cascade_reference(alice_bits: np.ndarray, bob_bits: np.ndarray, qber: float, *, seed: int,
                      schedule: CascadeSchedule | None = None) -> ReconciliationResult:
    """Plain pure-Python Cascade: the slow, obviously-correct reference (and benchmark baseline).

    Same protocol and same pass permutations as :func:`reconcile_cascade`, written with explicit
    Python lists of block members and a dict of known parities, one parity at a time, with direct
    access to Alice's bits (each access to them counted as one leaked bit).  It has no messages,
    hence no round trips: the fast kernels' ways of saving them (block parities asked ahead, two
    bisection levels per round trip) disclose the same parities along the same bisection paths,
    which is what this reference spells out; they change only which searches of different blocks
    share a round.
    """
    alice_bits, bob_bits, q = validate_reconciliation_input(alice_bits, bob_bits, qber)
    schedule = schedule or CascadeSchedule.for_frame(q, int(alice_bits.size))
    n = alice_bits.size
    x = [int(v) for v in alice_bits]
    y = [int(v) for v in bob_bits]
    P = _build_passes(n, seed, schedule.block_sizes)
    # explicit member lists of every block of every pass
    blocks: list[list[list[int]]] = []
    where: list[list[int]] = []  # where[q][i] = block of key index i in pass q
    for qq in range(P.npasses):
        P.ensure(qq)
        if P.kind[qq] == 1:
            bit = [int((int(P.masks[qq, i // 64]) >> (i % 64)) & 1) for i in range(n)]
            members = [[i for i in range(n) if bit[i] == 0], [i for i in range(n) if bit[i] == 1]]
            where.append(bit)
        else:
            k, a, c = int(P.k[qq]), int(P.a[qq]), int(P.c[qq])
            order = [(c + a * j) % n for j in range(n)]
            members = [order[s:s + k] for s in range(0, n, k)]
            w = [0] * n
            for bi, mem in enumerate(members):
                for i in mem:
                    w[i] = bi
            where.append(w)
        blocks.append(members)

    def parity(bits: list[int], idx: list[int]) -> int:
        p = 0
        for i in idx:
            p ^= bits[i]
        return p

    leaked = 0
    known: dict[tuple[int, int, int], int] = {}  # (pass, block, heap node) -> Alice's parity
    xval: dict[int, int] = {}  # key index -> Alice's bit, where Bob knows it
    alice_top: list[list[int]] = []
    bob_top: list[list[int]] = []  # Bob's current block parities, updated on every flip
    flipped = clean = passes_run = 0
    for p in range(P.npasses):
        if p == 0:
            alice_top.append([parity(x, mem) for mem in blocks[p]])
            key_parity = sum(alice_top[0]) % 2  # Alice's whole-key parity, from pass 0's blocks
        else:  # all blocks but the last are disclosed; the last follows from the key's parity
            told = [parity(x, mem) for mem in blocks[p][:-1]]
            alice_top.append(told + [(key_parity + sum(told)) % 2])
        bob_top.append([parity(y, mem) for mem in blocks[p]])
        leaked += len(blocks[p]) - (1 if p > 0 else 0)
        clean = clean + 1 if (P.kind[p] == 1 and alice_top[p] == bob_top[p]) else 0
        while True:
            odd_pass = -1
            for qq in range(p + 1):
                if alice_top[qq] != bob_top[qq]:
                    odd_pass = qq
                    break
            if odd_pass < 0:
                break
            qq = odd_pass
            found = []
            for bi, mem in enumerate(blocks[qq]):
                if alice_top[qq][bi] == bob_top[qq][bi]:
                    continue
                lo, hi, h = 0, len(mem), 1  # BINARY: the range [lo, hi) has odd error count
                while hi - lo > 1:
                    mid = lo + (hi - lo) // 2
                    node = (qq, bi, 2 * h)
                    left, right = mem[lo:mid], mem[mid:hi]
                    if node in known:
                        al = known[node]
                    elif len(left) <= schedule.implied_max and all(i in xval for i in left):
                        al = parity([xval[i] for i in left], list(range(len(left))))
                    elif len(right) <= schedule.implied_max and all(i in xval for i in right):
                        # A(left) = A(range) + A(right), and A(range) = B(range) + 1 (odd range)
                        al = (parity(y, mem[lo:hi]) + 1 + sum(xval[i] for i in right)) % 2
                    else:
                        al = known[node] = parity(x, left)
                        leaked += 1
                    if len(left) == 1:  # Alice's bits Bob now knows
                        xval[left[0]] = al
                    if len(right) == 1:
                        xval[right[0]] = (parity(y, mem[lo:hi]) + 1 + al) % 2
                    if al != parity(y, left):
                        hi, h = mid, 2 * h
                    else:
                        lo, h = mid, 2 * h + 1
                found.append(mem[lo])
                if schedule.halves_in_turn and P.kind[qq] == 1:
                    break  # the second block waits: the cascade of this flip may make it even
            for i in found:
                y[i] ^= 1
                for r in range(p + 1):
                    bob_top[r][where[r][i]] ^= 1
            flipped += len(found)
        passes_run = p + 1
        if schedule.confirm and clean >= schedule.confirm:
            break
    corrected = np.array(y, dtype=np.uint8)
    return ReconciliationResult(corrected=corrected, leaked_bits=leaked, qber=q,
                                method=f"cascade-{schedule.name}-reference", iterations=passes_run,
                                corrected_errors=flipped, details={"seed": seed})
