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
* phase index ``a = b + 2·bit`` (basis = a % 2, bit = a // 2, as in :mod:`labqfl.qkd.types`).

This stands in for the client's QRNG *and* is the client's modulation log: only that client's side
of the pipeline should call :func:`client_log` for its own name.
"""

from __future__ import annotations

from dataclasses import dataclass

import numba as nb
import numpy as np

from labqfl.config import ClientConfig, StationConfig
from labqfl.qkd.types import ModulationRecord

MASK64 = (1 << 64) - 1
GAMMA = 0x9E3779B97F4A7C15
_M1 = 0xBF58476D1CE4E5B9
_M2 = 0x94D049BB133111EB
C_QRNG = 0x5152_4E47_434C_4E54  # "QRNGCLNT"

GENERATOR_NAME = "splitmix64-counter-v1"

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


@dataclass(frozen=True)
class ClientQRNGLog:
    """A client's counter-based QRNG, doubling as its modulation log (:class:`ModulationLog`).

    ``choices(slots)`` gives the intensity and phase indices the client chose in those slots of
    acquisition ``epoch``. Valid for any slot (a client only *uses* its choice in slots where its
    pair is scheduled).
    """

    client: str
    seed: int
    epoch: int
    intensity_probs: tuple[float, ...]
    basis_x_prob: float
    generator: str = GENERATOR_NAME

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

    def params(self) -> dict[str, object]:
        """Everything needed to rebuild this log (stored in recordings)."""
        return {"client": self.client, "seed": self.seed, "epoch": self.epoch,
                "intensity_probs": list(self.intensity_probs), "basis_x_prob": self.basis_x_prob,
                "generator": self.generator}


def log_for_client(client: ClientConfig, epoch: int = 0) -> ClientQRNGLog:
    return ClientQRNGLog(client=client.name, seed=int(client.seed), epoch=int(epoch),
                         intensity_probs=tuple(float(p) for p in client.intensity_probs),
                         basis_x_prob=float(client.basis_x_prob))


def client_log(config: StationConfig, client: str, epoch: int = 0) -> ClientQRNGLog:
    """The modulation log of ``client`` for acquisition ``epoch`` (0 = the first acquisition of a
    freshly created testbed; see :attr:`SagnacTestbed.last_epoch` and ``Recording.client_log``)."""
    return log_for_client(config.client(client), epoch)
