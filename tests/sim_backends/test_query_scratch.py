"""The CSPRNG client's random-access answers through per-thread scratch buffers (session 40, issue 18 item 5):
the same codes as the reference over several pieces and threads, no buffer allocated per call, and the coarse
map of slot8 built once per set of thresholds (every acquisition arms new logs)."""

import threading

import numpy as np
import pytest


def _log(key: bytes, generator: str = "aes256-ctr-slot8-v2"):  # type: ignore[no-untyped-def]
    from labqfl.sim_backends.qrng import CsprngChoiceLog

    return CsprngChoiceLog("C3", (0.7, 0.2, 0.1), 0.8, key=key, generator=generator)


@pytest.mark.parametrize("generator", ["aes256-ctr-slot8-v2", "aes256-ctr-slot32-v1"])
def test_answers_over_several_pieces_equal_the_reference_on_every_thread(generator):
    """More slots than one piece (:data:`qrng._QUERY_SLOTS`), sparse like a window's candidates, then a short
    question on the same thread (the scratch holds the first call's bytes: nothing of it may leak) and the
    same questions on other threads at once: all equal to :meth:`choices_reference`."""
    from labqfl.sim_backends import qrng

    rng = np.random.default_rng(40)
    log = _log(rng.bytes(32), generator)
    big = np.sort(rng.choice(40 * qrng._QUERY_SLOTS, qrng._QUERY_SLOTS * 5 // 2, replace=False)).astype(np.int64)
    small = np.sort(rng.integers(0, 10**12, 777, dtype=np.int64))

    def ref(s: np.ndarray) -> np.ndarray:
        r = log.choices_reference(s)
        return (r.intensity_idx << 2) | r.phase_idx

    want_big, want_small = ref(big), ref(small)
    np.testing.assert_array_equal(log.codes(big), want_big)
    np.testing.assert_array_equal(log.codes(small), want_small)
    got: dict[int, list[np.ndarray]] = {}

    def ask(i: int) -> None:
        got[i] = [log.codes(big), log.codes(small)]

    ts = [threading.Thread(target=ask, args=(i,)) for i in range(3)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    for i in range(3):
        np.testing.assert_array_equal(got[i][0], want_big)
        np.testing.assert_array_equal(got[i][1], want_small)


def test_answers_reuse_this_threads_buffers():
    """Two questions on one thread use the same counter and keystream buffers (none of 2.6 MiB per call), and
    another thread has its own."""
    from labqfl.sim_backends import qrng

    first = qrng._query_scratch()
    _log(bytes(range(32))).codes(np.arange(0, 5000, 3, dtype=np.int64))
    assert all(a is b for a, b in zip(first, qrng._query_scratch(), strict=True))
    other: list[tuple[np.ndarray, ...]] = []
    t = threading.Thread(target=lambda: other.append(qrng._query_scratch()))
    t.start()
    t.join()
    assert not any(a is b for a, b in zip(first, other[0], strict=True))


def test_coarse_map_built_once_per_thresholds():
    """Logs of a new acquisition (new keys, the same probabilities) share one coarse map; other thresholds
    get theirs, equal to one built afresh."""
    from labqfl.sim_backends import slot8
    from labqfl.sim_backends.qrng import joint_thresholds

    a, b = _log(bytes(32)), _log(bytes([1]) * 32)
    assert a._coarse_map is b._coarse_map
    thr = joint_thresholds((0.5, 0.3, 0.2), 0.6)
    fresh = slot8._coarse_map.__wrapped__(tuple(int(x) for x in thr[:-1]))
    got = slot8.coarse_map(thr)
    np.testing.assert_array_equal(got[0], fresh[0])
    assert got[1:] == fresh[1:]
    assert not got[0].flags.writeable


@pytest.mark.parametrize("generator", ["aes256-ctr-slot8-v2", "aes256-ctr-slot32-v1"])
@pytest.mark.parametrize("where", ["first", "last", "second piece", "int64 min"])
def test_a_negative_slot_anywhere_is_refused(generator, where):
    """``_counter_blocks`` checks the sign once, on the OR of a piece's slots (no branch per slot): a negative
    slot first, last, in a later piece or at the int64 minimum is still refused with the same error."""
    from labqfl.sim_backends import qrng

    log = _log(bytes(range(32)), generator)
    s = np.arange(0, 3 * qrng._QUERY_SLOTS, 2, dtype=np.int64)
    at = {"first": 0, "last": s.size - 1, "second piece": qrng._QUERY_SLOTS + 5, "int64 min": 17}[where]
    s[at] = np.iinfo(np.int64).min if where == "int64 min" else -3
    with pytest.raises(ValueError, match="slots must be >= 0"):
        log.codes(s)
