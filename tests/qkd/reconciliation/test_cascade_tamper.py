"""Cascade against inconsistent parities (a tamperer on the path, or a desynchronised Alice):
Bob must stop with one clear error instead of looping forever, and honest runs are unchanged."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from labqfl.qkd.cascade import (
    CascadeAlice,
    CascadeBob,
    CascadeInconsistencyError,
)
from labqfl.qkd.messaging import LocalChannel, Message

#: generous: an honest 10^4-bit frame takes well under a second
JOIN_S = 60.0


class _FlippingAlice:
    """Alice whose ``which``-th reply of ``kind`` has its parity ``index`` flipped."""

    def __init__(self, bits: np.ndarray, kind: str, which: int = 0, index: int = 0) -> None:
        self.alice, self.kind, self.which, self.index = CascadeAlice(bits), kind, which, index
        self.seen = 0

    def handle(self, req: Message) -> Message:
        rep = self.alice.handle(req)
        if rep.kind == self.kind:
            if self.seen == self.which:
                d = rep.disclosed.copy()
                d[self.index % d.size] ^= 1
                rep = Message(rep.kind, rep.fields, d, rep.credit)
            self.seen += 1
        return rep


def _run_bounded(bob: CascadeBob, alice) -> tuple[object, BaseException | None]:
    """Bob's run in a thread joined with a timeout, so a regression (an endless loop) fails."""
    box: dict[str, object] = {}

    def run() -> None:
        try:
            box["res"] = bob.run(LocalChannel(alice))
        except BaseException as e:  # reported to the test thread
            box["err"] = e

    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(JOIN_S)
    assert not t.is_alive(), "Cascade's Bob did not terminate on inconsistent parities"
    return box.get("res"), box.get("err")  # type: ignore[return-value]


@pytest.mark.parametrize("kind", ["cascade/block-parities", "cascade/parities"])
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_one_flipped_parity_stops_bob_with_a_clear_error(frame, kind, seed):
    x, y = frame(10_000, 0.02, seed)
    bob = CascadeBob(y, 0.02, seed=seed)
    res, err = _run_bounded(bob, _FlippingAlice(x, kind))
    assert res is None
    assert isinstance(err, CascadeInconsistencyError)
    msg = str(err)
    assert msg.startswith("cascade: inconsistent parities from Alice (tampered or desynchronised):")
    assert "\n" not in msg


#: (frame seed, n, QBER) → (disclosed bits, round trips) on the same frames and seeds.  First pinned
#: from the implementation before the consistency check (commit 19663e1: 663/143, 654/139,
#: 2921/305, 3067/438); re-pinned when the second pass's multiplier became a choice among 8 and
#: frames below 2^16 bits deferred second-pass searches (issue 19 item 6), which changed the passes
#: themselves (same frames, f lower on average, 1.3–3× the round trips below 2^16 bits); re-pinned
#: again when Bob began to ask block parities ahead and two bisection levels per round trip (issue 16
#: item 8: the searches of different blocks share rounds differently, so single frames move by a few
#: parities either way — 658/652/2916/3009 here against 655/650/2975/3020 — while the mean f over
#: 300 such 3000-bit frames at 3 % moved by −0.0010 ± 0.0006; round trips 155/162/967/602 → 74/78/436/279);
#: re-pinned when the blocks of a bipartition were searched in turn below 2^16 bits (issue 19 item 6,
#: fourth round: 658/652/2916/3009 → 656/651/2912/3019 parities, the last frame up by 10 while the
#: mean f over 300 10^4-bit frames fell by 0.0046–0.0060 at 1, 2 and 8 %; round trips 74/78/436/279
#: → 86/84/446/298).
PINNED = {(11, 3000, 0.03): (656, 86), (12, 3000, 0.03): (651, 84), (13, 20000, 0.02): (2912, 446),
          (14, 10000, 0.05): (3019, 298)}


@pytest.mark.parametrize("case", sorted(PINNED))
def test_honest_runs_are_unchanged_by_the_consistency_check(frame, case):
    """No more disclosed parities or round trips than before the check; every error corrected."""
    seed, n, q = case
    x, y = frame(n, q, seed)
    res = CascadeBob(y, q, seed=seed).run(LocalChannel(CascadeAlice(x)))
    assert np.array_equal(res.corrected, x)
    assert res.corrected_errors == int(np.count_nonzero(x != y))
    leaked, trips = PINNED[case]
    assert res.leaked_bits <= leaked and res.round_trips <= trips


class _PaddingAlice:
    """Alice whose ``which``-th reply of ``kind`` carries one parity too many or too few."""

    def __init__(self, bits: np.ndarray, kind: str, which: int, extra: bool) -> None:
        self.alice, self.kind, self.which, self.extra = CascadeAlice(bits), kind, which, extra
        self.seen = 0

    def handle(self, req: Message) -> Message:
        rep = self.alice.handle(req)
        if rep.kind == self.kind:
            if self.seen == self.which:
                d = np.append(rep.disclosed, np.uint8(0)) if self.extra else rep.disclosed[:-1].copy()
                rep = Message(rep.kind, rep.fields, d, rep.credit)
            self.seen += 1
        return rep


@pytest.mark.parametrize("kind", ["cascade/block-parities", "cascade/parities"])
@pytest.mark.parametrize("extra", [True, False])
def test_a_reply_with_the_wrong_number_of_parities_stops_bob_with_the_same_error(frame, kind, extra):
    """With two bisection levels per query the count of parities depends on their values, so a
    flipped first-level parity can change it: a wrong count is reported as inconsistent parities."""
    x, y = frame(10_000, 0.02, 4)
    res, err = _run_bounded(CascadeBob(y, 0.02, seed=4), _PaddingAlice(x, kind, 1 if kind.endswith("/parities") else 0,
                                                                       extra))
    assert res is None and isinstance(err, CascadeInconsistencyError)
    assert str(err).startswith("cascade: inconsistent parities from Alice (tampered or desynchronised): reply")
