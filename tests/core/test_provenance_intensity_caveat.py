"""A hardware key says its intensities were not verified by labqfl (review s36 H1 (c)).

The decoy-state analysis takes each client's μ_k from the station file as exact (docs/protocol.md §7) and no
labqfl procedure sets or measures them on hardware yet, so every statement of what a hardware key rests on
carries labqfl.provenance.INTENSITY_CAVEAT; simulated keys do not (their μ_k are the simulator's own). The
caveat is derived from the stored provenance, so the stored record is unchanged and old blocks read with it.
"""

from __future__ import annotations

import itertools

import pytest

from labqfl.provenance import IT_PHRASE, Provenance, security_statement, summarize_blocks

CAVEAT = "μ_k were not verified by labqfl"  # labqfl.provenance.INTENSITY_CAVEAT


def _block(layer: str, rnd: str) -> dict[str, object]:
    return {"meta": {"provenance": Provenance(layer, rnd, eps_total=1e-10).as_dict()}}


@pytest.mark.parametrize(("layer", "rnd"), list(itertools.product(("hardware", "simulated"), ("qrng", "csprng", "seeded"))))
def test_every_hardware_statement_says_the_intensities_were_not_verified(layer: str, rnd: str) -> None:
    p = Provenance(layer, rnd, eps_total=1e-10)
    text = security_statement(p)
    assert (CAVEAT in text) is (layer == "hardware"), text
    assert (CAVEAT in summarize_blocks([_block(layer, rnd)])["security"]) is (layer == "hardware")
    assert (CAVEAT in p.as_dict()["security"]) is (layer == "hardware")


def test_the_caveat_is_derived_not_stored() -> None:
    p = Provenance("hardware", "qrng", eps_total=2.5e-10)
    d = p.as_dict()
    old = {k: v for k, v in d.items() if k not in ("security", "information_theoretic")}  # a block stored earlier
    assert Provenance.from_dict(old) == p and set(old) == {"physical_layer", "randomness", "protocol", "eps_sec",
                                                           "eps_cor", "eps_auth", "eps_total"}
    text = security_statement(Provenance.from_dict(old))
    assert text.startswith(IT_PHRASE) and CAVEAT in text.split("; ")[-1] and "station file" in text
    with_auth = summarize_blocks([_block("hardware", "qrng"), {"meta": {"kind": "preshared-auth", "simulated": True}}])
    assert CAVEAT in with_auth["security"].split("; ")[-1]
