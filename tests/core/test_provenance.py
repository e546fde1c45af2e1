"""Key provenance (issue 16 item 5): the truth table of what a key's security rests on, the
weakest-of rules, and the physical layer / randomness read from a station config and client logs."""

from __future__ import annotations

import itertools
from pathlib import Path
from types import SimpleNamespace

import pytest

from labqfl.config import load_station_config, parse_station_config
from labqfl.provenance import (
    IT_PHRASE,
    PROTOCOL,
    Provenance,
    client_randomness,
    is_information_theoretic,
    pair_provenance,
    security_statement,
    station_physical_layer,
    summarize_blocks,
    weakest,
    weakest_randomness,
    weakest_summary,
)

# (physical layer, randomness) -> (information-theoretic?, words the statement must contain)
TRUTH_TABLE = {
    ("hardware", "qrng"): (True, [IT_PHRASE, "docs/protocol.md §7"]),
    ("hardware", "csprng"): (False, ["computational", "CSPRNG", "unpredictable"]),
    ("hardware", "seeded"): (False, ["not secret", "public seed"]),
    ("simulated", "qrng"): (False, ["no physical security", "simulated"]),
    ("simulated", "csprng"): (False, ["no physical security", "simulated", "testing"]),
    ("simulated", "seeded"): (False, ["not secret", "public seed", "simulated"]),
}


@pytest.mark.parametrize(("layer", "rnd"), sorted(TRUTH_TABLE))
def test_truth_table_of_security_statements(layer, rnd):
    it, words = TRUTH_TABLE[(layer, rnd)]
    # a declared intensity uncertainty (review s36 physics F2): without one hardware/qrng makes no IT claim
    p = Provenance(layer, rnd, eps_sec=1e-10, eps_cor=1e-15, eps_auth=1e-14, eps_total=1.0011e-10, intensity_rel_uncertainty=0.05)
    text = security_statement(p)
    assert is_information_theoretic(p) is it
    assert (IT_PHRASE in text) is it, text
    for w in words:
        assert w in text, (w, text)
    d = p.as_dict()
    assert d["information_theoretic"] is it and d["security"] == text and d["protocol"] == PROTOCOL
    assert Provenance.from_dict(d) == p


def test_hardware_qrng_statement_names_the_epsilon():
    text = security_statement(Provenance("hardware", "qrng", eps_total=2.5e-10, intensity_rel_uncertainty=0.05))
    assert text.startswith(IT_PHRASE) and "2.5e-10" in text


def test_bad_provenance_values_are_refused_with_the_field_named():
    with pytest.raises(ValueError, match="physical_layer"):
        Provenance("emulated", "qrng")
    with pytest.raises(ValueError, match="randomness"):
        Provenance("hardware", "dice")
    with pytest.raises(ValueError, match="eps_total"):
        Provenance("hardware", "qrng", eps_total=2.0)
    with pytest.raises(ValueError, match="lacks field"):
        Provenance.from_dict({"randomness": "qrng"})


def test_weakest_randomness_and_weakest_provenance():
    assert weakest_randomness("qrng", "csprng") == "csprng"
    assert weakest_randomness("qrng", "seeded") == "seeded"
    assert weakest_randomness("qrng", "qrng") == "qrng"
    with pytest.raises(ValueError, match="unknown randomness"):
        weakest_randomness("qrng", "lava-lamp")
    provs = [Provenance(layer, rnd) for layer, rnd in TRUTH_TABLE]
    # a mix is only as strong as its weakest member: seeded beats everything, then simulated
    assert weakest(provs).randomness == "seeded"
    assert weakest([Provenance("hardware", "qrng"), Provenance("simulated", "qrng")]).physical_layer == "simulated"
    assert weakest([Provenance("hardware", "qrng"), Provenance("hardware", "csprng")]).randomness == "csprng"
    # among equal classes the larger ε
    a, b = Provenance("hardware", "qrng", eps_total=1e-10), Provenance("hardware", "qrng", eps_total=3e-10)
    assert weakest([a, b]) == b and weakest([b, a]) == b
    assert weakest([]) is None
    for p, q in itertools.permutations(provs, 2):  # never stronger than either
        w = weakest([p, q])
        assert w in (p, q)
        assert not is_information_theoretic(w) or (is_information_theoretic(p) and is_information_theoretic(q))


def _fake_cfg(simulated: list[bool], randomness: dict[str, str | None], band: float | None = None):
    """``band``: every client's declared intensity_rel_uncertainty (None: none declared)."""
    roles = {f"r{i}": SimpleNamespace(simulated=s) for i, s in enumerate(simulated)}

    def client(name):
        r = randomness[name]
        c = SimpleNamespace(name=name, intensity_rel_uncertainty=band)
        if r is not None:
            c.randomness = r
        return c

    return SimpleNamespace(roles=lambda: roles, client=client, intensity_rel_uncertainty=lambda: band or 0.0)


def test_physical_layer_is_simulated_when_any_role_is():
    assert station_physical_layer(load_station_config()) == "simulated"  # the default station
    assert station_physical_layer(_fake_cfg([False, False], {})) == "hardware"
    assert station_physical_layer(_fake_cfg([False, True, False], {})) == "simulated"


