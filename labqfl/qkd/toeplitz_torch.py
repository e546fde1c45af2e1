"""Toeplitz privacy amplification on a torch device (a CUDA GPU when present), bit-exact.

Same hash, same convention and same exactness argument as the CPU float-FFT path
:func:`labqfl.qkd.toeplitz.toeplitz_hash_fft` (module docstring of :mod:`labqfl.qkd.toeplitz`):
``y[i] = (u ∗ x)[i + n − 1] mod 2`` with ``u = roll(seed, −m)``, the integer sums from one real
float64 FFT pair of length ``N = next_fast_len(n + m − 1)`` (cuFFT on a GPU), accepted only when

* Percival's a-priori bound (:func:`labqfl.qkd.toeplitz.fft_rounding_bound`) is below 1/4, and
* every computed sum lies within 1/8 of an integer (a-posteriori check, on the device).

If either check fails, the exact CPU path (:func:`labqfl.qkd.toeplitz.toeplitz_hash`, carry-less
GF(2) arithmetic, no rounding) computes the result instead, so no rounded value can leave this
module. For 10^7 input bits the a-priori bound is ≈ 10^−6. The device buffers that hold the input
bits or anything computed from them (the output included) are zeroed before they are given back to
torch's allocator, as the key store wipes its key material (:mod:`labqfl.keystore.material`). The CPU paths stay the default of the
pipeline; this one is for hosts with a GPU (``labqfl bench gpu``) and is tested on ``"cpu"``
against randextract's convention bit for bit (tests/qkd/test_toeplitz_torch.py).
"""

from __future__ import annotations

import numpy as np
import scipy.fft as sfft
import torch

from labqfl.accel import torch_device
from labqfl.errors import QKDInputError
from labqfl.qkd.toeplitz import _check, fft_rounding_bound, toeplitz_hash

__all__ = ["toeplitz_hash_torch"]


def toeplitz_hash_torch(bits: np.ndarray, seed_bits: np.ndarray, out_len: int, *, device: str = "cpu") -> np.ndarray:
    """Toeplitz hash ``T(seed) · bits mod 2`` → ``out_len`` bits (uint8 0/1) computed on ``device``.

    Arguments and result as :func:`labqfl.qkd.toeplitz.toeplitz_hash` (numpy in, numpy out, the
    transfers included); ``device``: ``"cpu"``, ``"cuda"`` or ``"cuda:N"``.
    """
    n, m = _check(bits, seed_bits, out_len, values=False)
    dev = torch_device(device, error=QKDInputError)
    L = n + m - 1
    x = torch.from_numpy(np.ascontiguousarray(bits)).to(dev, copy=True)  # ours to wipe (never the caller's array)
    u = torch.roll(torch.from_numpy(np.ascontiguousarray(seed_bits)).to(dev), -m)
    stats = torch.stack([x.max().to(torch.int64), u.max().to(torch.int64),
                         x.sum(dtype=torch.int64), u.sum(dtype=torch.int64)]).cpu().tolist()
    if stats[0] > 1 or stats[1] > 1:
        name = "bits" if stats[0] > 1 else "seed_bits"
        raise QKDInputError(f"{name}: expected only 0/1 values, found {max(stats[0], stats[1])}")
    nfft = sfft.next_fast_len(L, real=True)
    if fft_rounding_bound(stats[2], stats[3], nfft) >= 0.25:
        return toeplitz_hash(bits, seed_bits, m)
    secret: list[torch.Tensor] = [x]  # device buffers derived from the key: wiped before they are freed
    try:
        xf = x.to(torch.float64)
        fx = torch.fft.rfft(xf, nfft)
        fx *= torch.fft.rfft(u.to(torch.float64), nfft)
        zf = torch.fft.irfft(fx, nfft)
        z = zf[n - 1:L]
        r = torch.round(z)
        d = (z - r).abs_()
        out = (r.to(torch.int64) & 1).to(torch.uint8)
        secret += [xf, fx, zf, r, d, out]
        if float(d.max().cpu()) >= 0.125:
            return toeplitz_hash(bits, seed_bits, m)
        return out.to("cpu", copy=True).numpy()  # a host copy: ``out`` itself is wiped below
    finally:
        for t in secret:
            t.zero_()
