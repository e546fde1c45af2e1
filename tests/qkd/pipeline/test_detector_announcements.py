"""The clients check the untrusted detector's announcements before sifting them.

The transcript tags only show that the detector told both clients the same thing. A detector that
keeps a random 1/k of its clicks and announces each k times (same outcome, to both clients) leaves
the per-cell click counts unchanged in expectation, so the decoy check passed; the repeated slots
gave the same raw bit k times and the key-length bound counted each as an independent sifted bit:
with k = 4 a block of 7 041 distinct raw bits gave a 9 898-bit "ε-secure" key (5 288 at most after
the reconciliation leak). Slots outside the chunk, or in another pair's frames, would reuse a
client's choice in a second block or a second pair's key. Both ends now refuse such a chunk.
"""

from __future__ import annotations

import numpy as np
import pytest
from labqfl.sim_backends import SagnacTestbed
from qkdpp_helpers import small_station

from labqfl.contracts.schedule import PairSchedule
from labqfl.contracts.types import Announcements
from labqfl.qkd.estimation import SecurityParameters
from labqfl.qkd.pipeline import Distiller, DistillSettings, MemorySink, distill_stream
from labqfl.qkd.twoparty import announcement_problem

SCHEDULE = PairSchedule([("C1", "C2"), ("C3", "C4")], slots_per_frame=100)  # C1-C2 owns 0..99, 200..299, …


def _ann(slots: list[int], outcomes: list[int] | None = None, pair: str = "C1-C2") -> Announcements:
    return Announcements(pair, np.asarray(slots, np.int64),
                         np.asarray(outcomes if outcomes is not None else [1] * len(slots), np.uint8))


@pytest.mark.parametrize(("ann", "lo", "hi", "after", "why"), [
    (_ann([3, 50, 99, 200, 250]), 0, 300, 0, ""),
    (_ann([]), 100, 100, 100, ""),
    (_ann([3, 50, 50, 99]), 0, 300, 0, "not strictly increasing"),
    (_ann([3, 99, 50]), 0, 300, 0, "not strictly increasing"),
    (_ann([3, 50]), 10, 300, 0, "outside the chunk's range [10, 300)"),
    (_ann([3, 250]), 0, 250, 0, "outside the chunk's range [0, 250)"),
    (_ann([3, 50], [1, 7]), 0, 300, 0, "outcomes outside {1, 2, 3}"),
    (_ann([3, 50], [0, 1]), 0, 300, 0, "outcomes outside {1, 2, 3}"),
    (_ann([3, 150]), 0, 300, 0, "slots of another pair's frames"),
    (_ann([250]), 200, 300, 260, "reaches back before slot 260"),
    (_ann([3], pair="C3-C4"), 0, 300, 0, "announcements for pair C3-C4 handed to pair C1-C2"),
])
def test_announcement_problem_names_each_kind_of_bad_announcement(ann: Announcements, lo: int, hi: int, after: int,
                                                                   why: str) -> None:
    got = announcement_problem(ann, lo, hi, after, SCHEDULE, "C1-C2")
    assert (why in got and got) if why else got == "", got


def _distill(evil: object, monkeypatch: pytest.MonkeyPatch) -> tuple[object, MemorySink]:
    """Distil 0.05 s of the one-pair small station with the detector's announcements passed through
    ``evil(ann) -> ann`` on their way to both clients."""
    cfg = small_station()
    tb = SagnacTestbed(cfg)
    blocks = list(tb.stream(0.05))
    logs = {c: tb.client_log(c) for c in cfg.client_names}
    orig = Distiller._sift_into

    def sift_into(self, st, ann, lo, hi):  # type: ignore[no-untyped-def]
        return orig(self, st, evil(ann), lo, hi)  # type: ignore[operator]

    monkeypatch.setattr(Distiller, "_sift_into", sift_into)
    sink = MemorySink()
    res, _ = distill_stream(cfg, blocks, logs, sink,
                            DistillSettings(block_bits=1_000_000, params=SecurityParameters(eps_sec=1e-4)),
                            total_slots=int(0.05 * cfg.laser.rep_rate_hz))
    return res["C1-C2"], sink


def test_an_honest_detector_s_announcements_give_key(monkeypatch: pytest.MonkeyPatch) -> None:
    r, sink = _distill(lambda ann: ann, monkeypatch)
    assert r.final_key_bits > 0 and sink.keys.get("C1-C2")


def test_clicks_announced_several_times_are_refused_and_give_no_key(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(7)

    def repeat_a_quarter_four_times(ann: Announcements) -> Announcements:
        rep = np.where(rng.random(ann.slots.size) < 0.25, 4, 0).astype(np.int64)
        return Announcements(ann.pair, np.repeat(ann.slots, rep), np.repeat(ann.outcomes, rep))

    r, sink = _distill(repeat_a_quarter_four_times, monkeypatch)
    assert r.final_key_bits == 0 and not sink.keys.get("C1-C2")
    reasons = [b.abort_reason for b in r.blocks]
    assert reasons and all("not strictly increasing (a slot announced twice" in why for why in reasons), reasons
