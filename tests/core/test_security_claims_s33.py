"""Review s33 (GUI user + key-security claims), M5, M6, L1, L2: the authentication secret's origin in the key
provenance, and no unconditional information-theoretic wording where the keys may not have it."""

from __future__ import annotations

import itertools
import re
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from labqfl.provenance import (
    IT_PHRASE,
    Provenance,
    mask_key_security,
    provenance_of_block_ids,
    security_statement,
    summarize_blocks,
    weakest_summary,
)

ROOT = Path(__file__).resolve().parents[2]
#: any information-theoretic wording ("information-theoretic", "information-theoretically secure", …)
IT_WORDS = re.compile(r"information[- ]theoretic", re.IGNORECASE)
BOOTSTRAP_REASON = "authentication bootstrapped from a secret labqfl generated on this machine; both stores hold it"


def _block(layer: str, rnd: str, bid: str = "b1") -> dict[str, Any]:
    return {"block_id": bid, "run_id": "r1",
            "meta": {"provenance": Provenance(layer, rnd, eps_sec=1e-10, eps_cor=1e-15, eps_auth=1e-14,
                                              eps_total=1e-10, intensity_rel_uncertainty=0.05).as_dict()}}


def _preshared(bid: str = "preshared-x", **meta: Any) -> dict[str, Any]:
    return {"block_id": bid, "run_id": "r0", "meta": {"kind": "preshared-auth", "nbits": 65536, **meta}}


@pytest.mark.parametrize("simulated", [{"simulated": True}, {}], ids=["simulated", "unmarked"])
def test_a_labqfl_bootstrapped_authentication_keeps_hardware_qrng_keys_from_an_it_claim(simulated) -> None:
    """M5 (the reviewer's prov_auth.py): a hardware/QRNG block of a pair whose authentication started from the
    distiller's bootstrap (``"simulated": true``; a block that does not say counts as one) was
    "information-theoretically secure"; now the statement gives the reason and nothing says information-theoretic."""
    s = summarize_blocks([_block("hardware", "qrng"), _preshared(**simulated)])
    assert s["information_theoretic"] is False
    assert BOOTSTRAP_REASON in s["security"] and BOOTSTRAP_REASON in s["auth_secret"]
    assert IT_PHRASE not in s["security"] and IT_PHRASE not in s["weakest"]["security"]
    assert s["weakest"]["information_theoretic"] is False
    assert s["preshared_blocks"] == 1 and s["preshared_generated_by_labqfl"] == 1
    # a computational block says it too
    c = summarize_blocks([_block("hardware", "csprng"), _preshared(simulated=True)])
    assert c["security"].startswith("computational") and BOOTSTRAP_REASON in c["security"]


def test_an_operator_loaded_secret_is_no_caveat_and_a_node_preshare_secret_is_computational() -> None:
    loaded = summarize_blocks([_block("hardware", "qrng"), _preshared(simulated=False, source="secret.bin")])
    assert loaded["information_theoretic"] is True and loaded["auth_secret"] is None
    assert loaded["security"].startswith(IT_PHRASE)
    node = summarize_blocks([_block("hardware", "qrng"), _preshared(simulated=False, randomness="csprng")])
    assert node["information_theoretic"] is False and "OS CSPRNG" in node["security"]
    assert IT_PHRASE not in node["security"]
    # a caveated hardware/QRNG pair is not stronger than a hardware/CSPRNG one without caveat
    plain_csprng = summarize_blocks([_block("hardware", "csprng"), _preshared(simulated=False)])
    boot = summarize_blocks([_block("hardware", "qrng"), _preshared(simulated=True)])
    assert weakest_summary([loaded, boot]) is boot
    assert weakest_summary([plain_csprng, boot])["information_theoretic"] is False


class _Store:
    def __init__(self, rows: list[dict[str, Any]]) -> None:
        self.rows = rows

    def blocks(self, pair: str) -> list[dict[str, Any]]:
        return list(self.rows)


def test_the_blocks_a_training_consumed_carry_their_pairs_authentication_origin() -> None:
    """M5 through ``train.key_provenance``/``mask_key_security``: only the consumed block IDs were summarised,
    so the pair's pre-shared bootstrap was never looked at."""
    st = _Store([_block("hardware", "qrng", "k1"), _preshared(simulated=True)])
    s = provenance_of_block_ids(st, "C1-C2", ["k1"])
    assert s["information_theoretic"] is False and BOOTSTRAP_REASON in s["security"]
    src = SimpleNamespace(name="qkd", stores={"C1": st, "C2": st}, blocks_used={"C1-C2": ["k1"]})
    text = mask_key_security(src)
    assert BOOTSTRAP_REASON in text and IT_PHRASE not in text


