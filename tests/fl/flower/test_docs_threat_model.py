"""Review s34: docs/secure_aggregation.md §9/§13 claimed that the nodes check the mask plan "against the run's
spec" (the spec comes in the server's messages), that with ``--self-masks --dp-epsilon`` "DP bounds any one
update" against a malicious server (σ and DP itself were the server's choice), and listed what the server sees
without the per-client metrics that travel in clear (F9). These checks fail if a correction is dropped."""

from __future__ import annotations

from pathlib import Path

DOC = Path(__file__).resolve().parents[3] / "docs" / "secure_aggregation.md"


def _flat(text: str) -> str:
    return " ".join(text.split())


def _section(text: str, start: str, end: str) -> str:
    return _flat(text[text.index(start):text.index(end)])


def test_the_threat_model_says_the_spec_is_the_servers_and_names_the_floors() -> None:
    s9 = _section(DOC.read_text(encoding="utf-8"), "## 9. Threat model", "## 10. Performance")
    assert "against the run's spec" not in s9
    assert "**In deployments it is signed by the network's operator**" in s9  # s35: operator-signed spec
    assert "**What the signature does not fix:**" in s9 and "**Unsigned simulations**" in s9
    for floor in ("fewer than 2 participants", "a mask with no pair for it", "`min_survivors` below 2",
                  "a key mode other than its own", "a run tag other than the one of its keys stage",
                  "a second mask with one reservation", "a DP plan that is not the one it computes"):
        assert floor in s9, floor
    assert "In an unsigned simulation, within those floors a malicious server chooses the spec" in s9
    assert "A SuperNode runs only labqfl's ClientApp" in s9


def test_the_threat_model_lists_the_per_client_metrics_in_clear_and_the_shared_data_folder() -> None:
    s9 = _section(DOC.read_text(encoding="utf-8"), "## 9. Threat model", "## 10. Performance")
    assert "the client's training loss, its example count and its count of clipped values" in s9
    assert "the accountant does not cover them" in s9
    assert "separate processes, not separate OS users" in s9


def test_the_comparison_table_claims_no_dp_bound_against_a_server_that_changes_the_settings() -> None:
    s13 = _section(DOC.read_text(encoding="utf-8"), "## 13. What each scheme protects against", "## 14.")
    assert "DP bounds any one update" not in s13
    assert "**no bound** against a server that changes them" in s13
    assert "as long as the server keeps the run's DP settings" in s13
