"""A hardware key says its intensities were not measured by labqfl (review s36 H1 (c), s36 lab2 M4), and the
machine-readable claim is honest about them (review s36 physics F2).

The decoy-state analysis takes each client's μ_k from the station file (docs/protocol.md §7); labqfl at most sets
a VOA to the station file's attenuation (the N7764A driver) and measures no μ_k on hardware, so every statement of
what a hardware key rests on carries labqfl.provenance.INTENSITY_CAVEAT; simulated keys do not (their μ_k are the
simulator's own). A station declares how well it knows the μ_k (``clients.intensity_rel_uncertainty`` δ), the
analysis then holds for every μ within ±δ, and the block records δ. ``information_theoretic`` is true only for
hardware + QRNG **with** a recorded δ, conditional on the band ("information-theoretically secure if each true mean
photon number lies within the declared calibration uncertainty …"); without one (and for blocks stored before the
field) the claim is withheld and the statement says why. Before, the flag was true with a contradicting caveat.
"""

from __future__ import annotations

import itertools

import pytest

from labqfl.provenance import IT_PHRASE, Provenance, security_statement, summarize_blocks

CAVEAT = "μ_k are not measured by labqfl"  # labqfl.provenance.INTENSITY_CAVEAT
#: labqfl.provenance.IT_CONDITION
IT_CONDITION = ("each true mean photon number lies within the declared calibration uncertainty "
                "(intensity_rel_uncertainty) of the declared μ_k")
WITHHELD = "claim withheld: not both clients of this pair declare an intensity calibration band"  # provenance.NO_BAND


def _block(layer: str, rnd: str, band: float | None = 0.05) -> dict[str, object]:
    return {"meta": {"provenance": Provenance(layer, rnd, eps_total=1e-10, intensity_rel_uncertainty=band).as_dict()}}


@pytest.mark.parametrize(("layer", "rnd"), list(itertools.product(("hardware", "simulated"), ("qrng", "csprng", "seeded"))))
def test_every_hardware_statement_says_the_intensities_were_not_verified(layer: str, rnd: str) -> None:
    p = Provenance(layer, rnd, eps_total=1e-10)
    text = security_statement(p)
    assert (CAVEAT in text) is (layer == "hardware"), text
    assert (CAVEAT in summarize_blocks([_block(layer, rnd)])["security"]) is (layer == "hardware")
    assert (CAVEAT in p.as_dict()["security"]) is (layer == "hardware")


def test_the_caveat_is_derived_and_an_old_block_makes_no_claim() -> None:
    p = Provenance("hardware", "qrng", eps_total=2.5e-10, intensity_rel_uncertainty=0.05)
    d = p.as_dict()
    stored = {k: v for k, v in d.items() if k not in ("security", "information_theoretic",
                                                      "information_theoretic_condition")}
    assert Provenance.from_dict(stored) == p and set(stored) == {
        "physical_layer", "randomness", "protocol", "eps_sec", "eps_cor", "eps_auth", "eps_total",
        "intensity_rel_uncertainty"}
    text = security_statement(Provenance.from_dict(stored))
    assert text.startswith(IT_PHRASE) and "(±0.05)" in text and CAVEAT in text.split("; ")[-1] and "station file" in text
    with_auth = summarize_blocks([_block("hardware", "qrng"), {"meta": {"kind": "preshared-auth", "simulated": True}}])
    assert CAVEAT in with_auth["security"].split("; ")[-1]
    # a block stored before the field existed: its μ_k were taken as exact, so it is no longer called IT
    old = {k: v for k, v in stored.items() if k != "intensity_rel_uncertainty"}
    o = Provenance.from_dict(old)
    assert o.intensity_rel_uncertainty is None and o.as_dict()["information_theoretic"] is False
    assert security_statement(o).startswith(WITHHELD) and IT_PHRASE not in security_statement(o)