def _non_it_statements() -> list[str]:
    from labqfl.app.training import SELF_MASK_SECURITY

    out = []
    for layer, rnd in itertools.product(("simulated", "hardware"), ("qrng", "csprng", "seeded")):
        if (layer, rnd) == ("hardware", "qrng"):
            continue
        out.append(security_statement(Provenance(layer, rnd, eps_total=1e-10)))
        out.append(summarize_blocks([_block(layer, rnd), _preshared(simulated=True)])["security"])
    out.append(summarize_blocks([_block("hardware", "qrng"), _preshared(simulated=True)])["security"])
    out.append(mask_key_security(None))  # CSPRNG masks
    return out + [s + SELF_MASK_SECURITY for s in list(out)]


def test_no_non_hardware_statement_says_information_theoretic_in_any_form() -> None:
    """L2: the self-mask suffix said "(information-theoretic given the pair keys)" inside computational and simulated
    statements; the check now looks for any information-theoretic wording, not only the exact IT phrase."""
    for text in _non_it_statements():
        assert not IT_WORDS.search(text), text


def test_docs_state_when_qkd_store_masks_are_information_theoretic() -> None:
    """M6: docs/secure_aggregation.md called masks from the QKD stores information-theoretically secure outright;
    docs/protocol.md §7 lists the authentication secret among the assumptions."""
    sa = " ".join((ROOT / "docs" / "secure_aggregation.md").read_text(encoding="utf-8").split())
    assert "one-time pads: **information-theoretically secure**." not in sa
    assert "information-theoretically secure *only when the keys are*" in sa
    proto = (ROOT / "docs" / "protocol.md").read_text(encoding="utf-8")
    s7 = " ".join(proto[proto.index("## 7. Assumptions"):proto.index("## 8.")].split())
    assert "authentication secret" in s7 and BOOTSTRAP_REASON in s7


def test_the_tagline_claims_no_security() -> None:
    """L1: ``labqfl -h`` and the README's first line said "Quantum-secure federated learning"."""
    from labqfl.cli import app

    assert "secure federated" not in (app.info.help or "").lower()
    assert "secure aggregation masked by QKD keys" in (app.info.help or "")
    line3 = (ROOT / "README.md").read_text(encoding="utf-8").splitlines()[2]
    assert "Quantum-secure" not in line3 and "masked by QKD keys" in line3


def test_the_self_mask_text_has_no_information_theoretic_wording() -> None:
    """L2: ``SELF_MASK_SECURITY`` is appended to every statement, computational and simulated ones included; it said
    "(information-theoretic given the pair keys)"."""
    from labqfl.app.training import SELF_MASK_SECURITY

    assert not IT_WORDS.search(SELF_MASK_SECURITY)
    assert "as secret as those keys" in SELF_MASK_SECURITY


def test_a_node_sets_key_security_names_the_pairs_authentication_origin(tmp_path: Path) -> None:
    """M5 over nodes (``labqfl.app.nodes.NodeSet._security``, the GUI's Nodes panel): only the accepted blocks and
    their refills were summarised, so a node set's pair never showed its bootstrapped authentication secret."""
    import numpy as np

    from labqfl.app.nodes import NodeSet
    from labqfl.keystore import KeyStore, node_store_path

    bits = np.zeros(4096, dtype=np.uint8)
    with KeyStore(node_store_path("C1", tmp_path), node="C1") as st:
        st.add_block("C1-C2", bits, block_id="preshared-x", purpose="auth",
                     meta={"kind": "preshared-auth", "simulated": True})
        st.add_block("C1-C2", bits, block_id="acc-1", run_id="r1",
                     meta={"provenance": Provenance("hardware", "qrng", eps_sec=1e-10, eps_cor=1e-15, eps_auth=1e-14,
                                                    eps_total=1e-10).as_dict()})
    ns = SimpleNamespace(network=SimpleNamespace(data_of=lambda node: tmp_path), cfg=None)
    text, it, label, source = NodeSet._security(ns, "C1-C2", {"accepted_blocks": ["acc-1"]})  # type: ignore[arg-type]
    assert source == "blocks" and it is False and BOOTSTRAP_REASON in text and IT_PHRASE not in text
