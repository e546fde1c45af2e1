"""Streaming distillation: time tags → identical secret keys at both clients of every pair.

Data path per :class:`TagBlock` (docs/postprocessing.md):

1. :class:`~labqfl.qkd.slotting.Slotter` turns tags into final (slot, outcome) events;
2. the events are split by the schedule into each pair's announcements, delivered to both clients'
   ends, and **sifted** by the two ends of the pair, each with its own modulation log, over the
   pair's channel (:mod:`labqfl.qkd.twoparty`: announcement digests, flags and test-slot reveals
   are authenticated messages; each end tallies the test statistics itself);
3. per pair the sifted key and its statistics accumulate over a **fixed number of the pair's
   slots** per block (``block_slots``, decided before the acquisition: given, or derived from
   ``block_bits`` and the station model's expected sift rate — never from the data, so Kato's
   bounds see a fixed N; docs/protocol.md §5.1), then the block is **reconciled** (Cascade or LDPC; Ci holds the reference key, Cj corrects),
   **verified** (2-universal hash, ε_cor), its **secure length** is computed
   (:func:`labqfl.qkd.estimation.secure_key_length`, abort rules there), and it is **amplified**
   (Toeplitz, seed from the OS CSPRNG) — at both ends separately, each end computing the secure
   length itself and refusing the block if the two differ — and **delivered** to a sink
   (the nodes' key stores), unless the two final keys differ (then nothing is stored at either
   end and the block is reported as an abort). Every classical message (reconciliation, verification tag,
   amplification seed) crosses an authenticated channel (Wegman–Carter, key from the pair's
   authentication pool, which is refilled from the block's final key: the cost is deducted).

Authentication key. With a sink backed by the nodes' key stores (:class:`KeyStoreSink`, any sink
implementing :class:`AuthKeyStore`) the authenticators draw from the stores, purpose ``auth``
(pool ``auth``, then ``general``): Ci allocates with ``KeyStore.take``, Cj consumes the same refs
with ``take_exact`` (:func:`~labqfl.qkd.authentication.keystore_auth_supplies`), so the bits are
consume-once and persist across runs. Before each block the Distiller checks that Ci's store can
pay for the block's authentication (64·lanes bits of hash key once per Distiller, plus
2·64·lanes bits of pads per block); if not, it **bootstraps** the pair: one fresh
``secrets``-random block of ``preshared_auth_bits`` written into both stores, pool ``auth``, block
ID ``preshared-<uuid4>`` (the simulated out-of-band delivery of QKD's pre-shared secret; refused
with ``DistillSettings(bootstrap_auth=False)``, where the real secret is loaded beforehand with
``labqfl keys preshare``, :mod:`labqfl.keystore.preshare`). After a successful block the first
``min(used, final)`` bits of its final key go back into both stores as block
``<block ID>-auth`` (pool ``auth``), the rest is delivered. Any other sink (e.g.
:class:`MemorySink`) gets an in-memory pre-shared pool per pair that lives as long as the
Distiller.

Raw data is distilled at most once. A block covers a fixed range of the acquisition's slots,
``[slot_start, slot_end)``; with an acquisition ID and a sink that keeps a ledger of distilled
slots (:class:`DistilledSlotLedger`, e.g. :class:`KeyStoreSink`) each block claims its range in
both nodes' stores before it spends any key, and a block overlapping a range claimed before —
by an earlier run with any block size, whether that block delivered key or aborted after
disclosing parities — is refused with :class:`~labqfl.errors.KeyStoreError`.

Stopping. ``Distiller(stop=...)``: a callable asked between the stages — before each pair's sifting,
before a block claims its slots and, inside the two-party protocol (:meth:`PairEndI.run_block`),
before its first message, between the round trips of error correction, after error correction and
after verification. Once it answers true the Distiller is stopped for good (:attr:`Distiller.stopped`):
a block inside the protocol ends as any refused block does — the tag exchange runs, both ends spend
the same pads (none goes back to the pool), neither accepts it, its slots stay claimed (its parities
may be out) and nothing of it is stored at either end; it is reported as an abort with reason
:data:`STOPPED_BY_USER`. A block that has not claimed its slots is forgotten at both ends like a
dropped one (only public sifting messages were exchanged; nothing claimed, spent or stored). A block
past privacy amplification runs to its end: its key is stored at both ends, or at neither.
:meth:`Distiller.push` and :meth:`Distiller.finish` then process nothing more.

ε of a block: ``eps_total = ε_sec + ε_cor + ε_auth``, where ``ε_auth`` is the Wegman–Carter
forgery probability summed over the block's tag verifications
(:func:`~labqfl.qkd.authentication.transcript_forgery_probability`; docs/protocol.md §5).

Memory is bounded: one tag block, and per pair at most one sift chunk, the current block's key bits
(packed, one bit per sifted bit and end) and about 2 MB of held-back transcript entries per end
(the rest spooled compressed to a temporary file, :mod:`labqfl.qkd.spool`; :meth:`Distiller.held_bytes`).
"""

from __future__ import annotations

import math
import secrets
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np

from labqfl.config import StationConfig
from labqfl.contracts.schedule import PairSchedule
from labqfl.contracts.types import DEFAULT_ENGINE, ENGINES, Announcements, ModulationLog, split_pair
from labqfl.errors import InsufficientKeyError, KeyStoreError, QKDInputError
from labqfl.instruments.base import TagBlock
from labqfl.instruments.interfaces import PlayedFrames
from labqfl.log import get_logger
from labqfl.qkd.authentication import (
    DEFAULT_AUTH_LANES,
    AuthKeySupply,
    BitPool,
    TranscriptAuthenticator,
    keystore_auth_supplies,
    transcript_forgery_probability,
    transcript_word_cap,
)
from labqfl.qkd.estimation import SecurityParameters, epsilon_total
from labqfl.qkd.finite_key import binary_entropy
from labqfl.qkd.messaging import Channel, LocalChannel
from labqfl.qkd.sifting import ClientSetup
from labqfl.qkd.slotting import SlotEvents, SlottingParams, announcements_by_pair, make_slotter
from labqfl.qkd.twoparty import STOPPED_BY_USER, BlockOutcome, PairEndI, PairEndJ, ProtocolSettings

log = get_logger(__name__)

__all__ = ["DistillSettings", "BlockResult", "PairResult", "KeySink", "AuthKeyStore",
           "DistilledSlotLedger", "MemorySink", "KeyStoreSink", "Distiller", "distill_stream",
           "PRESHARED_PREFIX", "AUTH_REFILL_SUFFIX", "STOPPED_BY_USER", "check_auth_key", "block_slots_for",
           "local_pair_channel"]

STAGES = ("slotting", "sifting", "reconciliation", "verification", "estimation", "amplification", "delivery")


def _engine(name: str) -> Callable[..., Any]:
    if name == "cascade":
        from labqfl.qkd.cascade import reconcile_cascade

        return reconcile_cascade
    if name == "ldpc":
        try:
            from labqfl.qkd.ldpc import reconcile_ldpc
        except ImportError:
            raise QKDInputError("engine 'ldpc' is not available in this installation; use 'cascade'") from None
        return reconcile_ldpc
    raise QKDInputError(f"unknown error-correction engine {name!r}; expected 'cascade' or 'ldpc'")


_BLOCK_NAMESPACE = uuid.UUID("6f1c1f7e-8a4e-5c56-9a51-3d1b2c0e7a10")


