"""Each end's claim of what its key rests on travels inside the block's tagged transcript (review s35 leak F7).

``block/open`` (Ci) and ``block/ok`` (Cj) carry the sending end's own randomness source and physical layer
(:data:`labqfl.qkd.twoparty.ORIGIN_FIELDS`); both messages are absorbed into the Wegman–Carter-tagged transcript,
so a claim altered on the way (a man in the middle above TLS making a seeded partner look CSPRNG-backed)
refuses the block at both ends, and an honest one reaches the other end's outcome as it was sent.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import pytest
from labqfl.sim_backends import SagnacTestbed

from labqfl.qkd.estimation import SecurityParameters
from labqfl.qkd.messaging import LocalChannel, Message, decode_message, encode_message
from labqfl.qkd.pipeline import DistillSettings, MemorySink, distill_stream

DUR = 0.05
CLAIM_I = {"randomness": "csprng", "physical_layer": "simulated"}
CLAIM_J = {"randomness": "seeded", "physical_layer": "simulated"}


def _small_station() -> Any:
    path = Path(__file__).parents[1] / "qkd" / "pipeline" / "qkdpp_helpers.py"
    spec = importlib.util.spec_from_file_location("_qkdpp_helpers_origin", path)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.small_station()


@pytest.fixture(scope="module")
def acquisition() -> tuple[Any, list[Any], dict[str, Any]]:
    cfg = _small_station()
    tb = SagnacTestbed(cfg)
    return cfg, list(tb.stream(DUR)), {c: tb.client_log(c) for c in cfg.client_names}


class _Meddler(LocalChannel):
    """Sets each end's claim; with ``forge``, rewrites Cj's claim in the first ``block/ok`` after Cj's
    authenticator absorbed the original (in transit)."""

    def __init__(self, ei: Any, ej: Any, forge: bool) -> None:
        super().__init__(ej, ei.tx, ej.tx)
        ei.origin, ej.origin = dict(CLAIM_I), dict(CLAIM_J)
        self.forge, self.forged = forge, 0

    def _transfer(self, msg: Message, sender: Any, receiver: Any) -> Message:
        if not self.forge or self.forged or msg.kind != "block/ok":
            return super()._transfer(msg, sender, receiver)
        self.forged += 1
        payload = encode_message(msg)
        tag = sender.tag(payload)
        payload = encode_message(Message(msg.kind, {**msg.fields, "randomness": "csprng"}))
        receiver.verify(payload, tag)
        return decode_message(payload)


def _run(acq: tuple[Any, list[Any], dict[str, Any]], forge: bool) -> tuple[Any, list[Any], list[Any]]:
    cfg, blocks, logs = acq
    chans: list[_Meddler] = []
    outcomes_j: list[Any] = []
    sink = MemorySink()

    def channel(ei: Any, ej: Any) -> _Meddler:
        ej.on_outcome = outcomes_j.append
        chans.append(_Meddler(ei, ej, forge))
        return chans[0]

    res, _ = distill_stream(cfg, blocks, logs, sink, DistillSettings(block_bits=1_000_000,
                                                                     params=SecurityParameters(eps_sec=1e-4)),
                            total_slots=int(DUR * cfg.laser.rep_rate_hz), pair_channel=channel)
    (r,) = res.values()
    return r, outcomes_j, chans


def test_each_end_gets_the_other_s_claim_as_sent(acquisition: Any) -> None:
    r, outcomes_j, _ = _run(acquisition, forge=False)
    assert outcomes_j and outcomes_j[0].accepted and not r.blocks[0].abort
    assert outcomes_j[0].peer_origin == CLAIM_I  # Cj's outcome: Ci's claim from block/open


def test_a_claim_altered_in_transit_refuses_the_block_at_both_ends(acquisition: Any) -> None:
    r, outcomes_j, chans = _run(acquisition, forge=True)
    assert chans[0].forged == 1
    blk = r.blocks[0]
    assert blk.abort and blk.final_key_bits == 0 and not outcomes_j[0].accepted
    assert "transcript authentication failed" in blk.abort_reason + outcomes_j[0].reason
