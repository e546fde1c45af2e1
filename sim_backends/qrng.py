"""Counter-based random numbers for the simulator and the clients' QRNGs.

Every random quantity of the simulator is a pure function of a 64-bit key and a counter (a slot
index, a chunk index, a time stamp), computed with the SplitMix64 finaliser (Steele, Lea, Flood,
"Fast splittable pseudorandom number generators", OOPSLA 2014; constants of Stafford's "Mix13").
Counter-based generation makes the output independent of how a run is cut into blocks and lets a
client answer "what did I send in slot s?" without replaying a stream.

**Client QRNG** (:func:`client_log`): in slot ``s`` of acquisition ``epoch``, client ``c`` draws

* ``h = mix64(key_c + s·γ)`` with ``key_c = mix64(mix64(seed_c ⊕ C_QRNG) + epoch·γ)``,
  γ = 0x9E3779B97F4A7C15;
* intensity index ``k``: the first k with ``h >> 32 < thr_k`` where ``thr_k = ⌊2^32·Σ_{m≤k} p_m⌋``;
* basis ``b = 0`` (X) if ``(h >> 1) & (2^31 − 1) < ⌊2^31·p_X⌉`` else 1 (Y); bit ``= h & 1``;
* phase index ``a = b + 2·bit`` (basis = a % 2, bit = a // 2, as in :mod:`labqfl.contracts.types`).

This is the **seeded** generator (``randomness = "seeded"``): reproducible for tests and benchmarks,
and therefore predictable by anyone holding the station file (seed) and the acquisition epoch. Keys
from it are marked ``seeded``.

**Client CSPRNG** (:class:`CsprngChoiceLog`, ``randomness = "csprng"``, the default): a fresh
256-bit key from the operating system's CSPRNG (:func:`secrets.token_bytes`) per acquisition, and
AES-256 in counter mode (NIST SP 800-38A §6.5; FIPS 197) as the generator. Generator
``aes256-ctr-slot32-v1`` (below; logs written with it still load) spends 32 keystream bits per
slot, slot ``s`` = little-endian 32-bit word ``s mod 4`` of the keystream block
``E_K(⌊s/4⌋ as a 128-bit big-endian counter)``; new logs use ``aes256-ctr-slot8-v2``
(:mod:`labqfl.sim_backends.slot8`), which builds the same 32-bit word from one keystream byte per
slot and, only for the ≈ 3 % of slots whose byte does not decide the category, 24 bits of a second
counter domain: the same distribution of codes, with a quarter of the keystream. Counter mode gives random access by slot: the
client writes its modulator pattern in contiguous runs (CTR) and answers "what did I send in
slots S?" by encrypting only the counter blocks of S (ECB of the counter values, the same
keystream; a client node answers the optics' dense questions, a quarter of its slots, from the runs' CTR
pattern instead: :func:`bitmap_codes`). The word ``x`` maps to ``bit = x & 1`` and, with ``v = x >> 1`` (31 bits), to the
joint category (intensity k, basis b) = the first c with ``v < thr_c``,
``thr_c = ⌊2^31·Σ_{(k',b') ≤ c} p_k'·p_b'⌋`` (order k-major, X before Y, last threshold 2^31):
each probability p_k·p_b is realised as an integer multiple of 2^−31, off by less than 2^−31
(quantisation documented in docs/simulator.md); the bit is exactly fair. AES-CTR rather than
ChaCha20: both are standard stream generators; AES-256-CTR through OpenSSL's AES-NI path ran
1.7× faster on this project's machines, and the generator's cost is the client's per-slot cost.
Nothing public enters the generator: the key never leaves the client's log object and its 0600
file in the client's own data folder (:func:`save_private_log`).
"""

from __future__ import annotations

import functools
import json
import os
import re
import secrets
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numba as nb
import numpy as np
from labqfl.sim_backends import slot8

from labqfl.bitops import bswap64, cttz64
from labqfl.config import ClientConfig, StationConfig
from labqfl.contracts.types import ModulationRecord

MASK64 = (1 << 64) - 1
GAMMA = 0x9E3779B97F4A7C15
_M1 = 0xBF58476D1CE4E5B9
_M2 = 0x94D049BB133111EB
C_QRNG = 0x5152_4E47_434C_4E54  # "QRNGCLNT"

GENERATOR_NAME = "splitmix64-counter-v1"
CSPRNG_GENERATOR_V1 = "aes256-ctr-slot32-v1"  # 32 keystream bits per slot; its private logs still load
CSPRNG_GENERATOR_NAME = slot8.NAME  # "aes256-ctr-slot8-v2": what new CSPRNG logs use
CSPRNG_GENERATORS = (CSPRNG_GENERATOR_V1, CSPRNG_GENERATOR_NAME)
PRIVATE_LOG_FORMAT = "labqfl-client-choices"

_G = np.uint64(GAMMA)
_U30 = np.uint64(30)
_U27 = np.uint64(27)
_U31 = np.uint64(31)
_UM1 = np.uint64(_M1)
_UM2 = np.uint64(_M2)
_U32 = np.uint64(32)
_U1 = np.uint64(1)
_U11 = np.uint64(11)
_MASK31 = np.uint64(0x7FFFFFFF)
_INV53 = 1.0 / 9007199254740992.0


def mix64_int(z: int) -> int:
    """SplitMix64 finaliser on a Python int (reference implementation; result in [0, 2^64))."""
    z &= MASK64
    z = ((z ^ (z >> 30)) * _M1) & MASK64
    z = ((z ^ (z >> 27)) * _M2) & MASK64
    return z ^ (z >> 31)


