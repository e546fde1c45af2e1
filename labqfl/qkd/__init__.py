"""QKD post-processing: slotting, sifting, parameter estimation, error correction, verification,
privacy amplification and the streaming orchestrator. Each stage is a library call."""

from __future__ import annotations

from labqfl.qkd.authentication import (
           AuthKeySupply,
           TranscriptAuthenticator,
           WegmanCarterAuthenticator,
)
from labqfl.qkd.cascade import reconcile_cascade
from labqfl.qkd.ldpc import reconcile_ldpc
from labqfl.qkd.pipeline import Distiller, DistillSettings, PairResult, distill_stream
from labqfl.qkd.sifting import SiftResult, sift
from labqfl.qkd.slotting import Slotter, SlottingParams, announcements_by_pair
from labqfl.qkd.toeplitz import toeplitz_hash
from labqfl.qkd.verification import verify_keys

__all__ = ["reconcile_cascade", "reconcile_ldpc", "toeplitz_hash",
           "AuthKeySupply", "TranscriptAuthenticator", "WegmanCarterAuthenticator", "Distiller",
           "DistillSettings", "PairResult", "distill_stream", "SiftResult", "sift", "Slotter", "SlottingParams",
           "announcements_by_pair", "verify_keys"]
