"""Keeping the two node stores of a pair in step where one process holds both (the in-process
distillation, the ETSI KME).

A block is stored at its two ends in two transactions of two SQLite files (no transaction spans
both: https://www.sqlite.org/lang_attach.html, "transactions ... are atomic for each individual
database file but are not atomic across all database files" in WAL mode). A process killed between
them leaves the block at one end only, with its slots recorded as distilled, so a rerun skips them
and the block stays one-sided: every take of its bits at the holding end is then refused by the
partner (an ETSI request in that direction answered 503, an FL round aborted and its bits spent at
one end), round after round.

:func:`retire_one_sided_blocks` finds such blocks and discards their bits at the holding end
(:meth:`~labqfl.keystore.KeyStore.discard_exact`: marked consumed and overwritten, never handed out;
bits reserved there for a key in use are left alone).  The partner never held the key, and the raw
data it came from is spent (re-distilling it would disclose its error-correction parities twice),
so the block is lost — as a block is when the networked pipeline is killed half-way
(docs/nodes.md, "Storing a block").  A block younger than ``min_age_s`` is left alone: the
networked pipeline stores a block at Ci just before Cj, and a concurrent run must not lose it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

log = logging.getLogger(__name__)

#: a block held at one end for less than this is not retired (a networked run may be storing it)
MIN_AGE_S = 10.0


def _age_s(created: str) -> float:
    try:
        t = datetime.fromisoformat(created)
    except (TypeError, ValueError):
        return float("inf")  # an unreadable timestamp: old
    if t.tzinfo is None:
        t = t.replace(tzinfo=UTC)
    return (datetime.now(UTC) - t).total_seconds()


def retire_one_sided_blocks(stores: Mapping[str, Any], pairs: Iterable[str], *,
                            min_age_s: float | None = None, only: Callable[[str], bool] | None = None,
                            why: str = "the process that stored it stopped before") -> list[dict[str, Any]]:
    """Discard, at the holding end, every block of ``pairs`` that only one of the pair's two stores
    (``stores[node]``, :class:`~labqfl.keystore.KeyStore`) holds; returns one record per block that
    had free bits to discard (pair, block_id, node, nbits, discarded).  Pairs whose two stores are not both in ``stores`` are
    skipped.  ``min_age_s``: default :data:`MIN_AGE_S`; ``only``: the block IDs to consider (default all);
    ``why``: how the block came to be one-sided, for the log ("… <other>'s copy")."""
    min_age = MIN_AGE_S if min_age_s is None else float(min_age_s)
    out: list[dict[str, Any]] = []
    for pair in pairs:
        a, _, b = pair.partition("-")
        if a not in stores or b not in stores:
            continue
        held = {n: {d["block_id"]: d for d in stores[n].blocks(pair)} for n in (a, b)}
        for node, other in ((a, b), (b, a)):
            for bid in sorted(held[node].keys() - held[other].keys()):
                if only is not None and not only(bid):
                    continue
                d = held[node][bid]
                if _age_s(str(d["created"])) < min_age:
                    continue
                n = stores[node].discard_exact(pair, [(bid, 0, int(d["nbits"]))],
                                               f"block held at {node} only ({why} {other}'s copy): retired, never used")
                if not n:
                    continue  # retired before (or nothing free left in it)
                log.warning("pair %s: block %s was stored at %s only (%s %s's copy); its %d free bits at %s were "
                            "discarded, never handed out", pair, bid, node, why, other, n, node)
                out.append({"pair": pair, "block_id": bid, "node": node, "nbits": int(d["nbits"]), "discarded": n})
    return out
