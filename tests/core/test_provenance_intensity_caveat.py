"""A hardware key says its intensities were not measured by labqfl (review s36 H1 (c), s36 lab2 M4).

The decoy-state analysis takes each client's μ_k from the station file as exact (docs/protocol.md §7); labqfl at
most sets a VOA to the station file's attenuation (the N7764A driver) and measures no μ_k on hardware, so every
statement of what a hardware key rests on carries labqfl.provenance.INTENSITY_CAVEAT; simulated keys do not
(their μ_k are the simulator's own). The hardware/QRNG claim is conditional ("information-theoretically secure
if the declared mean photon numbers μ_k hold"), and the JSON flag ``information_theoretic`` (unchanged) has
``information_theoretic_condition`` beside it. All derived from the stored provenance, so the stored record is
unchanged and old blocks read with it.
"""

from __future__ import annotations

import itertools

import pytest

from labqfl.provenance import IT_PHRASE, Provenance, security_statement, summarize_blocks

CAVEAT = "μ_k are not measured by labqfl"  # labqfl.provenance.INTENSITY_CAVEAT
IT_CONDITION = "the declared mean photon numbers μ_k hold"  # labqfl.provenance.IT_CONDITION


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
    old = {k: v for k, v in d.items() if k not in ("security", "information_theoretic",
                                                          "information_theoretic_condition")}  # a block stored earlier
    assert Provenance.from_dict(old) == p and set(old) == {"physical_layer", "randomness", "protocol", "eps_sec",
                                                           "eps_cor", "eps_auth", "eps_total"}
    text = security_statement(Provenance.from_dict(old))
    assert text.startswith(IT_PHRASE) and CAVEAT in text.split("; ")[-1] and "station file" in text
    with_auth = summarize_blocks([_block("hardware", "qrng"), {"meta": {"kind": "preshared-auth", "simulated": True}}])
    assert CAVEAT in with_auth["security"].split("; ")[-1]


def test_the_information_theoretic_claim_is_conditional_on_the_intensities() -> None:
    """review s36 lab2 M4: "information-theoretically secure …; μ_k were not verified" contradicted itself."""
    p = Provenance("hardware", "qrng", eps_total=1e-10)
    text = security_statement(p)
    assert text.startswith(f"{IT_PHRASE} if the declared mean photon numbers μ_k hold, "), text
    assert "attenuation the station file gives" in text and "options.attenuation_db, read back" in text
    assert "no labqfl procedure sets a VOA" not in text  # out of date since the N7764A driver sets it
    d = p.as_dict()
    assert d["information_theoretic"] is True and d["information_theoretic_condition"] == IT_CONDITION
    s = summarize_blocks([_block("hardware", "qrng")])
    assert s["information_theoretic"] is True and s["information_theoretic_condition"] == IT_CONDITION
    assert s["weakest"]["information_theoretic_condition"] == IT_CONDITION
    for layer, rnd in (("hardware", "csprng"), ("simulated", "qrng"), ("hardware", "seeded")):
        q = Provenance(layer, rnd, eps_total=1e-10)
        assert q.as_dict()["information_theoretic_condition"] is None
        assert summarize_blocks([_block(layer, rnd)])["information_theoretic_condition"] is None
    auth = summarize_blocks([_block("hardware", "qrng"), {"meta": {"kind": "preshared-auth", "simulated": True}}])
    assert auth["information_theoretic"] is False and auth["information_theoretic_condition"] is None
    assert auth["weakest"]["information_theoretic_condition"] is None