def test_real_drivers_on_emulators_are_a_simulated_physical_layer(tmp_path: Path) -> None:
    """The emulated-hardware example has real drivers in its roles, on pyvisa-sim devices and emulators: its
    keys rest on a simulated physical layer, whichever flag or device makes it so."""
    example = load_station_config(Path(__file__).resolve().parents[2] / "examples" / "station_emulated_hardware.toml")
    assert station_physical_layer(example) == "simulated"
    d = example.model_dump(mode="json", exclude_none=True)
    for role in (d["laser"], *(c[k] for c in d["clients"] for k in ("phase_modulator", "attenuator"))):
        role.pop("visa_library", None)  # as on a bench: the real resources
    assert all(det["driver"] == "SingleQuantumEos" for det in d["detectors"].values())  # real driver, emulated
    for det in d["detectors"].values():
        det.update(resource="TCPIP0::192.0.2.10::12000::SOCKET")
    d["power_meter"].update(driver="ThorlabsPM100USB", resource="USB0::0x1313::0x8072::P2000001::INSTR")
    d["power_meter"].pop("options", None)
    flags = ("emulate_pattern_generators", "emulate_time_tagger", "emulate_detectors")
    for on in (("emulate_pattern_generators",), ("emulate_time_tagger",), ("emulate_time_tagger", "emulate_detectors")):
        others = {f: f in on for f in flags}
        cfg = parse_station_config({**d, "simulation": {**d["simulation"], **others}}, "bench.toml")
        assert station_physical_layer(cfg) == "simulated", on
    bench = parse_station_config({**d, "simulation": {**d["simulation"], **dict.fromkeys(flags, False)}}, "bench.toml")
    assert station_physical_layer(bench) == "hardware"
    # emulate_detectors alone (the load refuses it without a simulated loop, but the label never rests on that)
    only_detectors = bench.model_copy(update={"simulation": bench.simulation.model_copy(
        update={"emulate_detectors": True})})
    assert station_physical_layer(only_detectors) == "simulated"
    with_sim_device = bench.model_copy(deep=True)
    with_sim_device.laser.visa_library = "@sim:thorlabs_pro8000.yaml"
    assert station_physical_layer(with_sim_device) == "simulated"


def test_pair_randomness_is_the_weaker_client_and_logs_take_precedence():
    cfg = _fake_cfg([False], {"C1": "qrng", "C2": "csprng", "C3": None})
    assert pair_provenance(cfg, ("C1", "C2")).randomness == "csprng"
    # a client config without the field: the landed counter-based generator, i.e. seeded
    assert client_randomness(cfg, "C3") == "seeded"
    assert pair_provenance(cfg, ("C1", "C3")).randomness == "seeded"
    # the log's own mark wins over the config field
    logs = {"C1": SimpleNamespace(randomness="qrng"), "C2": SimpleNamespace(randomness="qrng")}
    p = pair_provenance(cfg, ("C1", "C2"), logs, eps_total=1e-10)
    # no intensity uncertainty declared: μ_k taken as exact, no information-theoretic claim (review s36 physics F2)
    assert (p.physical_layer, p.randomness) == ("hardware", "qrng") and p.intensity_rel_uncertainty is None
    assert not is_information_theoretic(p)
    banded = pair_provenance(_fake_cfg([False], {"C1": "qrng", "C2": "csprng", "C3": None}, band=0.05), ("C1", "C2"),
                             logs, eps_total=1e-10)
    assert banded.intensity_rel_uncertainty == 0.05 and is_information_theoretic(banded)
    with pytest.raises(ValueError, match="client 'C1'.*unknown randomness"):
        client_randomness(cfg, "C1", SimpleNamespace(randomness="coin"))


def test_block_summary_never_claims_more_than_its_weakest_or_unrecorded_blocks():
    it = Provenance("hardware", "qrng", eps_total=1e-10, intensity_rel_uncertainty=0.05).as_dict()
    sim = Provenance("simulated", "csprng", eps_total=1e-10).as_dict()
    only_it = summarize_blocks([{"meta": {"provenance": it}}, {"meta": {"provenance": it}}])
    assert only_it["information_theoretic"] and IT_PHRASE in only_it["security"]
    assert only_it["blocks"] == {"hardware/qrng": 2}
    mixed = summarize_blocks([{"meta": {"provenance": it}}, {"meta": {"provenance": sim}}])
    assert not mixed["information_theoretic"] and IT_PHRASE not in mixed["security"]
    assert "no physical security" in mixed["security"] and mixed["blocks"] == {"hardware/qrng": 1, "simulated/csprng": 1}
    unrec = summarize_blocks([{"meta": {"provenance": it}}, {"meta": {"eps_sec": 1e-10}},
                              {"meta": {"kind": "preshared-auth"}}])
    assert not unrec["information_theoretic"] and unrec["unrecorded_blocks"] == 1 and unrec["preshared_blocks"] == 1
    assert "no provenance record" in unrec["security"]
    assert summarize_blocks([])["security"] == "no key blocks"
    assert weakest_summary([only_it, mixed]) is mixed and weakest_summary([only_it, unrec]) is unrec


def test_gui_key_pool_label_states_what_the_default_station_keys_rest_on():
    pytest.importorskip("PySide6")
    from labqfl.gui.panels import key_provenance_text

    cfg = load_station_config()
    text = key_provenance_text(cfg)
    assert text.startswith("Keys distilled here (simulated/") and IT_PHRASE not in text
    assert "no physical security" in text or "not secret" in text
