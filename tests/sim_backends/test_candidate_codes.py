"""The optics' on-demand modulation (``SagnacTestbed._ask_candidates``): the grouped, kernel-backed
version against the straightforward reference it replaced, on random candidate sets."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
from labqfl.sim_backends import SagnacTestbed
from labqfl.sim_backends import _kernels as K
from labqfl.sim_backends.qrng import CsprngChoiceLog, log_for_client

from labqfl.config import load_station_config
from labqfl.contracts.schedule import PairSchedule


def reference_candidate_codes(logs: list[Any], cand_slot: np.ndarray, cand_n: np.ndarray,
                              pa: dict[str, np.ndarray], frame: int) -> tuple[np.ndarray, np.ndarray]:
    """The slow, obviously-correct version (the landed code before the grouping kernel): every
    candidate's pair from its frame, then per side and client a ``choices`` call and a scatter."""
    rows = np.repeat(np.arange(cand_n.size), cand_n)
    cols = np.concatenate([np.arange(int(n)) for n in cand_n.tolist()]) if rows.size else np.zeros(0, np.int64)
    slots = cand_slot[rows, cols]
    cycle = pa["frame_pair"]
    p = cycle[(slots // frame) % cycle.size]
    shape = (cand_n.size, max(int(cand_n.max()) if cand_n.size else 0, 1))
    out = (np.zeros(shape, np.uint8), np.zeros(shape, np.uint8))
    for side, who in ((0, pa["ci"][p]), (1, pa["cj"][p])):
        for c in np.unique(who).tolist():
            sel = who == c
            rec = logs[c].choices(np.ascontiguousarray(slots[sel]))
            out[side][rows[sel], cols[sel]] = (np.asarray(rec.intensity_idx, np.uint8) * 4
                                               + np.asarray(rec.phase_idx, np.uint8))
    return out


class _Asked:
    """A client's log that records every ``choices`` call (slots asked), answering from ``log``."""

    def __init__(self, log: Any) -> None:
        self.log = log
        self.calls: list[np.ndarray] = []

    def choices(self, slots: np.ndarray) -> Any:
        self.calls.append(np.array(slots))
        return self.log.choices(slots)


def _random_window(rng: np.random.Generator, n_clients: int, frame: int) -> tuple[np.ndarray, np.ndarray,
                                                                                   dict[str, np.ndarray]]:
    """Candidate rows as the signal kernel writes them (chunks in time order, slots increasing,
    unused columns garbage) and a random pair schedule of ``n_clients`` clients."""
    names = [f"C{k + 1}" for k in range(n_clients)]
    pairs = [(names[a], names[b]) for a in range(n_clients) for b in range(a + 1, n_clients)]
    keep = rng.permutation(len(pairs))[:rng.integers(1, len(pairs) + 1)]
    pairs = [pairs[k] for k in sorted(keep.tolist())]
    frames = [int(x) for x in rng.integers(1, 4, len(pairs))]
    sched = PairSchedule(pairs, frame, frames)
    pa = {"frame_pair": sched.frame_pair,
          "ci": np.array([names.index(a) for a, _ in pairs], dtype=np.int64),
          "cj": np.array([names.index(b) for _, b in pairs], dtype=np.int64)}
    n_rows = int(rng.integers(1, 7))
    chunk = int(rng.integers(50, 400))
    s0 = int(rng.integers(0, 10_000))
    cand_n = rng.integers(0, chunk // 2, n_rows).astype(np.int64)
    if rng.random() < 0.2:
        cand_n[:] = 0
    cap = int(cand_n.max()) + int(rng.integers(0, 5)) if n_rows else 1
    cand_slot = rng.integers(-(1 << 40), 1 << 40, (n_rows, max(cap, 1))).astype(np.int64)  # garbage past cand_n
    for r in range(n_rows):
        lo = s0 + r * chunk
        cand_slot[r, :cand_n[r]] = np.sort(rng.choice(np.arange(lo, lo + chunk), int(cand_n[r]), replace=False))
    return cand_slot, cand_n, pa


@pytest.mark.parametrize("seed", range(12))
def test_grouped_candidate_codes_equal_the_reference(seed):
    """Exactly the reference's codes, with each client asked once per window, for its own
    candidates only, in ascending slot order (seeded and CSPRNG logs; random schedules, frames,
    row lengths, empty windows)."""
    rng = np.random.default_rng(seed)
    cfg = load_station_config()
    n_clients = int(rng.integers(2, 6))
    frame = int(rng.integers(7, 300))
    cand_slot, cand_n, pa = _random_window(rng, n_clients, frame)
    cc = cfg.clients[0]
    base = [log_for_client(cc.model_copy(update={"name": f"C{k + 1}", "seed": 11 + k}), 3) if k % 2 == 0
            else CsprngChoiceLog(client=f"C{k + 1}", intensity_probs=(0.5, 0.3, 0.2), basis_x_prob=0.6)
            for k in range(n_clients)]
    logs = [_Asked(lg) for lg in base]
    tb = SagnacTestbed(cfg, threads=1)
    got_i, got_j = tb._ask_candidates(SimpleNamespace(logs=logs), cand_slot, cand_n, pa, frame)()
    ref_i, ref_j = reference_candidate_codes(base, cand_slot, cand_n, pa, frame)
    assert got_i.shape == ref_i.shape and got_j.shape == ref_j.shape
    np.testing.assert_array_equal(got_i, ref_i)
    np.testing.assert_array_equal(got_j, ref_j)
    all_slots = np.concatenate([cand_slot[r, :cand_n[r]] for r in range(cand_n.size)])
    p = pa["frame_pair"][(all_slots // frame) % pa["frame_pair"].size]
    for c, lg in enumerate(logs):
        mine = np.sort(all_slots[(pa["ci"][p] == c) | (pa["cj"][p] == c)])
        assert len(lg.calls) == (1 if mine.size else 0)
        if mine.size:
            np.testing.assert_array_equal(lg.calls[0], mine)


def test_group_candidates_gives_each_client_its_candidates_in_frame_runs():
    """Every candidate appears once under each of its pair's two clients; the runs tile each row's
    candidates, one frame (and pair) per run; each client's slots ascend."""
    rng = np.random.default_rng(7)
    frame = 50
    cand_slot, cand_n, pa = _random_window(rng, 4, frame)
    offsets, slots, runs = K.group_candidates(cand_slot, cand_n, np.int64(frame), pa["frame_pair"],
                                              pa["ci"], pa["cj"], np.int64(4))
    assert offsets[0] == 0 and offsets[-1] == 2 * int(cand_n.sum()) == slots.size
    for r in range(cand_n.size):  # the runs of row r cover its candidates in order, each within one frame
        mine = runs[runs[:, 0] == r]
        edges = np.concatenate([[0], mine[:, 2]]) if mine.size else np.array([0])
        assert edges[-1] == cand_n[r] and np.array_equal(mine[:, 1], edges[:-1]) and np.all(mine[:, 2] > mine[:, 1])
        for _, k0, k1, p in mine.tolist():
            f = cand_slot[r, k0:k1] // frame
            assert np.all(f == f[0]) and p == pa["frame_pair"][f[0] % pa["frame_pair"].size]
    all_slots = np.concatenate([cand_slot[r, :cand_n[r]] for r in range(cand_n.size)])
    p = pa["frame_pair"][(all_slots // frame) % pa["frame_pair"].size]
    for c in range(4):
        seg = slots[int(offsets[c]):int(offsets[c + 1])]
        np.testing.assert_array_equal(seg, np.sort(all_slots[(pa["ci"][p] == c) | (pa["cj"][p] == c)]))


def test_on_demand_tags_equal_drive_pattern_tags_with_csprng_clients():
    """With CSPRNG clients (the default) the optics' path (candidates, then each client's choices
    there) and the in-process path (drive patterns over every slot) give the same tags."""
    cfg = load_station_config()
    logs = {c.name: CsprngChoiceLog(client=c.name, intensity_probs=tuple(c.intensity_probs),
                                    basis_x_prob=c.basis_x_prob) for c in cfg.clients}
    out = []
    for on_demand in (False, True):
        tb = SagnacTestbed(cfg, threads=2)
        tb.modulation_on_demand = on_demand
        blocks = list(tb.stream_with(logs, 0.004))
        out.append((np.concatenate([b.timestamps for b in blocks]), np.concatenate([b.channels for b in blocks])))
    (t0, c0), (t1, c1) = out
    assert t0.size > 1000
    np.testing.assert_array_equal(t0, t1)
    np.testing.assert_array_equal(c0, c1)


def test_clients_with_ask_are_all_asked_before_any_answer_is_awaited():
    """A remote client's link offers ``ask(slots)`` (the question goes out, the wait comes back):
    every client of the window gets its question before the Monte-Carlo waits for any answer, so
    the clients answer in parallel; the codes are still the reference's."""
    rng = np.random.default_rng(3)
    cfg = load_station_config()
    cand_slot, cand_n, pa = _random_window(rng, 4, 40)
    while cand_n.sum() < 20 or pa["ci"].size < 2:
        cand_slot, cand_n, pa = _random_window(rng, 4, 40)
    events: list[tuple[str, int]] = []
    base = [log_for_client(cfg.clients[0].model_copy(update={"name": f"C{k + 1}", "seed": 5 + k}), 1) for k in range(4)]

    class Remote:
        def __init__(self, k: int) -> None:
            self.k = k

        def ask(self, slots: np.ndarray) -> Any:
            events.append(("ask", self.k))

            def wait() -> Any:
                events.append(("answer", self.k))
                return base[self.k].codes(slots)  # a link answers drive codes k·4 + a
            return wait

    tb = SagnacTestbed(cfg, threads=1)
    got = tb._ask_candidates(SimpleNamespace(logs=[Remote(k) for k in range(4)]), cand_slot, cand_n, pa, 40)()
    ref = reference_candidate_codes(base, cand_slot, cand_n, pa, 40)
    np.testing.assert_array_equal(got[0], ref[0])
    np.testing.assert_array_equal(got[1], ref[1])
    kinds = [e for e, _ in events]
    asked = kinds.count("ask")
    assert asked >= 2 and kinds == ["ask"] * asked + ["answer"] * asked


class _AskRecorder:
    """A remote client's link as the optics sees it, recording every slot it is asked about."""

    def __init__(self, log: Any) -> None:
        self._log = log
        self.asked: list[np.ndarray] = []

    def ask(self, slots: np.ndarray) -> Any:
        self.asked.append(np.array(slots, copy=True))
        return lambda: self._log.codes(slots)  # a link answers drive codes k·4 + a

    def __getattr__(self, name: str) -> Any:  # whatever else the client's log can answer, the link forwards
        return getattr(self._log, name)


def test_the_slots_a_client_is_asked_about_do_not_depend_on_any_clients_choices():
    """Decision 0004: the optics asks about candidate slots drawn from its own channel seeds and the
    link budget only, so what a client is asked reveals nothing of its partners' choices. Two
    acquisitions with the same channel seeds, once with C2 (and C3) drawing other choices: every
    client is asked about exactly the same slots, while the clicks differ. (A design that asked only
    where some client sent its bright level — built and reverted on 2026-12-04 — fails this: C1
    would be asked about its partners' decoy slots.) On a station with a bright decoy (the two-rate
    path, where bright slots are drawn apart): the embedded station's decoy is weak since 2026-12-07."""
    cfg = _bright_decoy()

    def fresh(name: str) -> CsprngChoiceLog:
        c = cfg.client(name)
        return CsprngChoiceLog(client=name, intensity_probs=tuple(c.intensity_probs), basis_x_prob=c.basis_x_prob)

    base = {c.name: fresh(c.name) for c in cfg.clients}
    runs = []
    for swapped in ((), ("C2", "C3")):
        logs = {n: (fresh(n) if n in swapped else lg) for n, lg in base.items()}
        links = {n: _AskRecorder(lg) for n, lg in logs.items()}
        tb = SagnacTestbed(cfg, threads=1)
        tb.modulation_on_demand = True
        tags = np.concatenate([b.timestamps for b in tb.stream_with(dict(links), 0.004)])
        runs.append((tags, {n: np.concatenate(lk.asked) for n, lk in links.items()}))
    (tags_a, asked_a), (tags_b, asked_b) = runs
    assert not np.array_equal(tags_a, tags_b)  # the choices did change the clicks
    for n in asked_a:
        assert asked_a[n].size > 10_000
        np.testing.assert_array_equal(asked_a[n], asked_b[n], err_msg=f"{n} was asked about other slots")


@pytest.mark.parametrize("on_demand", [False, True])
def test_signal_rows_too_short_for_a_chunks_clicks_are_grown_and_give_the_same_tags(on_demand, monkeypatch):
    """The signal kernel's rows start at 16 clicks per chunk here instead of 4096: every chunk overflows,
    the pass is rerun with longer rows until all fit (the second pass checks the room once per piece of
    candidates and reruns where a piece might not fit), and the tags are those of the default rows."""
    cfg = load_station_config()
    logs = {c.name: CsprngChoiceLog(client=c.name, intensity_probs=tuple(c.intensity_probs),
                                    basis_x_prob=c.basis_x_prob) for c in cfg.clients}

    def tags() -> tuple[np.ndarray, np.ndarray]:
        tb = SagnacTestbed(cfg, threads=2)
        tb.modulation_on_demand = on_demand
        blocks = list(tb.stream_with(logs, 0.004))
        return np.concatenate([b.timestamps for b in blocks]), np.concatenate([b.channels for b in blocks])

    t0, c0 = tags()
    new_acq = SagnacTestbed._new_acq

    def short_rows(self: SagnacTestbed, *a: Any) -> Any:
        acq = new_acq(self, *a)
        acq.cap_sig = acq.cap_cand = 16
        return acq

    monkeypatch.setattr(SagnacTestbed, "_new_acq", short_rows)
    t1, c1 = tags()
    assert t0.size > 1000
    np.testing.assert_array_equal(t1, t0)
    np.testing.assert_array_equal(c1, c0)


class _BitsRecorder(_AskRecorder):
    """A remote client's link that is asked with the window's candidate bitmap (``ask_bits``, as the optics'
    modulator links are): the question goes through the wire's encoding and the client's decoding."""

    def ask_bits(self, runs: np.ndarray, words: np.ndarray, n: int) -> Any:
        from labqfl.nodes.optics import query_slots
        from labqfl.nodes.wire import slot_bits_fields
        from labqfl.qkd.messaging import Message, decode_message, encode_message

        slots = query_slots(decode_message(encode_message(Message("mod/query", slot_bits_fields(runs, words, n)))))
        return self.ask(slots)


def _bright_decoy() -> Any:
    """The embedded station with the bright decoy of the 10^9-slot operating point it had until 2026-12-07
    (ν = 0.442, docs/station.md): every pair's window takes the two-rate path (test_bright_thinning.py)."""
    cfg = load_station_config()
    bright = {"C1": [0.0294, 0.442, 0.0], "C2": [0.0216, 0.442, 0.0], "C3": [0.0203, 0.442, 0.0],
              "C4": [0.0294, 0.442, 0.0]}
    for c in cfg.clients:
        c.intensities = bright[c.name]
    return cfg


def _single_rate_misaligned_frames() -> Any:
    """The embedded station with a dim decoy (one thinning rate, ``_segment``) and frames of 1000 slots
    (runs that begin and end inside a 64-slot word of the bitmap)."""
    cfg = load_station_config()
    cfg.schedule.slots_per_frame = 1000
    for c in cfg.clients:
        c.intensities = [0.03, 0.1, 0.0]
    return cfg


@pytest.mark.parametrize("station", ["two rates (bright decoy)", "embedded (single rate)", "single rate, 1000-slot frames"])
def test_links_asked_with_the_candidate_bitmap_are_asked_the_same_slots_and_give_the_same_tags(station):
    """The optics asks a link that has ``ask_bits`` with the first pass's candidate bitmap over the runs of
    the client's frames instead of the grouped slots: every client is asked about exactly the slots the
    grouping gives (in the same order), and the tags are those of the drive patterns, on a station with a bright
    decoy (two rates), on the embedded station (weak decoy, a single rate: fewer candidates, so a longer
    duration) and on one with a single rate and frames that do not fill whole 64-slot words."""
    cfg = {"two rates (bright decoy)": _bright_decoy, "embedded (single rate)": load_station_config,
           "single rate, 1000-slot frames": _single_rate_misaligned_frames}[station]()
    duration = 0.008 if station.startswith("embedded") else 0.003
    logs = {c.name: CsprngChoiceLog(client=c.name, intensity_probs=tuple(c.intensity_probs),
                                    basis_x_prob=c.basis_x_prob) for c in cfg.clients}
    runs = {}
    for kind in ("patterns", _AskRecorder, _BitsRecorder):
        tb = SagnacTestbed(cfg, threads=2)
        tb.modulation_on_demand = kind != "patterns"
        links = {n: kind(lg) for n, lg in logs.items()} if kind != "patterns" else logs
        blocks = list(tb.stream_with(dict(links), duration, 0.001))
        asked = {n: np.concatenate(lk.asked) for n, lk in links.items()} if kind != "patterns" else {}
        runs[kind] = (np.concatenate([b.timestamps for b in blocks]), np.concatenate([b.channels for b in blocks]), asked)
    (tp, cp, _), (ts, cs, asked_s), (tb_, cb, asked_b) = runs.values()
    assert tp.size > 1000
    for t, c in ((ts, cs), (tb_, cb)):
        np.testing.assert_array_equal(t, tp)
        np.testing.assert_array_equal(c, cp)
    for n in asked_s:
        assert asked_s[n].size > 10_000
        np.testing.assert_array_equal(asked_b[n], asked_s[n])