def test_the_information_theoretic_flag_needs_a_declared_intensity_uncertainty() -> None:
    """review s36 lab2 M4: "information-theoretically secure …; μ_k were not verified" with the JSON flag true;
    review s36 physics F2: an error in μ went straight into the key. The flag is now true only when the analysis
    allowed the declared band."""
    p = Provenance("hardware", "qrng", eps_total=1e-10, intensity_rel_uncertainty=0.05)
    text = security_statement(p)
    assert text.startswith(f"{IT_PHRASE} if {IT_CONDITION} (±0.05), "), text
    assert "attenuation the station file gives" in text and "options.attenuation_db, read back" in text
    d = p.as_dict()
    assert d["information_theoretic"] is True and d["information_theoretic_condition"] == f"{IT_CONDITION} (±0.05)"
    assert d["intensity_rel_uncertainty"] == 0.05
    s = summarize_blocks([_block("hardware", "qrng")])
    assert s["information_theoretic"] is True and s["information_theoretic_condition"] == f"{IT_CONDITION} (±0.05)"
    assert s["weakest"]["information_theoretic_condition"] == f"{IT_CONDITION} (±0.05)"
    bare = Provenance("hardware", "qrng", eps_total=1e-10)  # none declared
    assert bare.as_dict()["information_theoretic"] is False and bare.as_dict()["information_theoretic_condition"] is None
    assert security_statement(bare).startswith(WITHHELD) and IT_PHRASE not in security_statement(bare)
    mixed = summarize_blocks([_block("hardware", "qrng"), _block("hardware", "qrng", None)])
    assert mixed["information_theoretic"] is False and mixed["security"].startswith(WITHHELD)  # the weaker block
    for layer, rnd in (("hardware", "csprng"), ("simulated", "qrng"), ("hardware", "seeded")):
        q = Provenance(layer, rnd, eps_total=1e-10, intensity_rel_uncertainty=0.05)
        assert q.as_dict()["information_theoretic_condition"] is None
        assert summarize_blocks([_block(layer, rnd)])["information_theoretic_condition"] is None
    auth = summarize_blocks([_block("hardware", "qrng"), {"meta": {"kind": "preshared-auth", "simulated": True}}])
    assert auth["information_theoretic"] is False and auth["information_theoretic_condition"] is None
    assert auth["weakest"]["information_theoretic_condition"] is None
    with pytest.raises(ValueError, match="intensity_rel_uncertainty"):
        Provenance("hardware", "qrng", intensity_rel_uncertainty=1.5)


def test_a_declared_delta_of_zero_earns_no_claim() -> None:
    """Review s37 physics F2: δ = 0 is the exact-μ analysis bit for bit, which without a declaration gets no
    claim; declared, it made a hardware/QRNG block information-theoretic "(±0)". Now the flag needs δ > 0."""
    z = Provenance("hardware", "qrng", eps_total=1e-10, intensity_rel_uncertainty=0.0)
    d = z.as_dict()
    assert d["information_theoretic"] is False and d["information_theoretic_condition"] is None
    assert security_statement(z).startswith(WITHHELD) and IT_PHRASE not in security_statement(z)
    s = summarize_blocks([_block("hardware", "qrng", 0.0)])
    assert s["information_theoretic"] is False and IT_PHRASE not in s["security"]
    mixed = summarize_blocks([_block("hardware", "qrng", 0.05), _block("hardware", "qrng", 0.0)])
    assert mixed["weakest"]["intensity_rel_uncertainty"] == 0.0 and mixed["information_theoretic"] is False


def test_a_summary_states_the_narrowest_band_of_its_blocks_with_the_number() -> None:
    """Review s37 physics F3: blocks at ±0.05 and ±0.2 were summarised as "±0.2" (weakest() ignored δ), and
    information_theoretic_condition carried no number. A ±0.05 block is secure only if every μ lies within ±5 %:
    the harder condition, so it is the weakest, and the condition names it."""
    a = {"meta": {"provenance": Provenance("hardware", "qrng", eps_total=1e-9, intensity_rel_uncertainty=0.05).as_dict()}}
    c = {"meta": {"provenance": Provenance("hardware", "qrng", eps_total=2e-9, intensity_rel_uncertainty=0.2).as_dict()}}
    for blocks in ([a, c], [c, a]):
        s = summarize_blocks(blocks)
        assert s["weakest"]["intensity_rel_uncertainty"] == 0.05, blocks
        assert "(±0.05)" in s["security"] and "±0.2" not in s["security"]
        assert s["information_theoretic_condition"] == f"{IT_CONDITION} (±0.05)"
    from labqfl.provenance import weakest_summary
    sa, sc = summarize_blocks([a]), summarize_blocks([c])
    assert weakest_summary([sc, sa]) is sa and weakest_summary([sa, sc]) is sa


def test_the_withheld_claim_says_what_the_analysis_did() -> None:
    """Review s37 physics F5: with C1 declaring δ = 0.05 and C2 none, pair C1-C2 was analysed at ±0.05 (the
    station's largest δ) but the statement said "the analysis took the declared μ_k as exact"."""
    from labqfl.config import load_station_config
    from labqfl.provenance import pair_provenance

    cfg = load_station_config()
    clients = [c.model_copy(update={"intensity_rel_uncertainty": 0.05 if i == 0 else None})
               for i, c in enumerate(cfg.clients)]
    cfg = cfg.model_copy(update={"clients": clients})
    assert cfg.intensity_rel_uncertainty() == 0.05
    p = pair_provenance(cfg, (clients[0].name, clients[1].name))
    assert p.intensity_rel_uncertainty is None
    text = Provenance("hardware", "qrng", intensity_rel_uncertainty=None).as_dict()["security"]
    assert text.startswith(WITHHELD) and "analysis took the declared μ_k as exact" not in text
    assert "the analysis used the station's largest declared δ" in text
