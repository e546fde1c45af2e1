"""Review s39 user F10 and F3.

F10: the key-pool plot's bar "consumed by FL masks (this run)" was 4 480 bits per pair over nodes: 10 rounds of
192 mask bits + 256 refs tag key bits, so 57 % of it was not masks. The label now says masks + refs tags, with the
split per round where the metrics give it.

F3: docs/lab_setup.md and the ``intensity_rel_uncertainty`` field description gave δ > 0 as the condition for an
information-theoretically secure hardware key, leaving out QRNG randomness, which labqfl.provenance also requires
and which no client can declare yet. Both now state the three conditions and the CSPRNG consequence.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import labqfl.report as report
from labqfl.config import ClientConfig
from labqfl.provenance import Provenance, is_information_theoretic
from labqfl.runs import RunRecord

ROOT = Path(__file__).resolve().parents[2]


def _labels(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, train: dict[str, Any]) -> dict[str, list[float]]:
    import matplotlib.pyplot as plt

    bars: dict[str, list[float]] = {}
    real = report._fig

    def fig(path: Path, draw: Any, figsize: Any = (7.0, 3.6)) -> Path:
        if path.name == "key_pools.png":
            _, ax = plt.subplots()
            draw(ax)
            for c in ax.containers:
                bars[str(c.get_label())] = [float(b.get_height()) for b in c]
            plt.close(ax.figure)
        return real(path, draw, figsize)

    monkeypatch.setattr(report, "_fig", fig)
    pair = {"distilled_bits": 821_071, "consumed_bits": 4_480, "auth_consumed_bits": 384, "auth_consumed_run_bits": 384}
    with RunRecord.create("run", None, tmp_path, capture_log=False) as run:
        report.write_report(run, {"status": "complete", "keys": {"pairs": {"C1-C2": pair}}, "train": train})
    return bars


def _nodes_train(rounds: int = 10) -> dict[str, Any]:
    # over nodes: each round's key_bits_per_pair includes the Flower rounds' tag_bits_per_pair
    return {"task": "mnist-qnn", "rounds": [{"round": i + 1, "test_accuracy": 0.9, "test_loss": 0.3,
                                             "key_bits_per_pair": 448} for i in range(rounds)],
            "nodes": {"flower": [{"tag_bits_per_pair": 256}]}}


def test_over_nodes_the_bar_says_masks_and_refs_tags(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bars = _labels(tmp_path, monkeypatch, _nodes_train())
    label = "consumed by FL masks + refs tags (192 + 256 bits per pair and round) (this run)"
    assert bars[label] == [4480.0]
    assert 10 * (192 + 256) == 4480  # the review's pair: the bar is exactly its rounds' masks and tags
    assert "consumed by FL masks (this run)" not in bars


def test_in_process_the_bar_is_masks_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    train = {"task": "mnist-qnn", "key_bits_per_pair_per_round_parts": {"masks": 192, "refs_tag": 0}}
    assert "consumed by FL masks (this run)" in _labels(tmp_path, monkeypatch, train)


def test_unknown_split_does_not_call_it_masks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert "consumed by FL masks and any refs tags (this run)" in _labels(tmp_path, monkeypatch, {})


def test_the_it_condition_is_stated_as_provenance_implements_it() -> None:
    # the implementation: all three, not δ alone
    hw = {"physical_layer": "hardware", "intensity_rel_uncertainty": 0.05}
    assert not is_information_theoretic(Provenance.from_dict({**hw, "randomness": "csprng"}))
    assert is_information_theoretic(Provenance.from_dict({**hw, "randomness": "qrng"}))
    desc = " ".join(str(ClientConfig.model_fields["intensity_rel_uncertainty"].description).split())
    doc = " ".join((ROOT / "docs" / "lab_setup.md").read_text(encoding="utf-8").split())
    for text in (desc, doc):
        assert "hardware physical layer, QRNG randomness at both clients" in text
        assert "QRNG clients are not supported yet" in text
        assert "CSPRNG" in text and "computationally secure" in text
        assert "Clients' randomness" in text
    assert "only when both clients of its pair declare δ > 0 (δ = 0" not in doc
