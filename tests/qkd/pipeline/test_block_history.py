"""A pair's results over an open-ended stream stay bounded: the last BLOCKS_KEPT blocks in full,
the ones before folded into totals that give :meth:`PairResult.as_dict` exactly what the whole
list gave (before, every block's key-length report stayed in memory: the GUI's live tab grew by
~0.2 GB an hour on the default station)."""

from __future__ import annotations

import numpy as np

from labqfl.qkd.pipeline import BLOCKS_KEPT, BlockResult, PairResult


def _block(rng: np.random.Generator, k: int) -> BlockResult:
    abort = bool(rng.random() < 0.2)
    leak = int(rng.integers(0, 2)) * int(rng.integers(1, 5000)) if abort else int(rng.integers(1000, 5000))
    report = None if rng.random() < 0.1 else {"phase_error_upper": float(rng.random()) if rng.random() < 0.9 else None}
    return BlockResult(pair="C1-C2", block_id=f"b{k}", n_slots=10**6, sifted_bits=int(rng.integers(1, 10**5)),
                       qber_key=float(rng.uniform(0, 0.05)), qber_estimate=0.01, leaked_ec_bits=leak,
                       verification_bits=50, efficiency_f=1.05, verified=True, keys_identical=not abort,
                       final_key_bits=0 if abort else 1000, auth_key_bits=128, delivered_bits=0 if abort else 872,
                       abort=abort, abort_reason=f"reason {k % 7}" if abort else "", report=report, times_s={},
                       auth_checks=int(rng.integers(1, 4)), eps_auth=float(rng.random()) * 1e-12,
                       eps_total=float(rng.random()))


def test_as_dict_over_a_long_stream_equals_the_whole_list_while_memory_stays_bounded() -> None:
    rng = np.random.default_rng(4)
    bounded, whole = PairResult("C1-C2"), PairResult("C1-C2")
    for k in range(3 * BLOCKS_KEPT + 17):
        b = _block(rng, k)
        bounded.add_block(b)
        whole.blocks.append(b)  # the unbounded list as before
        for r in (bounded, whole):
            r.leaked_ec_bits += b.leaked_ec_bits
        if k in (5, BLOCKS_KEPT, BLOCKS_KEPT + 1, 3 * BLOCKS_KEPT + 16):
            assert bounded.as_dict(10.0) == whole.as_dict(10.0), k
    assert len(bounded.blocks) == BLOCKS_KEPT and bounded.blocks[-1] is whole.blocks[-1]
    assert bounded.n_blocks == len(whole.blocks) and bounded.earlier.n == 2 * BLOCKS_KEPT + 17
    assert bounded.aborted_blocks == sum(b.abort for b in whole.blocks) > 0


def test_distinct_abort_reasons_of_earlier_blocks_stay_bounded() -> None:
    """Reasons carry numbers ("key length not positive (-987 bits)"): each would be a new entry."""
    from labqfl.qkd.pipeline import REASONS_KEPT

    rng = np.random.default_rng(5)
    r = PairResult("C1-C2")
    for k in range(BLOCKS_KEPT + 3 * REASONS_KEPT):
        b = _block(rng, k)
        b.abort, b.abort_reason = True, f"finite-size key length not positive ({-k} bits)"
        r.add_block(b)
    assert len(r.earlier.abort_reasons) == REASONS_KEPT and r.aborted_blocks == r.n_blocks
