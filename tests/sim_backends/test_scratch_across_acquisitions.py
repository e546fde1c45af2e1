"""A testbed hands an ended acquisition's scratch (buffers, row capacities, geometric-gap tables) to its next
acquisition (session 40, issue 18 item 5): the tags are those of an acquisition that starts with none, two
acquisitions at once never share one, and one abandoned midway gives its scratch back too."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from labqfl.config import load_station_config


def _logs(cfg):  # type: ignore[no-untyped-def]
    from labqfl.sim_backends.qrng import CsprngChoiceLog

    return {c.name: CsprngChoiceLog(c.name, tuple(float(p) for p in c.intensity_probs), float(c.basis_x_prob),
                                    key=bytes([i + 1]) * 32) for i, c in enumerate(cfg.clients)}


def _digest(blocks) -> tuple[int, str]:  # type: ignore[no-untyped-def]
    h, n = hashlib.sha256(), 0
    for b in blocks:
        h.update(np.ascontiguousarray(b.timestamps).tobytes())
        h.update(np.ascontiguousarray(b.channels).tobytes())
        n += len(b.timestamps)
    return n, h.hexdigest()


@pytest.mark.parametrize("threads", [1, 2])
def test_the_next_acquisition_takes_the_scratch_and_its_tags_do_not_change(threads):
    from labqfl.sim_backends import SagnacTestbed

    cfg = load_station_config()
    logs = _logs(cfg)
    kept = SagnacTestbed(cfg, threads=threads)
    _digest(kept.stream_with(logs, 0.03))  # acquisition 0: its scratch is kept
    assert len(kept._scratch) == 1
    scratch = kept._scratch[0]
    assert scratch.buffers and scratch.guide_q.size and (scratch.guide_q > 0).any()
    second = kept.stream_with(logs, 0.02)
    first_block = next(second)
    assert kept._scratch == []  # taken by acquisition 1 while it runs
    got = _digest([first_block, *second])
    assert kept._scratch[0].buffers is scratch.buffers  # and given back

    fresh = SagnacTestbed(cfg, threads=threads)
    _digest(fresh.stream_with(logs, 0.03))
    fresh._scratch.clear()  # acquisition 1 starts with no scratch
    assert _digest(fresh.stream_with(logs, 0.02)) == got


def test_two_acquisitions_at_once_do_not_share_scratch_and_an_abandoned_one_gives_it_back():
    from labqfl.sim_backends import SagnacTestbed

    cfg = load_station_config()
    tb = SagnacTestbed(cfg, threads=1)
    _digest(tb.stream(0.01))
    a, b = tb.stream(0.02, 0.005), tb.stream(0.02, 0.005)
    next(a)
    next(b)
    assert tb._scratch == []  # a took the kept one, b started with none
    a.close()  # abandoned
    assert len(tb._scratch) == 1
    _digest(b)
    assert len(tb._scratch) == 2
    assert tb._scratch[0].buffers is not tb._scratch[1].buffers