def derive_key(*parts: int) -> int:
    """A 64-bit key from integers (seeds, stream ids, epochs), chained through :func:`mix64_int`."""
    k = 0
    for p in parts:
        k = mix64_int((k ^ (int(p) & MASK64)) + GAMMA)
    return k


@nb.njit(inline="always")
def mix64(z: np.uint64) -> np.uint64:
    """SplitMix64 finaliser (uint64 → uint64), Numba version."""
    z = (z ^ (z >> _U30)) * _UM1
    z = (z ^ (z >> _U27)) * _UM2
    return z ^ (z >> _U31)


@nb.njit(inline="always")
def hash_u01(key: np.uint64, counter: np.int64) -> float:
    """Uniform double in [0, 1) from (key, counter)."""
    return float(mix64(key + np.uint64(counter) * _G) >> _U11) * _INV53


def client_key(seed: int, epoch: int) -> int:
    """Key of a client's QRNG stream for one acquisition epoch (see module docstring)."""
    return mix64_int(mix64_int((int(seed) ^ C_QRNG) & MASK64) + (int(epoch) * GAMMA & MASK64))


def intensity_thresholds(probs: list[float] | tuple[float, ...]) -> np.ndarray:
    """uint64 thresholds (length K) on the top 32 hash bits; the last one is 2^32."""
    cum = np.cumsum(np.asarray(probs, dtype=np.float64))
    thr = np.floor(cum * 2.0**32).astype(np.uint64)
    thr[-1] = np.uint64(1 << 32)
    return thr


def basis_threshold(basis_x_prob: float) -> np.uint64:
    return np.uint64(round(basis_x_prob * 2.0**31))


@nb.njit(inline="always")
def client_choice(key: np.uint64, thr: np.ndarray, n_k: int, thr_x: np.uint64, slot: np.int64) -> tuple[int, int]:
    """(intensity index, phase index) of a client in ``slot`` (Numba, inlined in the kernels)."""
    h = mix64(key + np.uint64(slot) * _G)
    hi = h >> _U32
    k = 0
    while k < n_k - 1 and hi >= thr[k]:
        k += 1
    basis = 0 if ((h >> _U1) & _MASK31) < thr_x else 1
    bit = int(h & _U1)
    return k, basis + 2 * bit


@nb.njit(cache=True, nogil=True)
def _choices_kernel(key: np.uint64, thr: np.ndarray, thr_x: np.uint64, slots: np.ndarray,
                    out_k: np.ndarray, out_a: np.ndarray) -> None:
    n_k = thr.shape[0]
    for n in range(slots.shape[0]):
        k, a = client_choice(key, thr, n_k, thr_x, slots[n])
        out_k[n] = k
        out_a[n] = a


