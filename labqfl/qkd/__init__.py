"""QKD post-processing: slotting, sifting, parameter estimation, error correction, verification,
privacy amplification and the streaming orchestrator. Each stage is a library call.

The public names below are imported lazily (on first use), so ``import labqfl.contracts.types`` and the
light modules do not pay for Numba/SciPy start-up.

Stable API: ``reconcile_cascade(alice_bits, bob_bits, qber, *, seed=None)``,
``reconcile_ldpc(alice_bits, bob_bits, qber, *, seed=None)`` (each returns an object with
``.corrected`` and ``.leaked_bits``) and ``toeplitz_hash(bits, seed_bits, out_len)``.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "reconcile_cascade": "cascade",
    "reconcile_ldpc": "ldpc",
    "toeplitz_hash": "toeplitz",
    "AuthKeySupply": "authentication",
    "TranscriptAuthenticator": "authentication",
    "WegmanCarterAuthenticator": "authentication",
    "Distiller": "pipeline",
    "DistillSettings": "pipeline",
    "PairResult": "pipeline",
    "distill_stream": "pipeline",
    "SiftResult": "sifting",
    "sift": "sifting",
    "Slotter": "slotting",
    "SlottingParams": "slotting",
    "announcements_by_pair": "slotting",
    "verify_keys": "verification",
    "secure_key_length": "estimation",
    "SecurityParameters": "estimation",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    mod = _EXPORTS.get(name)
    if mod is None:
        raise AttributeError(f"module 'labqfl.qkd' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"labqfl.qkd.{mod}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(list(globals()) + __all__)