@dataclass(frozen=True)
class DistillSettings:
    """Knobs of the orchestrator.

    ``block_slots``: slots of each pair per key block (the finite-key block size N, fixed before
    the acquisition so that the block is not a stopping time of the data; docs/protocol.md §5.1);
    ``block_bits``: when ``block_slots`` is None, the sifted bits a block should hold on
    average — converted once, before any data, into ``block_slots`` = ⌈block_bits / expected
    sifted bits per slot⌉ from the station model (:func:`block_slots_for`);
    ``min_final_block_bits``: at the end of the stream a smaller rest is still processed if it has
    at least this many bits (else it is dropped and reported; a full block with fewer than 1000
    sifted bits, e.g. with the light off, is dropped likewise); ``auth_lanes``: 64-bit lanes per
    Wegman–Carter tag; ``preshared_auth_bits``: initial shared authentication key per pair (the
    usual pre-shared secret of QKD), refilled from every block's final key — in memory for the
    run, or, with a key-store sink, written once into both stores when a pair's ``auth`` pool
    cannot pay for a block (module docstring); ``bootstrap_auth``: False refuses that simulated
    pre-shared delivery (a real deployment loads its pre-shared secret into the stores' ``auth``
    pool instead) and raises :class:`~labqfl.errors.InsufficientKeyError`.
    """

    block_bits: int = 1_000_000
    engine: str = DEFAULT_ENGINE
    params: SecurityParameters = field(default_factory=SecurityParameters)
    min_final_block_bits: int = 10_000
    auth_lanes: int = DEFAULT_AUTH_LANES
    preshared_auth_bits: int = 1 << 16
    qber_floor: float = 0.005
    qber_default: float | None = None  # None: the engine's (twoparty.ProtocolSettings)
    bootstrap_auth: bool = True
    block_slots: int | None = None
    #: per pair (name "Ci-Cj"): its own ``block_slots`` and ``min_final_block_bits``, overriding the
    #: two above for that pair (the block-size rule gives each pair blocks at its own schedule
    #: share, :func:`labqfl.qkd.blocksize.plan_blocks`)
    pair_block_slots: Mapping[str, int] | None = None
    pair_min_final_block_bits: Mapping[str, int] | None = None
    #: sift in batches: the slotted clicks of several pushed tag blocks are held (all pairs
    #: together) until they number ``sift_batch_clicks`` or span ``sift_batch_slots`` slots, then
    #: sifted as one chunk per pair — fewer sifting round trips, the same key bits and counts
    #: (block ends are fixed slots, cut inside any chunk); 0 sifts after every push. The defaults:
    #: 0.5 s at 100 MHz, or 10^6 clicks (≈ 0.45 s of the default station's six pairs in process; over
    #: nodes each client counts its own pair's, ≈ 3.9·10^5 per 0.5 s), ≈ 9 MB held (docs/nodes.md)
    sift_batch_clicks: int = 1_000_000
    sift_batch_slots: int = 50_000_000

    def __post_init__(self) -> None:
        if self.block_bits < 1000:
            raise QKDInputError(f"block_bits must be >= 1000, got {self.block_bits}")
        if self.block_slots is not None and (isinstance(self.block_slots, bool) or int(self.block_slots) < 1000):
            raise QKDInputError(f"block_slots must be None or an integer >= 1000 slots per pair, got {self.block_slots!r}")
        for pair, bs in (self.pair_block_slots or {}).items():
            if isinstance(bs, bool) or int(bs) < 1000:
                raise QKDInputError(f"pair_block_slots[{pair!r}] must be an integer >= 1000 slots, got {bs!r}")
        if not 1 <= self.auth_lanes <= 4:
            raise QKDInputError(f"auth_lanes must be 1..4, got {self.auth_lanes}")
        need = _auth_bits_per_block(self.auth_lanes, first=True)
        if self.preshared_auth_bits % 8 or self.preshared_auth_bits < need:
            raise QKDInputError(f"preshared_auth_bits must be a multiple of 8 and at least {need} (the first block's "
                                f"authentication with {self.auth_lanes} lane(s)), got {self.preshared_auth_bits}")
        if self.engine not in ENGINES:
            raise QKDInputError(f"unknown error-correction engine {self.engine!r}; expected one of {ENGINES}")
        for name in ("sift_batch_clicks", "sift_batch_slots"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                raise QKDInputError(f"{name} must be an integer >= 0 (0: sift after every push), got {v!r}")


def _auth_bits_per_block(lanes: int, first: bool) -> int:
    """Key bits one end's :class:`TranscriptAuthenticator` takes for one block: two one-time pads
    (its final tag and the check of the partner's), plus the hash key on its first block."""
    return 64 * lanes * (3 if first else 2)


#: Block-ID prefix of a simulated pre-shared authentication block; suffix of a block's auth refill.
PRESHARED_PREFIX = "preshared-"
AUTH_REFILL_SUFFIX = "-auth"


@dataclass
class BlockResult:
    """One key block of one pair (no key material).

    ``slot_start``/``slot_end``: the acquisition's slots the block covers, ``[start, end)``
    (``n_slots`` of them belong to the pair). ``auth_checks``: Wegman–Carter tag verifications
    the block made; ``eps_auth``: their forgery probability (sum over attempts); ``eps_total``:
    ε_sec + ε_cor + ε_auth (docs/protocol.md §5).
    """

    pair: str
    block_id: str
    n_slots: int
    sifted_bits: int
    qber_key: float
    qber_estimate: float
    leaked_ec_bits: int
    verification_bits: int
    efficiency_f: float
    verified: bool
    keys_identical: bool
    final_key_bits: int
    auth_key_bits: int
    delivered_bits: int
    abort: bool
    abort_reason: str
    report: dict[str, Any] | None
    times_s: dict[str, float]
    slot_start: int = 0
    slot_end: int = 0
    auth_checks: int = 0
    eps_auth: float = 0.0
    eps_total: float = 0.0


#: Blocks a :class:`PairResult` keeps in full (with their key-length reports, ~6 kB each); older
#: blocks live on in :class:`EarlierBlocks`. An open-ended stream (the GUI's live tab closes ~12
#: blocks a second on the default station) otherwise grew by ~0.2 GB an hour.
BLOCKS_KEPT = 256
#: Distinct abort reasons :class:`EarlierBlocks` keeps.
REASONS_KEPT = 64
#: Fewest matched test clicks a test error rate (``X_test``, ``Y_test``) of :meth:`PairResult.as_dict` is given
#: from; below it the rate is None (no measurement) and only its count is reported: "0.0" from one Y-basis click
#: read as a measured rate (review s36 physics F7). Tables show "n/a" below the larger
#: :data:`labqfl.contracts.types.MIN_TEST_CLICKS`.
MIN_RATE_CLICKS = 10


@dataclass
class EarlierBlocks:
    """What :meth:`PairResult.as_dict` needs of the blocks no longer kept in full, accumulated
    block by block in their order (so every sum is the one over the whole list). Abort reasons carry
    numbers (the negative key length), so at most :data:`REASONS_KEPT` distinct ones are kept."""

    n: int = 0
    aborted: int = 0
    auth_checks: int = 0
    eps_auth: float = 0.0
    eps_total_max: float | None = None
    abort_reasons: set[str] = field(default_factory=set)
    #: Σ h(QBER)·n over the blocks error correction ran on (efficiency f = leak / this)
    ec_entropy_bits: float = 0.0
    phase_error_max: float | None = None

    def absorb(self, b: BlockResult) -> None:
        self.n += 1
        self.aborted += bool(b.abort)
        self.auth_checks += b.auth_checks
        self.eps_auth += b.eps_auth
        self.eps_total_max = b.eps_total if self.eps_total_max is None else max(self.eps_total_max, b.eps_total)
        if b.abort and len(self.abort_reasons) < REASONS_KEPT:
            self.abort_reasons.add(b.abort_reason)
        if not b.abort or b.leaked_ec_bits:
            self.ec_entropy_bits += binary_entropy(b.qber_key) * b.sifted_bits
        pe = b.report.get("phase_error_upper") if b.report else None
        if pe is not None:
            self.phase_error_max = pe if self.phase_error_max is None else max(self.phase_error_max, pe)


def _max_or_none(*xs: float | None) -> float | None:
    vals = [x for x in xs if x is not None]
    return max(vals) if vals else None


@dataclass
class PairResult:
    """Totals of one pair over the run (the JSON of ``labqfl distill`` per pair). ``blocks``: the
    last :data:`BLOCKS_KEPT` blocks (:meth:`add_block`), the ones before in ``earlier``."""

    pair: str
    n_slots: int = 0
    #: slots dropped by slotting (lost tagger data, unmarked frames): counted in ``n_slots`` as
    #: sent without a click (docs/protocol.md §5.1); reported for the lab
    dropped_slots: int = 0
    block_slots: int = 0
    sifted_bits: int = 0
    processed_bits: int = 0
    dropped_bits: int = 0
    #: blocks an earlier run of the same acquisition distilled (or spent) already: skipped
    skipped_blocks: int = 0
    key_errors: int = 0
    test_clicks: dict[str, int] = field(default_factory=dict)
    test_errors_x2: dict[str, int] = field(default_factory=dict)
    leaked_ec_bits: int = 0
    verification_bits: int = 0
    final_key_bits: int = 0
    auth_key_bits: int = 0
    delivered_bits: int = 0
    blocks: list[BlockResult] = field(default_factory=list)
    earlier: EarlierBlocks = field(default_factory=EarlierBlocks)
    times_s: dict[str, float] = field(default_factory=lambda: dict.fromkeys(STAGES, 0.0))

    def add_block(self, b: BlockResult) -> None:
        """Keep ``b`` in full; the oldest kept block beyond :data:`BLOCKS_KEPT` moves to ``earlier``."""
        self.blocks.append(b)
        if len(self.blocks) > BLOCKS_KEPT:
            self.earlier.absorb(self.blocks.pop(0))

    @property
    def n_blocks(self) -> int:
        return self.earlier.n + len(self.blocks)

    @property
    def aborted_blocks(self) -> int:
        return self.earlier.aborted + sum(b.abort for b in self.blocks)

    def as_dict(self, duration_s: float) -> dict[str, Any]:
        e = self.earlier
        h = sum((binary_entropy(b.qber_key) * b.sifted_bits for b in self.blocks if not b.abort or b.leaked_ec_bits),
                e.ec_entropy_bits)
        f = self.leaked_ec_bits / h if h > 0 else None
        pe = [b.report["phase_error_upper"] for b in self.blocks if b.report and b.report.get("phase_error_upper") is not None]
        pe_max = _max_or_none(e.phase_error_max, max(pe) if pe else None)
        tc, te = self.test_clicks, self.test_errors_x2
        return {
            "pair": self.pair,
            "n_slots": self.n_slots,
            "dropped_slots": self.dropped_slots,
            "sifted_bits": self.sifted_bits,
            "processed_bits": self.processed_bits,
            "dropped_bits": self.dropped_bits,
            "skipped_blocks": self.skipped_blocks,
            "error_rate": {
                "X_key": self.key_errors / self.processed_bits if self.processed_bits else None,
                "X_test": te.get("X", 0) / 2 / tc["X"] if tc.get("X", 0) >= MIN_RATE_CLICKS else None,
                "Y_test": te.get("Y", 0) / 2 / tc["Y"] if tc.get("Y", 0) >= MIN_RATE_CLICKS else None,
            },
            # what each rate is over (physics review s34 F4): X_key the bits error correction compared, the
            # tests their matched cells' clicks (PairCounts.matched_test_counts); X_key is None where its count is
            # 0, a test rate where its count is below MIN_RATE_CLICKS
            "error_rate_counts": {"X_key": int(self.processed_bits), "X_test": int(tc.get("X", 0)),
                                  "Y_test": int(tc.get("Y", 0))},
            "phase_error_bound": pe_max,
            "leaked_ec_bits": self.leaked_ec_bits,
            "verification_bits": self.verification_bits,
            "efficiency_f": f,
            "final_key_bits": self.final_key_bits,
            "auth_key_bits": self.auth_key_bits,
            "delivered_bits": self.delivered_bits,
            "secure_key_rate_bps": self.final_key_bits / duration_s if duration_s > 0 else None,
            "net_key_rate_bps": self.delivered_bits / duration_s if duration_s > 0 else None,
            "blocks": self.n_blocks,
            "block_slots": self.block_slots,
            "auth_checks": e.auth_checks + sum(b.auth_checks for b in self.blocks),
            "eps_auth": sum((b.eps_auth for b in self.blocks), e.eps_auth),
            "eps_total_per_block": _max_or_none(e.eps_total_max, max((b.eps_total for b in self.blocks), default=None)),
            "aborted_blocks": self.aborted_blocks,
            "abort_reasons": sorted(e.abort_reasons | {b.abort_reason for b in self.blocks if b.abort}),
            "times_s": dict(self.times_s),
        }


class KeySink(Protocol):
    """Where final keys go: one call per block with both ends' (identical) keys."""

    def deliver(self, pair: str, block_id: str, bits_i: np.ndarray, bits_j: np.ndarray, meta: dict[str, Any]) -> None: ...


@runtime_checkable
class AuthKeyStore(Protocol):
    """Optional capability of a :class:`KeySink` backed by the nodes' key stores: the Distiller
    takes the pairs' authentication key from it and refills it there (module docstring)."""

    def auth_supplies(self, pair: str) -> tuple[AuthKeySupply, AuthKeySupply]:
        """(Ci's, Cj's) supplies drawing the same bits from the two nodes' ``auth`` pools."""
        ...

    def auth_available(self, pair: str) -> int:
        """Bits Ci's next authentication draw could take (purpose ``auth``)."""
        ...

    def add_auth(self, pair: str, block_id: str, bits_i: np.ndarray, bits_j: np.ndarray, meta: dict[str, Any]) -> None:
        """Add a block to both ends' ``auth`` pools (refill or pre-shared bootstrap)."""
        ...

    def check_new(self, pair: str, block_ids: Iterable[str]) -> None:
        """Raise :class:`~labqfl.errors.KeyStoreError` if either end already holds one of these
        blocks (called before a block spends any authentication key)."""
        ...


@runtime_checkable
class DistilledSlotLedger(Protocol):
    """Optional capability of a :class:`KeySink`: remembers, per pair and acquisition, the slot
    ranges already distilled, so raw data is never distilled twice (module docstring)."""

    def claim_slots(self, pair: str, acquisition: str, start: int, end: int, block_id: str) -> None:
        """Record slots ``[start, end)`` of ``acquisition`` as distilled for ``pair`` at both ends;
        raise :class:`~labqfl.errors.KeyStoreError` (recording nothing) if they overlap a range
        recorded before."""
        ...

    def distilled_ranges(self, pair: str, acquisition: str) -> set[tuple[int, int]]:
        """The slot ranges ``(start, end)`` of ``acquisition`` recorded as distilled for ``pair`` at
        both ends (an earlier, perhaps interrupted, run of the same recording)."""
        ...


class MemorySink:
    """Keeps keys in memory (tests and benchmarks only; never logged or pickled)."""

    def __init__(self) -> None:
        self.keys: dict[str, list[tuple[np.ndarray, np.ndarray]]] = {}

    def deliver(self, pair: str, block_id: str, bits_i: np.ndarray, bits_j: np.ndarray, meta: dict[str, Any]) -> None:
        self.keys.setdefault(pair, []).append((bits_i.copy(), bits_j.copy()))

    def __repr__(self) -> str:
        return f"MemorySink(pairs={sorted(self.keys)})"


class KeyStoreSink:
    """Writes each block into both nodes' key stores under the same block ID, and is the pairs'
    authentication key source (:class:`AuthKeyStore`: purpose ``auth`` of the same stores)."""

    def __init__(self, stores: Mapping[str, Any], run_id: str = "",
                 prepare_pair: Callable[[Mapping[str, Any], list[str]], Any] | None = None) -> None:
        #: ``prepare_pair(stores, [pair])`` runs once per pair before the sink first uses it (the app
        #: layer passes :func:`labqfl.keystore.pairs.retire_one_sided_blocks`)
        self.stores = dict(stores)
        self.run_id = run_id
        self._prepare_pair = prepare_pair
        self._in_step: set[str] = set()

    def _ends(self, pair: str) -> tuple[Any, Any]:
        out = []
        for node in split_pair(pair):
            if node not in self.stores:
                raise QKDInputError(f"no key store for node {node!r}")
            out.append(self.stores[node])
        if pair not in self._in_step:  # e.g. a block an earlier process stored at one end only: retired there
            if self._prepare_pair is not None:
                self._prepare_pair(self.stores, [pair])
            self._in_step.add(pair)
        return out[0], out[1]

    def _add(self, pair: str, block_id: str, bits_i: np.ndarray, bits_j: np.ndarray, meta: dict[str, Any],
             purpose: str) -> None:
        for store, bits in zip(self._ends(pair), (bits_i, bits_j), strict=True):
            store.add_block(pair, bits, block_id=block_id, purpose=purpose, run_id=self.run_id, meta=meta)

    def deliver(self, pair: str, block_id: str, bits_i: np.ndarray, bits_j: np.ndarray, meta: dict[str, Any]) -> None:
        self._add(pair, block_id, bits_i, bits_j, meta, "general")

    def auth_supplies(self, pair: str) -> tuple[AuthKeySupply, AuthKeySupply]:
        si, sj = self._ends(pair)
        return keystore_auth_supplies(si, sj, pair)

    def auth_available(self, pair: str) -> int:
        # pool auth + general: exactly what KeyStore.take(pair, n, "auth") can draw
        return int(self._ends(pair)[0].available_bits(pair, "auth"))

    def add_auth(self, pair: str, block_id: str, bits_i: np.ndarray, bits_j: np.ndarray, meta: dict[str, Any]) -> None:
        self._add(pair, block_id, bits_i, bits_j, meta, "auth")

    def claim_slots(self, pair: str, acquisition: str, start: int, end: int, block_id: str) -> None:
        ends = self._ends(pair)
        for store in ends:  # check both ends first, so a refusal records nothing anywhere
            store.check_slots_free(pair, acquisition, start, end)
        for store in ends:
            store.claim_slots(pair, acquisition, start, end, block_id)

    def distilled_ranges(self, pair: str, acquisition: str) -> set[tuple[int, int]]:
        si, sj = self._ends(pair)
        return ({(a, b) for a, b, _ in si.distilled_slots(pair, acquisition)}
                & {(a, b) for a, b, _ in sj.distilled_slots(pair, acquisition)})

    def check_new(self, pair: str, block_ids: Iterable[str]) -> None:
        ids = list(block_ids)
        for store in self._ends(pair):
            for bid in ids:
                if store.has_block(bid):
                    raise KeyStoreError(f"block {bid} is already in key store {store.path}; refusing to add it twice "
                                        f"(this acquisition was distilled into the store before)")


def _no_auth_key(pair: str, have: int, need: int, s: DistillSettings) -> InsufficientKeyError:
    return InsufficientKeyError(
        f"pair {pair}: the key stores' authentication pool holds {have} bits, {need} needed to authenticate "
        f"the next block, and bootstrapping is disabled: load at least {need} bits (recommended "
        f"{s.preshared_auth_bits}) of the pair's pre-shared secret into both nodes' stores, purpose 'auth' "
        f"(`labqfl keys preshare --pair {pair} --file SECRET`)")


def check_auth_key(store: AuthKeyStore, pairs: Iterable[str], settings: DistillSettings) -> None:
    """Raise :class:`~labqfl.errors.InsufficientKeyError` (the Distiller's refusal with
    ``bootstrap_auth=False``) for the first of ``pairs`` whose store cannot pay for a new
    Distiller's first block's authentication; lets a caller refuse before it starts an acquisition."""
    need = _auth_bits_per_block(settings.auth_lanes, first=True)
    for pair in pairs:
        have = store.auth_available(pair)
        if have < need:
            raise _no_auth_key(pair, have, need, settings)


def block_slots_for(cfg: StationConfig, pair: tuple[str, str], block_bits: int) -> int:
    """Slots of ``pair`` per block that hold ``block_bits`` sifted bits on average, from the
    station model alone (:func:`labqfl.qkd.keyrate.expected_counts` of the analytical loop
    model), so the block size N is fixed before any data is seen (docs/protocol.md §5.1)."""
    from labqfl.contracts.channel_model import pair_channel
    from labqfl.contracts.types import KEY_BASIS, KEY_INTENSITY_INDEX
    from labqfl.qkd.keyrate import expected_counts

    k0, b0 = KEY_INTENSITY_INDEX, KEY_BASIS
    per_slot = float(expected_counts(pair_channel(cfg, *pair), 1.0).clicks[k0, k0, b0, b0])
    if not per_slot > 0.0 or not math.isfinite(per_slot):
        raise QKDInputError(f"pair {pair[0]}-{pair[1]}: the station model expects no sifted bits per slot, so "
                            f"block_bits cannot be converted into a block size; give DistillSettings(block_slots=...)")
    return max(1000, math.ceil(block_bits / per_slot))


#: A full block with fewer sifted bits is dropped instead of distilled (the smallest ``block_bits``).
_MIN_BLOCK_BITS = 1000


def _pair_slot_end(schedule: PairSchedule, pair: str, m: int) -> int:
    """Smallest acquisition slot g with ``schedule.slots_of_pair(pair, g) == m`` (the end, exclusive,
    of the pair's first ``m`` slots)."""
    return schedule.slot_end(pair, m)


def _preshared_bits(nbits: int) -> np.ndarray:
    """Fresh pre-shared authentication key from the OS CSPRNG (uint8 0/1, shape (nbits,))."""
    return np.unpackbits(np.frombuffer(secrets.token_bytes(nbits // 8), np.uint8))


@dataclass
class _BlockRun:
    """One block on its way through :meth:`Distiller._process_block`: its ID and slot range, the
    two ends' outcomes, the stage times, and the authentication it spent (bits of key, tag
    checks, their forgery probability ε_auth)."""

    block_id: str
    start: int
    end: int
    n_slots: int
    oi: BlockOutcome | None = None
    oj: BlockOutcome | None = None
    times: dict[str, float] = field(default_factory=lambda: dict.fromkeys(STAGES, 0.0))
    auth_bits: int = 0
    checks: int = 0
    eps_auth: float = 0.0
    efficiency_f: float = float("nan")
    report: dict[str, Any] | None = None


class _PairState:
    """The Distiller's view of one pair: its two ends (each built from its own client's data only),
    the channel between them, and the block bookkeeping."""

    def __init__(self, pair: str, end_i: PairEndI, end_j: PairEndJ, channel: Channel,
                 pools: tuple[BitPool, BitPool] | None) -> None:
        self.pair = pair
        self.end_i, self.end_j, self.channel = end_i, end_j, channel
        self.result = PairResult(pair)
        #: the current block: its index and first acquisition slot (block k holds the pair's
        #: slots [k·N, (k+1)·N), N = block_slots)
        self.block_index = 0
        self.block_start = 0
        self.pool_i: BitPool | None = pools[0] if pools else None
        self.pool_j: BitPool | None = pools[1] if pools else None

    @property
    def auth_i(self) -> TranscriptAuthenticator:
        return self.end_i.auth

    @property
    def auth_j(self) -> TranscriptAuthenticator:
        return self.end_j.auth

    @property
    def n_bits(self) -> int:
        """Sifted bits of the current block (Ci's count; Cj checks it at ``block/open``)."""
        return self.end_i.n_bits


def local_pair_channel(end_i: PairEndI, end_j: PairEndJ) -> Channel:
    """The in-process deployment: Cj's end answers Ci's directly; every message is encoded, absorbed
    by the sender's transcript and decoded and absorbed by the receiver's (no shared objects)."""
    return LocalChannel(end_j, authenticator=end_i.tx, peer_authenticator=end_j.tx)


class _PlayedGate:
    """The played-frames records of the clients whose logs answer for played frames only (a log with a
    :class:`~labqfl.instruments.interfaces.PlayedFrames` ``record``: :class:`labqfl.modulation.PlayedChoiceLog`,
    live while the client streams to its pattern generator, or read from a recording).

    * Slots are sifted only once every such client's record has a verdict for their frame: the
      announcements from that frontier on are held back until the verdicts arrive (a generator
      reports a frame after playing it) or the stream ends (:meth:`hold`).
    * The announced slots of a frame that either client of a pair did not play (lost, or no verdict
      at the end) are dropped at both ends and counted as dropped slots (:meth:`drop_unplayed`), as
      slotting drops an unmarked frame: its slots never reach a client's log, so never a wrong key.
    """

    def __init__(self, logs: Mapping[str, Any]) -> None:
        self.records: dict[str, PlayedFrames] = {}
        for c, lg in logs.items():
            rec = getattr(lg, "record", None)
            if isinstance(rec, PlayedFrames):
                self.records[c] = rec
        self._next = dict.fromkeys(self.records, 0)  # per client: first frame without a verdict
        self._pending: dict[str, Announcements] = {}

    def __bool__(self) -> bool:
        return bool(self.records)

    def frontier(self) -> int:
        """The first slot whose frame has no verdict yet at some client (verdicts come in frame order)."""
        out: int | None = None
        for c, rec in self.records.items():
            n = self._next[c]
            while rec.status(n) is not None:
                n += 1
            self._next[c] = n
            out = n * rec.frame_slots if out is None else min(out, n * rec.frame_slots)
        return 0 if out is None else out

    def hold(self, anns: dict[str, Announcements], final_slots: int, lo: int,
             final: bool) -> tuple[int, dict[str, Announcements]]:
        """(slots ready to sift, each pair's announcements below it); the rest waits for the next call."""
        ready = final_slots if final else max(lo, min(final_slots, self.frontier()))
        out: dict[str, Announcements] = {}
        for name, ann in anns.items():
            prev = self._pending.pop(name, None)
            if prev is not None:
                ann = Announcements(name, np.concatenate([prev.slots, ann.slots]),
                                    np.concatenate([prev.outcomes, ann.outcomes]))
            k = int(np.searchsorted(ann.slots, ready))
            out[name] = Announcements(name, ann.slots[:k], ann.outcomes[:k])
            if k < ann.slots.size:
                self._pending[name] = Announcements(name, ann.slots[k:], ann.outcomes[k:])
        return ready, out

    def drop_unplayed(self, ann: Announcements, clients: tuple[str, str], lo: int,
                      hi: int) -> tuple[Announcements, list[tuple[int, int]]]:
        """(``ann`` without the slots of frames a client did not play, those frames' slot ranges in [lo, hi))."""
        recs = [self.records[c] for c in clients if c in self.records]
        if not recs:
            return ann, []
        ok = np.ones(ann.slots.size, dtype=bool)
        bad: list[tuple[int, int]] = []
        for rec in recs:
            ok &= rec.slot_mask(ann.slots)
            f_slots = rec.frame_slots
            for f in range(lo // f_slots, -(-hi // f_slots)):
                if rec.status(f) is not True:
                    bad.append((max(lo, f * f_slots), min(hi, (f + 1) * f_slots)))
        merged: list[tuple[int, int]] = []
        for x, y in sorted(bad):
            if merged and x <= merged[-1][1]:
                merged[-1] = (merged[-1][0], max(merged[-1][1], y))
            else:
                merged.append((x, y))
        part = ann if ok.all() else Announcements(ann.pair, ann.slots[ok], ann.outcomes[ok])
        return part, merged


class Distiller:
    """Streaming orchestrator. ``push`` tag blocks, then ``finish``; see the module docstring.

    ``logs``: each client's own :class:`ModulationLog` (by client name). ``sink``: where keys
    go. ``rng``: the Cj ends' squashing randomness (default: an OS-seeded generator per end; a
    given one is shared by the ends, for reproducible runs). ``pair_channel(end_i, end_j)``: the
    channel from each pair's Ci end to its Cj end (default :func:`local_pair_channel`, in
    process; a :class:`~labqfl.net.transport.NodeChannel` to a node serving ``end_j`` runs the
    same protocol between processes). ``stop()``: asked between the stages; true stops the
    Distiller for good, abandoning the blocks in progress (module docstring, "Stopping").

    This is the in-process deployment: it holds both ends of every pair, but each end is built
    from its own client's data only and they talk only through the channel
    (:mod:`labqfl.qkd.twoparty`); the Distiller keeps the schedule, the block boundaries and the
    key stores.
    """

    def __init__(self, cfg: StationConfig, logs: Mapping[str, ModulationLog], sink: KeySink,
                 settings: DistillSettings | None = None, *, slotting: SlottingParams | None = None,
                 rng: np.random.Generator | None = None,
                 progress: Callable[[str], None] | None = None,
                 acquisition_id: str | None = None,
                 pair_channel: Callable[[PairEndI, PairEndJ], Channel] | None = None,
                 stop: Callable[[], bool] | None = None) -> None:
        self.cfg = cfg
        self._stop = stop
        #: set once ``stop()`` answered true (or :meth:`abandon`): nothing more is processed
        self.stopped = False
        self.acquisition_id = acquisition_id
        #: per pair, the block ranges an earlier run of this acquisition distilled (read once)
        self._earlier: dict[str, set[tuple[int, int]]] = {}
        self.settings = settings or DistillSettings()
        self.reconcile = _engine(self.settings.engine)
        self.schedule = PairSchedule.from_config(cfg)
        self.slotter = make_slotter(slotting or SlottingParams.from_config(cfg), self.schedule)
        self.logs = dict(logs)
        for a, b in cfg.pairs():
            for c in (a, b):
                if c not in self.logs:
                    raise QKDInputError(f"no modulation log for client {c!r}")
        self.sink = sink
        #: the sink's key stores are the authentication key source (else in-memory pools)
        self.auth_store: AuthKeyStore | None = sink if isinstance(sink, AuthKeyStore) else None
        #: the sink's record of distilled slot ranges (used with a known acquisition only)
        self.ledger: DistilledSlotLedger | None = sink if isinstance(sink, DistilledSlotLedger) else None
        self.progress = progress
        self.pair_channel = pair_channel or local_pair_channel
        s = self.settings
        # the station's declared intensity calibration uncertainty δ enters every block's analysis (docs/protocol.md (P10))
        params = s.params.with_intensity_rel_uncertainty(cfg.intensity_rel_uncertainty())
        proto = ProtocolSettings(engine=s.engine, params=params, auth_lanes=s.auth_lanes, qber_floor=s.qber_floor,
                                 qber_default=s.qber_default)
        self.pairs: dict[str, _PairState] = {}
        for name, (a, b) in zip(self.schedule.names, self.schedule.pairs, strict=True):
            # each end gets its own client's log, its own key supply, the public setups; nothing else
            setup_i, setup_j = ClientSetup.from_config(cfg.client(a)), ClientSetup.from_config(cfg.client(b))
            pools: tuple[BitPool, BitPool] | None = None
            if self.auth_store is not None:
                sup_i, sup_j = self.auth_store.auth_supplies(name)
            else:  # in-memory pre-shared pool for this Distiller's lifetime
                pre = _preshared_bits(s.preshared_auth_bits)
                pools = (BitPool(pre), BitPool(pre.copy()))
                sup_i, sup_j = pools
            squash = rng if rng is not None else np.random.default_rng(secrets.randbits(128))
            end_i = PairEndI(name, self.logs[a], setup_i, setup_j, proto, sup_i, schedule=self.schedule)
            end_j = PairEndJ(name, self.logs[b], setup_i, setup_j, proto, sup_j, squash, schedule=self.schedule)
            self.pairs[name] = _PairState(name, end_i, end_j, self.pair_channel(end_i, end_j), pools)
        #: slots of each pair per block, fixed here, before any data (docs/protocol.md §5.1)
        self.block_slots: dict[str, int] = {}
        for name, pr in zip(self.schedule.names, self.schedule.pairs, strict=True):
            bs = (self.settings.pair_block_slots or {}).get(name, self.settings.block_slots)
            self.block_slots[name] = int(bs) if bs is not None else block_slots_for(cfg, pr, self.settings.block_bits)
            self.pairs[name].result.block_slots = self.block_slots[name]
            # the transcript length cap of every block of the pair, fixed with its size before any data: an end
            # refuses a longer transcript, and the forgery bound (eps_auth) is the cap's (review s32)
            cap = transcript_word_cap(self.block_slots[name])
            self.pairs[name].end_i.auth.max_words = self.pairs[name].end_j.auth.max_words = cap
        if self.auth_store is not None and not self.settings.bootstrap_auth:
            for st in self.pairs.values():  # fail before any acquisition, not at the first block
                self._ensure_auth_key(st)
        self._final_slots = 0
        self._slot_time = 0.0
        self._finished = False
        #: slotted clicks not yet sifted (DistillSettings.sift_batch_clicks/slots)
        self._batch: list[SlotEvents] = []
        self._batch_clicks = 0
        #: streaming clients' played frames: sift only what has a verdict, drop what was not played
        self._played = _PlayedGate(self.logs)
        self._clients = dict(zip(self.schedule.names, self.schedule.pairs, strict=True))

    # -- streaming ---------------------------------------------------------------------------
    def push(self, block: TagBlock) -> list[BlockResult]:
        """Slot one tag block; sift when the batch is full (``DistillSettings.sift_batch_clicks``,
        ``sift_batch_slots``); the key blocks that closed. A stopped Distiller takes nothing."""
        if self.stopped:
            return []
        t0 = time.perf_counter()
        events = self.slotter.push(block)
        self._slot_time += time.perf_counter() - t0
        self._batch.append(events)
        self._batch_clicks += len(events)
        s, fs = self.settings, self.slotter.final_slots
        if self._batch_clicks < s.sift_batch_clicks and fs - self._final_slots < s.sift_batch_slots:
            return []
        return self._after_slotting(self._take_batch(), fs, final=False)

    def sift_held(self) -> list[BlockResult]:
        """Sift now what was slotted and is held for the next batch, as a full batch would be;
        the key blocks that closed. The stream goes on: the batch boundaries change no key bit,
        count or block boundary (tests/qkd/pipeline/test_sift_batches.py), so an owner may call
        this after any push, e.g. a benchmark that charges the sifting of every pushed tag to the
        pushes. A stopped or finished Distiller takes nothing."""
        if self.stopped or self._finished:
            return []
        fs = self.slotter.final_slots
        if not self._batch and fs == self._final_slots:
            return []
        return self._after_slotting(self._take_batch(), fs, final=False)

    def _take_batch(self, more: SlotEvents | None = None) -> list[SlotEvents]:
        """The held slotted clicks (and ``more``): the pushes' outputs in slot order, split by pair as one
        (:func:`~labqfl.qkd.slotting.announcements_by_pair` takes the parts: no joined copy)."""
        parts = self._batch + ([more] if more is not None else [])
        self._batch, self._batch_clicks = [], 0
        return parts

    def finish(self, total_slots: int | None = None) -> dict[str, PairResult]:
        """End of stream: flush, process the remaining blocks, return per-pair results (a stopped
        Distiller processes nothing more and returns the results so far)."""
        if self._finished:
            raise QKDInputError("Distiller.finish() called twice")
        self._finished = True
        if self.stopped:
            return {k: p.result for k, p in self.pairs.items()}
        t0 = time.perf_counter()
        events = self._take_batch(self.slotter.finish())
        self._slot_time += time.perf_counter() - t0
        n = self.slotter.final_slots if total_slots is None else max(int(total_slots), self.slotter.last_emitted + 1)
        self._after_slotting(events, n, final=True)
        # slotting is shared by all pairs: attribute it by their share of clicks
        tot = sum(p.result.sifted_bits for p in self.pairs.values()) or 1
        for p in self.pairs.values():
            p.result.times_s["slotting"] = self._slot_time * p.result.sifted_bits / tot
        return {k: p.result for k, p in self.pairs.items()}

    @property
    def n_slots(self) -> int:
        return self._final_slots

    def held_bytes(self) -> dict[str, int]:
        """Per pair, the bytes both ends hold in memory for the current block until it closes
        (packed key bits, held-back transcript entries; :meth:`PairEndI.held_bytes`). Bounded per
        end: beyond a few MB the transcript entries are spooled to a temporary file
        (:mod:`labqfl.qkd.spool`). The slotted clicks held for the next sifting batch, shared by
        all pairs, are counted in equal parts."""
        batch = sum(e.slots.nbytes + e.outcomes.nbytes for e in self._batch) // max(len(self.pairs), 1)
        return {name: st.end_i.held_bytes() + st.end_j.held_bytes() + batch for name, st in self.pairs.items()}

    def _block_id(self, pair: str, start: int, end: int) -> str:
        """Deterministic for a known acquisition: derived from the pair and the block's slot range
        ``[start, end)`` (so the same block distilled twice is refused by the key store's unique
        block IDs, and any other block over the same slots by the ledger of distilled slots);
        random otherwise."""
        if self.acquisition_id is None:
            return str(uuid.uuid4())
        return str(uuid.uuid5(_BLOCK_NAMESPACE, f"{self.acquisition_id}/{pair}/slots/{start}-{end}"))

    def _block_end(self, st: _PairState) -> int:
        """Acquisition slot (exclusive) where the pair's current block ends: fixed in advance."""
        return _pair_slot_end(self.schedule, st.pair, (st.block_index + 1) * self.block_slots[st.pair])

    def _ensure_auth_key(self, st: _PairState) -> None:
        """With key stores: make sure Ci's store can pay for the next block's authentication;
        bootstrap the pair with a simulated pre-shared block if not (or refuse, see settings)."""
        store = self.auth_store
        if store is None:
            return
        s = self.settings
        need = _auth_bits_per_block(s.auth_lanes, first=st.auth_i.key_bits_used == 0)
        have = store.auth_available(st.pair)
        if have >= need:
            return
        if not s.bootstrap_auth:
            raise _no_auth_key(st.pair, have, need, s)
        bits = _preshared_bits(s.preshared_auth_bits)
        block_id = f"{PRESHARED_PREFIX}{uuid.uuid4()}"
        store.add_auth(st.pair, block_id, bits, bits.copy(),
                       {"kind": "preshared-auth", "simulated": True, "nbits": int(bits.size)})
        log.info("pair %s: authentication pool bootstrapped with %d pre-shared bits (simulated out-of-band delivery; "
                 "block %s)", st.pair, bits.size, block_id)

    def _after_slotting(self, events: Any, final_slots: int, final: bool) -> list[BlockResult]:
        prev = self._final_slots
        anns = announcements_by_pair(events, self.schedule)
        if self._played:  # slots of frames still without a verdict wait for it
            final_slots, anns = self._played.hold(anns, final_slots, prev, final)
        self._final_slots = final_slots
        out: list[BlockResult] = []
        for name, ann in anns.items():
            if self._stop_requested():
                break
            self._advance_pair(self.pairs[name], ann, prev, final_slots, out)
        if final:  # the rest: N = the pair's slots up to the end of the acquisition
            for st in self.pairs.values():
                if self._stop_requested():
                    break
                thr = (self.settings.pair_min_final_block_bits or {}).get(st.pair, self.settings.min_final_block_bits)
                if st.n_bits >= thr or st.end_i.refused:
                    self._close_block(st, final_slots, out)
                elif st.n_bits:
                    self._drop_block(st, final_slots)
                else:  # announcements or slots without a sifted bit: forget them at both ends (drop_block)
                    st.end_i.drop_block(st.channel)
        if self.stopped:
            self.abandon()
        return out

    def _advance_pair(self, st: _PairState, ann: Announcements, lo: int, final_slots: int,
                      out: list[BlockResult]) -> None:
        """Sift the pair's announcements of ``[lo, final_slots)`` into its blocks, closing (into
        ``out``) or dropping each block whose fixed slot count is reached; a stop ends it before a
        block claims its slots."""
        while not self._stop_requested():  # a chunk may close several blocks, each at its fixed slot count
            end = self._block_end(st)
            hi = min(final_slots, end)
            if hi > lo:
                self._sift_into(st, ann, lo, hi)
                lo = hi
            if hi < end or self._stop_requested():
                return
            if st.n_bits >= _MIN_BLOCK_BITS or st.end_i.refused:
                self._close_block(st, end, out)
            else:  # (almost) no light in this block: nothing worth disclosing parities for
                self._drop_block(st, end)

    def _stop_requested(self) -> bool:
        """Whether the owner asked to stop (``stop()``, latched in :attr:`stopped`)."""
        if not self.stopped and self._stop is not None and self._stop():
            self.stopped = True
            log.info("distillation stopped by user: the key blocks in progress are abandoned at both ends "
                     "(nothing of them is stored)")
        return self.stopped

    def abandon(self) -> None:
        """Stop for good: every pair's block not yet closed is forgotten at both ends (only public
        sifting messages were exchanged for it: nothing is claimed, spent or stored, as for a dropped
        block); :meth:`push` and :meth:`finish` process nothing more. Blocks already closed are not
        touched (a block inside the protocol when the stop came ended as an abort)."""
        self.stopped = True
        for st in self.pairs.values():
            if st.end_i.exchanged or st.n_bits:
                st.end_i.drop_block(st.channel)

    def _drop_block(self, st: _PairState, end: int) -> None:
        """Discard the pair's current block unused (no key bit disclosed: only the public sifting
        messages were exchanged, and their transcript is dropped at both ends, so its slots are
        not claimed); its sifted bits are reported as dropped."""
        st.result.dropped_bits += st.n_bits
        st.end_i.drop_block(st.channel)
        st.block_index += 1
        st.block_start = end

    def block_ranges(self, pair: str, total_slots: int) -> list[tuple[int, int]]:
        """The slot ranges ``[start, end)`` of the pair's blocks over an acquisition of ``total_slots`` slots, as
        :meth:`_advance_pair` and :meth:`finish` cut them: block k ends where the pair's (k+1)·N-th slot ends
        (N: its ``block_slots``), the last at ``total_slots``; a last range holding none of the pair's slots is
        no block."""
        n, have = self.block_slots[pair], self.schedule.slots_of_pair(pair, total_slots)
        out, start, k = [], 0, 0
        while k * n < have:
            end = min(_pair_slot_end(self.schedule, pair, (k + 1) * n), total_slots)
            out.append((start, end))
            start, k = end, k + 1
        return out

    def distilled_before(self, total_slots: int) -> list[str]:
        """The pairs each of whose blocks over an acquisition of ``total_slots`` slots (:meth:`block_ranges`) an
        earlier run of this acquisition recorded as distilled at both ends; [] without a ledger or an acquisition
        ID. Asked before any data is slotted: where it names every pair, a run would skip every block
        (:meth:`_close_block`) and store nothing, so the recording is refused at once (review s38 user F6: after
        the whole post-processing, leaving a run folder). A block an earlier run dropped (too few sifted bits) is
        not recorded, so its pair is not named here (the blocks are skipped as before). A block whose slots overlap
        a range recorded as another block (another block size) raises the :class:`KeyStoreError` its claim would
        raise after the block's slotting and sifting."""
        if self.ledger is None or self.acquisition_id is None:
            return []
        out = []
        for pair in self.pairs:
            ranges, done = self.block_ranges(pair, total_slots), self.ledger.distilled_ranges(pair, self.acquisition_id)
            for start, end in ranges:  # a block over slots distilled before as another block: refused now, not later
                clash = next(((a, b) for a, b in sorted(done) if a < end and start < b and (a, b) != (start, end)), None)
                if clash is not None:
                    raise KeyStoreError(
                        f"pair {pair}: its block over slots [{start}, {end}) of this acquisition overlaps slots "
                        f"[{clash[0]}, {clash[1]}) that an earlier run distilled into these stores as another block "
                        "(another block size?): distilling raw data twice is refused; distil it with the earlier "
                        "run's block size, which skips what that run distilled")
            if ranges and set(ranges) <= done:
                out.append(pair)
        return out

    def _distilled_before(self, st: _PairState, end: int) -> bool:
        """Whether an earlier run of this acquisition recorded the block ``[st.block_start, end)`` as
        distilled at both ends (its key stored, or its raw bits spent by an abort or an interruption)."""
        if self.ledger is None or self.acquisition_id is None:
            return False
        done = self._earlier.get(st.pair)
        if done is None:
            done = self._earlier[st.pair] = self.ledger.distilled_ranges(st.pair, self.acquisition_id)
        return (st.block_start, end) in done

    def _close_block(self, st: _PairState, end: int, out: list[BlockResult]) -> None:
        """Distil the pair's block ending at ``end`` into ``out`` — or, if an earlier run of this
        acquisition distilled it, discard it: only its public sifting messages were exchanged again
        (the same test-round values); nothing is claimed, stored or spent."""
        if not self._distilled_before(st, end):
            out.append(self._process_block(st, end))
            return
        log.info("pair %s: slots [%d, %d) were distilled by an earlier run of this acquisition; skipped",
                 st.pair, st.block_start, end)
        st.end_i.drop_block(st.channel)
        st.result.skipped_blocks += 1
        st.block_index += 1
        st.block_start = end

    def _sift_into(self, st: _PairState, ann: Announcements, lo: int, hi: int) -> None:
        """Sift the pair's announced slots in ``[lo, hi)`` into its current block: the detector
        delivers its announcements to both clients, Ci's end sifts with Cj's over the channel."""
        name = st.pair
        a, b = np.searchsorted(ann.slots, [lo, hi])
        part = ann if (a, b) == (0, ann.slots.size) else Announcements(name, ann.slots[a:b], ann.outcomes[a:b])
        # slots dropped by slotting (lost tagger data, unmarked frames) were sent: they count in N as
        # sent without a click (docs/protocol.md §5.1), so N stays the block's fixed slot count
        dropped = self.slotter.dropped_slots_of_pair(self.schedule, name, lo, hi)
        if self._played:  # frames a client did not play: dropped and counted as slotting's are
            part, unplayed = self._played.drop_unplayed(part, self._clients[name], lo, hi)
            dropped += sum(self.schedule.slots_of_pair(name, y) - self.schedule.slots_of_pair(name, x)
                           - self.slotter.dropped_slots_of_pair(self.schedule, name, x, y) for x, y in unplayed)
        n_slots = self.schedule.slots_of_pair(name, hi) - self.schedule.slots_of_pair(name, lo)
        st.result.dropped_slots += dropped
        ts = time.perf_counter()
        st.end_j.receive(part, lo, hi, n_slots)
        res = st.end_i.sift_chunk(st.channel, part, lo, hi, n_slots)
        st.result.times_s["sifting"] += time.perf_counter() - ts
        st.result.n_slots += n_slots
        st.result.sifted_bits += res.n_key
        for basis, bb in (("X", 0), ("Y", 1)):
            clicks, errs_x2 = res.counts.matched_test_counts(bases=(bb,))
            st.result.test_clicks[basis] = st.result.test_clicks.get(basis, 0) + clicks
            st.result.test_errors_x2[basis] = st.result.test_errors_x2.get(basis, 0) + errs_x2

    # -- one block ---------------------------------------------------------------------------
    def _process_block(self, st: _PairState, end: int) -> BlockResult:
        """Distil the pair's current block, which covers acquisition slots [st.block_start, end):
        Ci's end runs the protocol with Cj's (:meth:`PairEndI.run_block`); a key is stored only
        when both ends accepted it.

        The stages, each a named step: :meth:`_open_block` (block ID, store and ledger checks,
        authentication key), :meth:`_run_block_protocol` (reconciliation, verification, parameter
        estimation and key length, privacy amplification, at both ends), then either
        :meth:`_finish_block` with an abort, or :meth:`_deliver_block` (refill of the
        authentication pools, delivery) and :meth:`_finish_block`."""
        run = self._open_block(st, end)
        self._run_block_protocol(st, run)
        oi, oj = run.oi, run.oj
        assert oi is not None
        final_i = oi.final if oi.accepted else None
        final_j = oj.final if oj is not None and oj.accepted else None
        if final_i is None or final_j is None:
            reason = oi.reason or (oj.reason if oj is not None else "") or "Cj did not accept the block"
            return self._finish_block(st, run, keys_identical=oi.verified, final_key_bits=0, delivered_bits=0,
                                      abort=True, abort_reason=reason)
        ell = int(final_i.size)
        if not np.array_equal(final_i, final_j):
            # the verification hash collided (probability ≤ ε_cor) or a party misbehaved: the two
            # ends do not share this key, so neither stores it — no delivery and no refill of the
            # authentication pools (their pads, already consumed in step, stay spent and counted).
            # Only the in-process deployment can see this; between nodes it is the ε_cor event.
            return self._finish_block(st, run, keys_identical=False, final_key_bits=0, delivered_bits=0, abort=True,
                                      abort_reason="final keys differ although verification passed; block refused "
                                                   "at both ends")
        delivered = self._deliver_block(st, run, final_i, final_j)
        return self._finish_block(st, run, keys_identical=True, final_key_bits=ell, delivered_bits=delivered,
                                  abort=False, abort_reason="")

    def _open_block(self, st: _PairState, end: int) -> _BlockRun:
        """Close the pair's current block at ``end`` and prepare it for distillation: its block
        ID, the key store's refusal of a block already stored, the ledger's claim on its slots,
        and an authentication key for its messages."""
        counts = st.end_i.counts
        n_slots = int(counts.n_slots) if counts is not None else 0
        start = st.block_start
        st.block_index += 1
        st.block_start = end
        block_id = self._block_id(st.pair, start, end)
        if self.auth_store is not None:
            # before any key is spent: a block already stored (same acquisition distilled twice)
            # is refused here, so the refusal costs no authentication key either
            self.auth_store.check_new(st.pair, (block_id, block_id + AUTH_REFILL_SUFFIX))
        if self.ledger is not None and self.acquisition_id is not None:
            # the raw data of these slots is spent from here on (reconciliation discloses
            # parities), whether the block ends in a key or in an abort
            self.ledger.claim_slots(st.pair, self.acquisition_id, start, end, block_id)
        if self.auth_store is not None:
            self._ensure_auth_key(st)
        return _BlockRun(block_id=block_id, start=start, end=end, n_slots=n_slots)

    def _run_block_protocol(self, st: _PairState, run: _BlockRun) -> None:
        """Run the two-party protocol on the block (reconciliation, verification, parameter
        estimation and key length, privacy amplification: :meth:`PairEndI.run_block`) and record
        in ``run`` both ends' outcomes, the stage times, the authentication key it spent and the
        forgery probability of its tag checks."""
        auth_before = st.auth_i.key_bits_used
        checks_before = st.auth_i.checks + st.auth_j.checks
        before_j = len(st.end_j.outcomes)
        oi = st.end_i.run_block(st.channel, run.block_id, run.start, run.end,
                                stop=self._stop_requested if self._stop is not None else None)
        run.oj = st.end_j.outcomes.pop() if len(st.end_j.outcomes) > before_j else None
        st.end_j.outcomes.clear()
        run.oi = oi
        for k, v in oi.times.items():
            run.times[k] += v
        run.auth_bits = st.auth_i.key_bits_used - auth_before
        run.checks = st.auth_i.checks + st.auth_j.checks - checks_before
        n, qber, leak = oi.n, oi.qber, oi.leak
        run.efficiency_f = leak / (n * binary_entropy(qber)) if binary_entropy(qber) > 0 else float("nan")
        run.report = oi.report.as_dict() if oi.report is not None else None
        run.eps_auth = transcript_forgery_probability(st.auth_i, st.auth_j, run.checks)

    def _deliver_block(self, st: _PairState, run: _BlockRun, final_i: np.ndarray, final_j: np.ndarray) -> int:
        """Refill the authentication pools with what this block's messages consumed, deliver the
        rest to the sink with its metadata and provenance; returns the delivered bit count."""
        s = self.settings
        oi = run.oi
        assert oi is not None
        t = time.perf_counter()
        ell = int(final_i.size)
        auth_bits, eps_auth = run.auth_bits, run.eps_auth
        refill = min(auth_bits, ell)
        meta = {"engine": s.engine, "sifted_bits": oi.n, "qber": oi.qber, "leaked_ec_bits": oi.leak,
                "final_key_bits": ell, "eps_sec": s.params.eps_sec, "eps_cor": s.params.eps_cor, "eps_auth": eps_auth,
                "eps_total": epsilon_total(s.params, eps_auth), "acquisition": self.acquisition_id,
                "slots": [run.start, run.end], "n_slots": run.n_slots}
        from labqfl.provenance import (
            pair_provenance,  # physical layer, clients' randomness, protocol, ε
        )

        a_, b_ = self.schedule.pairs[self.schedule.names.index(st.pair)]
        meta["provenance"] = pair_provenance(self.cfg, (a_, b_), self.logs, eps_sec=s.params.eps_sec,
                                             eps_cor=s.params.eps_cor, eps_auth=eps_auth,
                                             eps_total=epsilon_total(s.params, eps_auth)).as_dict()
        block_id = run.block_id
        if self.auth_store is not None:
            if refill:
                self.auth_store.add_auth(st.pair, block_id + AUTH_REFILL_SUFFIX, final_i[:refill], final_j[:refill],
                                         {**meta, "kind": "auth-refill", "key_block": block_id, "auth_key_bits": auth_bits})
        else:
            assert st.pool_i is not None and st.pool_j is not None
            st.pool_i.add(final_i[:refill])
            st.pool_j.add(final_j[:refill])
        deliver_i, deliver_j = final_i[refill:], final_j[refill:]
        if deliver_i.size:
            self.sink.deliver(st.pair, block_id, deliver_i, deliver_j, meta)
        run.times["delivery"] = time.perf_counter() - t
        return int(deliver_i.size)

    def _finish_block(self, st: _PairState, run: _BlockRun, **kw: Any) -> BlockResult:
        """The block's :class:`BlockResult` (``kw``: its outcome — keys identical, final and
        delivered bits, abort and reason), added to the pair's running totals, logged and
        reported to the progress callback."""
        s = self.settings
        oi = run.oi
        assert oi is not None
        n = oi.n
        eps_auth, auth_bits, times = run.eps_auth, run.auth_bits, run.times
        br = BlockResult(pair=st.pair, block_id=run.block_id, n_slots=run.n_slots, sifted_bits=n,
                         qber_estimate=oi.qber_estimate, auth_key_bits=auth_bits, times_s=times,
                         slot_start=run.start, slot_end=run.end, auth_checks=run.checks, eps_auth=eps_auth,
                         eps_total=epsilon_total(s.params, eps_auth), report=run.report, qber_key=oi.qber,
                         leaked_ec_bits=oi.leak, efficiency_f=run.efficiency_f, verification_bits=oi.tlen, verified=oi.verified, **kw)
        if br.report is not None:
            br.report["eps_auth"] = eps_auth
            br.report["eps_total"] = br.eps_total
        r = st.result
        r.add_block(br)
        r.processed_bits += n
        r.leaked_ec_bits += br.leaked_ec_bits
        r.verification_bits += br.verification_bits
        r.final_key_bits += br.final_key_bits
        r.auth_key_bits += auth_bits
        r.delivered_bits += br.delivered_bits
        r.key_errors += int(round(br.qber_key * n))
        for k, v in times.items():
            r.times_s[k] += v
        log.info("block %s of %s: slots [%d, %d), %d sifted bits, QBER %.4f, final %d bits%s", run.block_id[:8],
                 st.pair, run.start, run.end, n, br.qber_key, br.final_key_bits,
                 f" (abort: {br.abort_reason})" if br.abort else "")
        if self.progress:
            self.progress(st.pair)
        return br


def distill_stream(cfg: StationConfig, blocks: Iterable[TagBlock], logs: Mapping[str, ModulationLog], sink: KeySink,
                   settings: DistillSettings | None = None, total_slots: int | None = None,
                   **kw: Any) -> tuple[dict[str, PairResult], Distiller]:
    """Run a whole stream through a :class:`Distiller`; returns (per-pair results, distiller)."""
    d = Distiller(cfg, logs, sink, settings, **kw)
    for b in blocks:
        d.push(b)
    return d.finish(total_slots), d