def choices_reference(seed: int, epoch: int, probs: list[float], basis_x_prob: float,
                      slots: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Slow pure-Python reference of the QRNG (for tests)."""
    key = client_key(seed, epoch)
    thr = [int(x) for x in intensity_thresholds(probs)]
    tx = int(basis_threshold(basis_x_prob))
    ks, as_ = [], []
    for s in np.asarray(slots, dtype=np.int64).tolist():
        h = mix64_int(key + (s & MASK64) * GAMMA)
        hi = h >> 32
        k = 0
        while k < len(thr) - 1 and hi >= thr[k]:
            k += 1
        basis = 0 if ((h >> 1) & 0x7FFFFFFF) < tx else 1
        ks.append(k)
        as_.append(basis + 2 * (h & 1))
    return np.array(ks, dtype=np.uint8), np.array(as_, dtype=np.uint8)


@nb.njit(cache=True, nogil=True)
def _codes_kernel(key: np.uint64, thr: np.ndarray, thr_x: np.uint64, s0: np.int64, out: np.ndarray) -> None:
    """Drive codes ``k·4 + a`` of the seeded generator for slots s0 … s0 + len(out) − 1."""
    n_k = thr.shape[0]
    for n in range(out.shape[0]):  # client_choice, branch-free (same output)
        h = mix64(key + np.uint64(s0 + n) * _G)
        hi = h >> _U32
        k = 0
        for m in range(n_k - 1):
            k += hi >= thr[m]
        basis = np.int64(((h >> _U1) & _MASK31) >= thr_x)
        out[n] = k * 4 + basis + 2 * np.int64(h & _U1)


@dataclass(frozen=True)
class ClientQRNGLog:
    """A client's seeded counter-based generator, doubling as its modulation log
    (:class:`ModulationLog`); ``randomness = "seeded"`` (reproducible, hence predictable).

    ``choices(slots)`` gives the intensity and phase indices the client chose in those slots of
    acquisition ``epoch``. Valid for any slot (a client only *uses* its choice in slots where its
    pair is scheduled). ``fill_codes`` writes the client's modulator drive pattern.
    """

    client: str
    seed: int
    epoch: int
    intensity_probs: tuple[float, ...]
    basis_x_prob: float
    generator: str = GENERATOR_NAME
    randomness: str = "seeded"

    def fill_codes(self, s0: int, out: np.ndarray) -> None:
        """The drive pattern of slots s0 … s0 + len(out) − 1: ``k·4 + a`` per slot (uint8), what
        the client streams to its modulators (intensity level k, phase index a)."""
        _codes_kernel(self.key, intensity_thresholds(self.intensity_probs), basis_threshold(self.basis_x_prob),
                      np.int64(s0), out)

    @property
    def key(self) -> np.uint64:
        return np.uint64(client_key(self.seed, self.epoch))

    def choices(self, slots: np.ndarray) -> ModulationRecord:
        s = np.ascontiguousarray(slots, dtype=np.int64)
        if s.ndim != 1:
            raise ValueError(f"slots must be a 1-D int64 array, got shape {s.shape}")
        if s.size and s.min() < 0:
            raise ValueError("slots must be >= 0")
        k = np.empty(s.shape[0], dtype=np.uint8)
        a = np.empty(s.shape[0], dtype=np.uint8)
        _choices_kernel(self.key, intensity_thresholds(self.intensity_probs),
                        basis_threshold(self.basis_x_prob), s, k, a)
        return ModulationRecord(client=self.client, slots=s, intensity_idx=k, phase_idx=a)

    def codes(self, slots: np.ndarray) -> np.ndarray:
        """:meth:`choices` as drive codes k·4 + a (uint8), what a modulator link carries."""
        rec = self.choices(slots)
        return rec.intensity_idx << np.uint8(2) | rec.phase_idx

    def codes_of_bitmap(self, runs: np.ndarray, words: np.ndarray, n: int) -> np.ndarray:
        """:meth:`codes` of the slots set in a checked bitmap over runs (:func:`bitmap_codes`)."""
        return bitmap_codes(self.fill_codes, runs, words, n)

    def params(self) -> dict[str, object]:
        """Everything needed to rebuild this log (stored in recordings)."""
        return {"client": self.client, "seed": self.seed, "epoch": self.epoch,
                "intensity_probs": list(self.intensity_probs), "basis_x_prob": self.basis_x_prob,
                "generator": self.generator}


def log_for_client(client: ClientConfig, epoch: int = 0) -> ClientQRNGLog:
    """The seeded generator of ``client`` for acquisition ``epoch`` (whatever its configured
    randomness: callers check :attr:`ClientConfig.randomness`)."""
    return ClientQRNGLog(client=client.name, seed=int(client.seed), epoch=int(epoch),
                         intensity_probs=tuple(float(p) for p in client.intensity_probs),
                         basis_x_prob=float(client.basis_x_prob))


def client_log(config: StationConfig, client: str, epoch: int = 0) -> ClientQRNGLog:
    """The modulation log of a **seeded** ``client`` for acquisition ``epoch`` (0 = the first
    acquisition of a testbed pinned at ``qrng_epoch_base = 0``). A CSPRNG client's choices are not
    a function of anything public: this refuses them (ask the client: ``SagnacTestbed.client_log``,
    ``Station.client_logs()`` or its private log, :func:`load_private_log`)."""
    cc = config.client(client)
    if cc.randomness != "seeded":
        raise ValueError(f"client {client!r} draws its choices from its {cc.randomness} (randomness = "
                         f"{cc.randomness!r}): they cannot be rebuilt from the station file; ask the client "
                         "for its log (testbed.client_log / Station.client_logs / its private choice log)")
    return log_for_client(cc, epoch)


# -- the CSPRNG client --------------------------------------------------------------------------

def joint_thresholds(probs: list[float] | tuple[float, ...], basis_x_prob: float) -> np.ndarray:
    """uint64 thresholds on 31 bits of the joint categories (k, basis), k-major, X before Y; the
    last one is 2^31. Category c has probability (thr_c − thr_{c−1})/2^31, within 2^−31 of
    p_k·p_b (see the module docstring)."""
    p = np.asarray(probs, dtype=np.float64)
    pb = np.array([basis_x_prob, 1.0 - basis_x_prob])
    joint = (p[:, None] * pb[None, :]).ravel()
    thr = np.floor(np.cumsum(joint) * 2.0**31).astype(np.uint64)
    thr = np.minimum(thr, np.uint64(1 << 31))
    thr[-1] = np.uint64(1 << 31)
    return thr


_W32 = np.uint32


@nb.njit(inline="always")
def _word_code(x: np.uint32, thr: tuple[np.uint32, ...]) -> np.uint32:
    """Drive code k·4 + a of the 32-bit keystream word ``x`` (module docstring): ``bit = x & 1``, and
    the joint category c = the number of thresholds ``thr`` (:func:`joint_thresholds` without its
    last, 2^31) at or below ``v = x >> 1``. Branch-free in 32-bit lanes: for v, t ≤ 2^31,
    ``(v − t) mod 2^32 >> 31`` is 1 exactly when v < t, so c = len(thr) − Σ_t [v < t]; ``thr`` is a
    tuple, so the count is a compile-time constant and the loop over words that inlines this
    vectorises (16 words per AVX-512 instruction; 0.21 against 0.67 ns per word for the guide-table
    lookup it replaced, 5 thresholds, docs/simulator.md)."""
    v = _W32(x >> _W32(1))
    below = _W32(0)
    for t in thr:
        below = _W32(below + _W32(_W32(v - t) >> _W32(31)))
    c = _W32(_W32(len(thr)) - below)
    return _W32(_W32(_W32(_W32(c >> _W32(1)) << _W32(2)) + _W32(c & _W32(1))) + _W32(_W32(x & _W32(1)) << _W32(1)))


def code_thresholds(thr: np.ndarray) -> tuple[np.uint32, ...]:
    """The thresholds :func:`_word_code` takes: :func:`joint_thresholds` without its last (2^31), as a
    tuple of uint32 (one compiled kernel per number of categories)."""
    return tuple(np.uint32(t) for t in thr[:-1])


@nb.njit(cache=True, nogil=True)
def _words_to_codes(words: np.ndarray, thr: tuple[np.uint32, ...], out: np.ndarray) -> None:
    """Map 32-bit keystream words to drive codes k·4 + a (:func:`_word_code`)."""
    for n in range(np.uint64(words.shape[0])):
        out[n] = np.uint8(_word_code(words[n], thr))


@nb.njit(cache=True, nogil=True)
def _counter_blocks(slots: np.ndarray, ctr: np.ndarray, shift: int, hi: np.uint64) -> np.int64:
    """The AES input of ``slots`` (int64, any order): one 128-bit big-endian counter ⌊s/2^shift⌋ (+ the high
    64 bits whose byte-swapped value is ``hi``) per run of consecutive slots that share it, as two uint64
    words each (``ctr``: high word ``hi``, low word the byte-swapped counter; room for 2·len(slots) words).
    v1 takes shift 2, hi 0; v2's coarse stream shift 4, hi 0, its fine stream shift 2, hi
    :data:`slot8.FINE_HI`. Returns the number of counter blocks, or −1 if a slot is negative (the counters
    written are then meaningless; none is written past the room of len(slots) blocks). The sign is checked
    once, on the OR of all slots, not by a branch per slot."""
    nb_ = np.uint64(0)  # unsigned indices: no negative-index wraparound code per access
    prev = np.int64(-1)
    neg = np.int64(0)
    for n in range(np.uint64(slots.shape[0])):  # branch-free: a slot's counter is written, kept if it is new
        s = slots[n]
        neg |= s
        b = s >> shift
        ctr[np.uint64(2) * nb_] = hi
        ctr[np.uint64(2) * nb_ + np.uint64(1)] = bswap64(np.uint64(b))  # type: ignore[call-arg]
        nb_ += np.uint64(b != prev)
        prev = b
    return np.int64(-1) if neg < 0 else np.int64(nb_)


@nb.njit(cache=True, nogil=True)
def _block_words(ks: np.ndarray, slots: np.ndarray, words: np.ndarray) -> None:
    """The keystream word of each of ``slots`` from the keystream of their counter blocks as
    :func:`_counter_blocks` laid them out (one 16-byte block per run of slots sharing ⌊s/4⌋): word
    ``s mod 4`` of the slot's block. A gather on its own, so that the mapping to codes
    (:func:`_words_to_codes`) runs vectorised."""
    blocks = np.uint64(0)  # blocks begun so far; unsigned indices (no wraparound code per access)
    prev = np.int64(-1)
    for n in range(np.uint64(slots.shape[0])):
        s = slots[n]
        b = s >> 2
        blocks += np.uint64(b != prev)  # branch-free, as the counters were laid out
        prev = b
        words[n] = ks[np.uint64(4) * blocks - np.uint64(4) + np.uint64(s & 3)]


#: Slots per AES call of :meth:`CsprngChoiceLog.codes` (its counter and keystream buffers: 1 MiB each).
_QUERY_SLOTS = 1 << 16
_RUN_SLOTS = 1 << 18
_SCRATCH = threading.local()  # per thread: buffers reused by every fill_codes (no 1 MB allocated per call)


def _keystream_buffer() -> np.ndarray:
    """This thread's buffer of a piece's keystream (v1: 4 bytes a slot, room for one block more)."""
    buf = getattr(_SCRATCH, "buf", None)
    if buf is None:
        buf = _SCRATCH.buf = np.empty(16 * ((_RUN_SLOTS >> 2) + 2), np.uint8)
    return buf


def _counters_buffer() -> np.ndarray:
    """This thread's buffer of a piece's counter blocks (two uint64 each)."""
    buf = getattr(_SCRATCH, "ctr", None)
    if buf is None:
        buf = _SCRATCH.ctr = np.empty(2 * ((_RUN_SLOTS >> 2) + 2), np.uint64)
    return buf


@nb.njit(cache=True, nogil=True)
def _counter_run(b0: int, nb_: int, ctr: np.ndarray) -> None:
    """The counter blocks b0 … b0 + nb_ − 1 (128-bit big-endian, high 64 bits 0) into ``ctr`` (two uint64
    each): their ECB is the CTR keystream that starts at counter b0 (NIST SP 800-38A §6.5)."""
    for i in range(nb_):
        ctr[2 * i] = np.uint64(0)
        ctr[2 * i + 1] = bswap64(np.uint64(b0 + i))  # type: ignore[call-arg]


@nb.njit(cache=True, nogil=True)
def _gather_bit_codes(codes: np.ndarray, words: np.ndarray, q: int, nw: int, out: np.ndarray, k: int) -> int:
    """For each set bit b of ``words[q + i]`` (i < ``nw``, in order), ``codes[64·i + b]`` into ``out[k]``,
    ``out[k + 1]`` …; returns the next k. ``codes``: the dense codes of the slots of those words."""
    one = np.uint64(1)
    for i in range(np.uint64(nw)):
        w = words[np.uint64(q) + i]
        base = np.uint64(64) * i
        while w != np.uint64(0):
            out[k] = codes[base + np.uint64(cttz64(w))]  # type: ignore[call-arg]
            k += 1
            w &= w - one
    return k


def bitmap_codes(fill_codes: Callable[[int, np.ndarray], None], runs: np.ndarray, words: np.ndarray,
                 n: int) -> np.ndarray:
    """The drive codes of the ``n`` slots set in a bitmap over runs (``runs`` flat int64 pairs lo, hi;
    ``words``: for each run its words lo // 64 … (hi − 1) // 64; the layout and the checks of
    :func:`labqfl.nodes.wire.slot_bits_of`), in ascending slot order, from ``fill_codes(s0, out)``: the
    dense pattern of each run's whole words, in pieces of :data:`_RUN_SLOTS` slots through one per-thread
    buffer, then the codes of the set bits gathered from it (:func:`_gather_bit_codes`). Equal to the
    codes of the decoded slots (tested). Computes the pattern of every slot of the runs, of which the
    optics asks about a quarter, yet costs a client node less CPU than the random-access path
    (:meth:`CsprngChoiceLog.codes` of the decoded slots), which is faster alone: its counters, keystream
    and decoded slots (≈ 12 bytes per asked slot) run out of cache beside the other nodes' work, where
    this path's working set is one 1 MiB keystream piece (docs/nodes.md, "A client's answers from the
    bitmap")."""
    out = np.empty(n, dtype=np.uint8)
    buf = _codes_buffer()
    k = 0
    for s0, q, nw in bitmap_pieces(runs):
        piece = buf[:nw << 6]
        fill_codes(s0, piece)
        k = _gather_bit_codes(piece, words, q, nw, out, k)
    _check_set_bits(k, n)
    return out


def bitmap_pieces(runs: np.ndarray) -> Iterator[tuple[int, int, int]]:
    """The pieces of a bitmap over ``runs`` (flat int64 pairs lo, hi) in order, as (first slot, first word's
    index among the bitmap's words, number of words): each run's whole 64-slot words, at most
    :data:`_RUN_SLOTS` slots a piece."""
    pr = runs.reshape(-1, 2)
    q, step = 0, _RUN_SLOTS >> 6
    for r in range(pr.shape[0]):
        w0 = int(pr[r, 0]) >> 6
        nw = ((int(pr[r, 1]) - 1) >> 6) - w0 + 1
        for p in range(0, nw, step):
            yield (w0 + p) << 6, q + p, min(nw - p, step)
        q += nw


def _check_set_bits(k: int, n: int) -> None:
    if k != n:
        raise ValueError(f"bitmap_codes: the words hold {k} set bits, expected {n}")


def _codes_buffer() -> np.ndarray:
    """This thread's :data:`_RUN_SLOTS`-slot buffer of a bitmap piece's dense codes."""
    buf = getattr(_SCRATCH, "codes", None)
    if buf is None:
        buf = _SCRATCH.codes = np.empty(_RUN_SLOTS, dtype=np.uint8)
    return buf


@nb.njit(cache=True, nogil=True)
def _finish_listed(out: np.ndarray, k: np.ndarray, slots: np.ndarray, y: np.ndarray, ks: np.ndarray,
                   thr: tuple[np.uint32, ...]) -> None:
    """v2: ``out[k[j]]`` = the code of slot ``slots[j]`` (coarse byte ``y[j]``) from its fine word, word
    ``slots[j] mod 4`` of block j of the fine keystream ``ks`` (uint32; :func:`slot8.fine_counters`' blocks)."""
    for j in range(k.shape[0]):
        w = ks[4 * j + (slots[j] & 3)]
        out[k[j]] = np.uint8(_word_code(slot8.slot_word(y[j], w), thr))


@nb.njit(cache=True, nogil=True)
def _finish_dense(out: np.ndarray, pos: np.ndarray, m: int, y: np.ndarray, s0: int, ks: np.ndarray,
                  thr: tuple[np.uint32, ...]) -> None:
    """v2: ``out[i]``, i = ``pos[j]`` (j < m; the ambiguous codes of a dense piece of slots s0 …, coarse bytes
    ``y``), from block j of the fine keystream ``ks`` (uint32; :func:`slot8.coarse_pass`' blocks)."""
    for j in range(m):
        i = pos[j]
        w = ks[4 * j + ((s0 + i) & 3)]
        out[i] = np.uint8(_word_code(slot8.slot_word(y[i], w), thr))


def _query_scratch() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """This thread's buffers of a :data:`_QUERY_SLOTS` piece of :meth:`CsprngChoiceLog.codes`: counter blocks (two
    uint64 per slot), their keystream (bytes, room for one block more: ``update_into`` wants it), and for v2 the
    slots' coarse bytes and the positions (int64) of the ambiguous ones; allocated once per thread instead of
    2.6 MiB per call."""
    sc = getattr(_SCRATCH, "query", None)
    if sc is None:
        sc = _SCRATCH.query = (np.empty(2 * _QUERY_SLOTS, np.uint64), np.empty(16 * _QUERY_SLOTS + 16, np.uint8),
                               np.empty(_QUERY_SLOTS, np.int64), np.empty(_QUERY_SLOTS, np.uint8))
    return sc


def _fine_scratch() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """This thread's buffers for a dense v2 piece's ambiguous slots: positions (int64), counter blocks (two
    uint64 each) and their keystream (bytes), room for every slot of a :data:`_RUN_SLOTS` piece; only the first
    few entries of each are ever written (≈ 3 % of the piece)."""
    sc = getattr(_SCRATCH, "fine", None)
    if sc is None:
        sc = _SCRATCH.fine = (np.empty(_RUN_SLOTS, np.int64), np.empty(2 * _RUN_SLOTS, np.uint64),
                              np.empty(16 * _RUN_SLOTS + 16, np.uint8))
    return sc


@dataclass(frozen=True, repr=False, eq=False)
class CsprngChoiceLog:
    """A client's choices from AES-256 in counter mode keyed with 256 bits of the OS CSPRNG (module
    docstring); its :class:`ModulationLog` and the source of its modulator pattern. ``generator``: new logs
    ``aes256-ctr-slot8-v2`` (:mod:`labqfl.sim_backends.slot8`: one keystream byte per slot, 24 more bits
    only where they decide), logs written as ``aes256-ctr-slot32-v1`` (32 keystream bits per slot) keep
    theirs. The key is the client's secret: ``repr`` shows none of it, and it is written only to the
    client's private log file."""

    client: str
    intensity_probs: tuple[float, ...]
    basis_x_prob: float
    key: bytes = field(default_factory=lambda: secrets.token_bytes(32))
    generator: str = CSPRNG_GENERATOR_NAME
    randomness: str = "csprng"

    def __post_init__(self) -> None:
        if not isinstance(self.key, bytes) or len(self.key) != 32:
            raise ValueError("a CSPRNG client log needs a 32-byte key")
        if self.generator not in CSPRNG_GENERATORS:
            raise ValueError(f"unknown CSPRNG generator {self.generator!r}; expected one of {CSPRNG_GENERATORS}")

    def __repr__(self) -> str:
        return f"CsprngChoiceLog(client={self.client!r}, generator={self.generator!r})"

    __str__ = __repr__

    @property
    def _v1(self) -> bool:
        return self.generator == CSPRNG_GENERATOR_V1

    def _thr(self) -> np.ndarray:
        return self._thresholds

    @functools.cached_property
    def _thresholds(self) -> np.ndarray:
        """:func:`joint_thresholds` of this log's probabilities (computed once; read-only)."""
        t = joint_thresholds(self.intensity_probs, self.basis_x_prob)
        t.setflags(write=False)
        return t

    @functools.cached_property
    def _code_thr(self) -> tuple[np.uint32, ...]:
        return code_thresholds(self._thr())

    @functools.cached_property
    def _coarse_map(self) -> slot8.CoarseMap:
        return slot8.coarse_map(self._thr())

    def _keystream(self, s0: int, n: int, shift: int, buf: np.ndarray) -> tuple[int, int]:
        """The CTR keystream of the counter blocks ⌊s/2^shift⌋ of slots s0 … s0 + n − 1 (counters below
        2^64; n ≤ :data:`_RUN_SLOTS`) into ``buf``, as the ECB of the counters through one of this log's
        reused encryptors (:meth:`_ecb_into`); returns (bytes written, the first slot's unit offset in them)."""
        b0 = s0 >> shift
        nb_ = ((s0 + n + (1 << shift) - 1) >> shift) - b0
        ctr = _counters_buffer()
        _counter_run(b0, nb_, ctr)
        return self._ecb_into(ctr, nb_, buf), s0 - (b0 << shift)

    def _words_range(self, s0: int, n: int, buf: np.ndarray) -> np.ndarray:
        """v1: keystream words of slots s0 … s0 + n − 1 (n ≤ _RUN_SLOTS), written into ``buf``."""
        size, off = self._keystream(s0, n, 2, buf)
        return np.frombuffer(buf, dtype="<u4", count=size // 4)[off:off + n]

    def _coarse_range(self, s0: int, n: int, buf: np.ndarray) -> np.ndarray:
        """v2: coarse bytes of slots s0 … s0 + n − 1 (n ≤ _RUN_SLOTS), written into ``buf``."""
        size, off = self._keystream(s0, n, 4, buf)
        return np.frombuffer(buf, dtype=np.uint8, count=size)[off:off + n]

    def fill_codes(self, s0: int, out: np.ndarray) -> None:
        """The drive pattern of slots s0 … s0 + len(out) − 1 (``k·4 + a``, uint8), in runs of at
        most :data:`_RUN_SLOTS` slots (bounded scratch memory)."""
        buf = _keystream_buffer()
        for lo in range(0, out.shape[0], _RUN_SLOTS):
            hi = min(lo + _RUN_SLOTS, out.shape[0])
            if self._v1:
                _words_to_codes(self._words_range(int(s0) + lo, hi - lo, buf), self._code_thr, out[lo:hi])
                continue
            y = self._coarse_range(int(s0) + lo, hi - lo, buf)
            pos, ctr, ks = _fine_scratch()
            m = slot8.coarse_pass(y, *self._coarse_map, out[lo:hi], int(s0) + lo, pos, ctr)
            if m:
                _finish_dense(out[lo:hi], pos, m, y, int(s0) + lo, self._fine_keystream(ctr, m, ks), self._code_thr)

    @functools.cached_property
    def _ecb(self):  # type: ignore[no-untyped-def]
        """AES-256 with this log's key in ECB mode (one cipher object)."""
        from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

        return Cipher(algorithms.AES(self.key), modes.ECB())

    @functools.cached_property
    def _idle(self) -> list:  # type: ignore[type-arg]
        """This log's ECB encryptors not in use (:meth:`_ecb_into`)."""
        return []

    def _ecb_into(self, ctr: np.ndarray, m: int, out: np.ndarray) -> int:
        """ECB of the first m counter blocks of ``ctr`` (two uint64 each) into ``out`` (room for 16·m + 16
        bytes); the bytes written. Through an encryptor of this log's key that one caller holds at a time
        (taken from and given back to :attr:`_idle`; ``list.pop``/``append`` are atomic, so threads never share
        one). ECB contexts fed whole blocks hold nothing between calls, so they are reused instead of created
        per call (a CTR context per 64 K-slot run before): the simulator's drive patterns on two threads went
        from 2.56–2.63 to 3.17 simulated s per wall s with this alone (docs/simulator.md)."""
        try:
            enc = self._idle.pop()
        except IndexError:
            enc = self._ecb.encryptor()
        try:
            return int(enc.update_into(ctr.view(np.uint8)[:16 * m], out))
        finally:
            self._idle.append(enc)

    def _fine_keystream(self, ctr: np.ndarray, m: int, ks: np.ndarray) -> np.ndarray:
        """v2: ECB of the first m counter blocks of ``ctr`` into ``ks``, as uint32 words."""
        return np.frombuffer(ks, dtype="<u4", count=self._ecb_into(ctr, m, ks) // 4)

    def _refine(self, codes: np.ndarray, k: np.ndarray, slots: np.ndarray, y: np.ndarray) -> None:
        """v2: ``codes[k]`` (ambiguous: the slots ``slots`` ≥ 0 with coarse bytes ``y``) from their fine words."""
        ctr = np.empty(2 * slots.size, np.uint64)
        slot8.fine_counters(slots, ctr)
        ks = self._fine_keystream(ctr, slots.size, np.empty(16 * slots.size + 16, np.uint8))
        _finish_listed(codes, k, slots, y, ks, self._code_thr)

    def codes(self, slots: np.ndarray) -> np.ndarray:
        """The drive codes k·4 + a (uint8) of ``slots`` (int64, any order, repeats allowed): per slot
        its keystream block by ECB of the counter (v1 ``E_K(⌊s/4⌋)``, v2 ``E_K(⌊s/16⌋)``), encrypted once
        per run of slots that share it, and the slot's word (v1) or byte (v2: the ambiguous ones then
        take their fine words) of it. In pieces of :data:`_QUERY_SLOTS` slots through this thread's buffers
        (:func:`_query_scratch`, not zeroed; a 1 MiB piece: 3.8 ns per slot on a window's question against 4.1
        for 2^14 slots, v1, Zen 3). Equal to :meth:`choices_reference` bit for bit."""
        s = np.ascontiguousarray(slots, dtype=np.int64)
        if s.ndim != 1:
            raise ValueError(f"slots must be a 1-D int64 array, got shape {s.shape}")
        out = np.empty(s.size, dtype=np.uint8)
        ctr, buf, pos, y = _query_scratch()
        v1 = self._v1
        for lo in range(0, s.size, _QUERY_SLOTS):
            part = s[lo:lo + _QUERY_SLOTS]
            nb_ = int(_counter_blocks(part, ctr, 2 if v1 else 4, np.uint64(0)))
            if nb_ < 0:
                raise ValueError("slots must be >= 0")
            done = self._ecb_into(ctr, nb_, buf)
            o = out[lo:lo + _QUERY_SLOTS]
            if v1:
                words = ctr.view(np.uint32)[:part.size]  # the counters are spent: their buffer takes the words
                _block_words(np.frombuffer(buf, dtype="<u4", count=done // 4), part, words)
                _words_to_codes(words, self._code_thr, o)
                continue
            yp = y[:part.size]
            slot8.block_bytes(buf[:done], part, yp)
            slot8.bytes_to_codes(yp, *self._coarse_map, o)
            m = slot8.ambiguous_positions(o, pos)
            if m:
                p = pos[:m]
                self._refine(o, p, part[p], yp[p])
        return out

    def codes_of_bitmap(self, runs: np.ndarray, words: np.ndarray, n: int) -> np.ndarray:
        """:meth:`codes` of the slots set in a checked bitmap over runs, from the dense keystream of the runs
        (:func:`bitmap_codes`: the modulator link's answers; the optics asks about ≈ 27 % of a client's slots).
        v2: each piece's coarse codes, the asked ones gathered with the place, slot and byte of each ambiguous
        one, then only those take their fine words (≈ 3 % of the asked slots, not of the runs)."""
        if self._v1:
            return bitmap_codes(self.fill_codes, runs, words, n)
        out = np.empty(n, dtype=np.uint8)
        amb_k, amb_s, amb_y = np.empty(n, np.int64), np.empty(n, np.int64), np.empty(n, np.uint8)
        codes, ks = _codes_buffer(), _keystream_buffer()
        k = m = 0
        for s0, q, nw in bitmap_pieces(runs):
            y = self._coarse_range(s0, nw << 6, ks)
            piece = codes[:nw << 6]
            slot8.bytes_to_codes(y, *self._coarse_map, piece)
            k, m = slot8.gather_bit_codes(piece, y, words, q, nw, s0, out, k, amb_k, amb_s, amb_y, m)
        _check_set_bits(k, n)
        if m:
            self._refine(out, amb_k[:m], amb_s[:m], amb_y[:m])
        return out

    def choices(self, slots: np.ndarray) -> ModulationRecord:
        """The choices of ``slots`` (any order, repeats allowed): :meth:`codes`, split into intensity
        and phase indices."""
        s = np.ascontiguousarray(slots, dtype=np.int64)
        codes = self.codes(s)
        return ModulationRecord(client=self.client, slots=s, intensity_idx=codes >> 2, phase_idx=codes & 3)

    def _ecb_blocks(self, counters: np.ndarray) -> np.ndarray:
        """``E_K`` of each 128-bit big-endian counter (rows of two big-endian uint64: high, low), as bytes."""
        from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

        enc = Cipher(algorithms.AES(self.key), modes.ECB()).encryptor()
        ctr = np.ascontiguousarray(counters, dtype=">u8")
        return np.frombuffer(enc.update(ctr.tobytes()) + enc.finalize(), dtype=np.uint8)

    def choices_reference(self, slots: np.ndarray) -> ModulationRecord:
        """:meth:`choices` as the definitions read, kept to test the fast paths against: the distinct
        counter blocks of ``slots`` (``numpy.unique``, a sort), one ECB encryption each, then each slot's
        word gathered back (v1); v2 computes both the coarse byte and the fine word of every slot
        (:mod:`labqfl.sim_backends.slot8`'s definition, no shortcut for the slots the byte decides) and
        counts the thresholds at or below v with ``numpy.searchsorted``."""
        s = np.ascontiguousarray(slots, dtype=np.int64)
        if self._v1:
            blocks, inv = np.unique(s >> 2, return_inverse=True)
            ks = self._ecb_blocks(np.stack([np.zeros_like(blocks), blocks], axis=1)).view("<u4")
            words = np.ascontiguousarray(ks[inv.ravel() * 4 + (s & 3)])
            codes = np.empty(s.size, dtype=np.uint8)
            _words_to_codes(words, self._code_thr, codes)
        else:
            cb, cinv = np.unique(s >> 4, return_inverse=True)
            y = self._ecb_blocks(np.stack([np.zeros_like(cb), cb], axis=1))[cinv.ravel() * 16 + (s & 15)]
            fb, finv = np.unique(s >> 2, return_inverse=True)
            w = self._ecb_blocks(np.stack([np.ones_like(fb), fb], axis=1)).view("<u4")[finv.ravel() * 4 + (s & 3)]
            v = ((y.astype(np.uint64) & np.uint64(127)) << np.uint64(24)) | (w.astype(np.uint64) & np.uint64(0xFFFFFF))
            c = np.searchsorted(self._thr(), v, side="right")
            codes = ((c >> 1) * 4 + (c & 1) + 2 * (y >> 7)).astype(np.uint8)
        return ModulationRecord(client=self.client, slots=s, intensity_idx=(codes >> 2).astype(np.uint8),
                                phase_idx=(codes & 3).astype(np.uint8))


ChoiceLog = ClientQRNGLog | CsprngChoiceLog


def new_client_log(client: ClientConfig, epoch: int) -> ChoiceLog:
    """The generator a client arms for a new acquisition: a fresh CSPRNG key, or (``seeded``) the
    reproducible stream of (seed, epoch)."""
    if client.randomness == "seeded":
        return log_for_client(client, epoch)
    return CsprngChoiceLog(client=client.name, intensity_probs=tuple(float(p) for p in client.intensity_probs),
                           basis_x_prob=float(client.basis_x_prob))


# -- the client's private folder ----------------------------------------------------------------

def private_log_path(data_dir: str | Path, client: str, acquisition_id: str) -> Path:
    """``<data_dir>/nodes/<client>/choices/<acquisition id, '/' → '_'>.key``."""
    if not re.fullmatch(r"C[0-9]+", client):
        raise ValueError(f"client name must look like 'C1', got {client!r}")
    safe = re.sub(r"[^A-Za-z0-9_.-]", "_", acquisition_id)
    return Path(data_dir) / "nodes" / client / "choices" / f"{safe}.key"


def save_private_log(log: CsprngChoiceLog, data_dir: str | Path, acquisition_id: str) -> Path:
    """Write a CSPRNG client's log (its 32-byte key + parameters, the compact equivalent of every
    choice) into its own folder, mode 0600 (folders 0700). Refuses to overwrite another log
    (:class:`FileExistsError`); the same log again (e.g. re-recording a replay) is a no-op."""
    path = private_log_path(data_dir, log.client, acquisition_id)
    for d in (path.parent.parent.parent, path.parent.parent, path.parent):
        d.mkdir(mode=0o700, exist_ok=True, parents=True)
    body = json.dumps({"format": PRIVATE_LOG_FORMAT, "version": 1, "client": log.client,
                       "acquisition_id": acquisition_id, "randomness": log.randomness,
                       "generator": log.generator, "key_hex": log.key.hex(),
                       "intensity_probs": list(log.intensity_probs), "basis_x_prob": log.basis_x_prob})
    if path.exists():
        if path.read_text() == body:
            return path
        raise FileExistsError(f"{path}: client {log.client} already holds a different choice log for acquisition "
                              f"{acquisition_id}; expected a new acquisition id (never reuse one)")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(body)
    return path


class PrivateLogMissing(FileNotFoundError):
    """A CSPRNG client's private choice log is not on this machine."""


def load_private_log(data_dir: str | Path, client: str, acquisition_id: str) -> CsprngChoiceLog:
    """Read what :func:`save_private_log` wrote; :class:`PrivateLogMissing` if it is not here."""
    path = private_log_path(data_dir, client, acquisition_id)
    if not path.is_file():
        raise PrivateLogMissing(f"client {client}'s private choice log for acquisition {acquisition_id} not found "
                                f"in {path.parent}; distil on the machine that holds it")
    try:
        d = json.loads(path.read_text())
        if d.get("format") != PRIVATE_LOG_FORMAT or d.get("generator") not in CSPRNG_GENERATORS:
            raise ValueError(f"format {d.get('format')!r}/generator {d.get('generator')!r}, expected "
                             f"{PRIVATE_LOG_FORMAT!r}/one of {CSPRNG_GENERATORS}")
        if d["client"] != client or d["acquisition_id"] != acquisition_id:
            raise ValueError(f"it belongs to {d['client']} / {d['acquisition_id']}")
        return CsprngChoiceLog(client=client, intensity_probs=tuple(float(p) for p in d["intensity_probs"]),
                               basis_x_prob=float(d["basis_x_prob"]), key=bytes.fromhex(d["key_hex"]),
                               generator=d["generator"])
    except (ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"{path}: not a valid private choice log of {client} ({exc}); expected the file "
                         "`labqfl acquire` wrote") from None
