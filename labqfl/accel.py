"""Accelerator paths: the torch device a fast path runs on, checked once with one clear error.

labqfl's default kernels are Numba on the CPU. Toeplitz privacy amplification
(:func:`labqfl.qkd.toeplitz_torch.toeplitz_hash_torch`), the quasi-cyclic LDPC decoders
(:mod:`labqfl.qkd.ldpc_torch`) and the QNN statevector (:func:`labqfl.fl.models.hea.hea_expval`)
also run on any torch device — a CUDA GPU when one is present. torch is already a dependency, so
no other array library is needed; the same code runs on ``"cpu"``, which is how the tests check
it without a GPU. ``labqfl bench gpu`` reports their figures beside the CPU kernels'.
"""

from __future__ import annotations

import re

import torch

_DEVICE = re.compile(r"^(cpu|cuda(:\d+)?)$")


def torch_device(name: object, *, what: str = "device", error: type[Exception] = ValueError) -> torch.device:
    """``"cpu"``, ``"cuda"`` or ``"cuda:N"`` as a :class:`torch.device`, checked to exist.

    ``what`` names the argument in the error message. Raises ``error`` (the caller's input-error
    class) naming the value and what is expected: a malformed name, CUDA without a visible CUDA
    device, or a device index out of range.
    """
    if not isinstance(name, str) or not _DEVICE.match(name):
        raise error(f"{what}: expected 'cpu', 'cuda' or 'cuda:N', got {name!r}")
    dev = torch.device(name)
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise error(f"{what}: {name!r} asked for, but torch {torch.__version__} sees no CUDA device "
                             "(a CPU-only build or no GPU); use 'cpu'")
        count = torch.cuda.device_count()
        if dev.index is not None and dev.index >= count:
            raise error(f"{what}: {name!r} asked for, but torch sees {count} CUDA device(s) (0..{count - 1})")
    return dev


def cuda_name() -> str | None:
    """The first CUDA device's name, or None when torch sees none."""
    return torch.cuda.get_device_name(0) if torch.cuda.is_available() else None


def synchronize(dev: torch.device) -> None:
    """Wait for the device's queued work (a no-op on the CPU), so a timer reads finished work."""
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
