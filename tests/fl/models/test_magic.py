"""Magic (non-stabilizer) dataset: exact M2 of T-injected states, exact labels, seeding, learnability."""

from __future__ import annotations

import numpy as np
import pytest

from labqfl.fl.datasets.magic import (
    M2_T_STATE,
    MagicConfig,
    doped_clifford_state,
    m2_label,
    magic_states,
    t_injected_state,
)
from labqfl.fl.datasets.measures import stabilizer_renyi_entropy, stabilizer_renyi_entropy_reference
from labqfl.fl.datasets.tasks import load_task

ALL_CLIFFORD = ("H", "S", "CNOT")


def test_t_state_m2_is_log2_4_over_3() -> None:
    psi = t_injected_state(np.random.default_rng(0), 1, 1, 0, ("H", "S"))
    t_plus = np.array([1.0, np.exp(1j * np.pi / 4)]) / np.sqrt(2)
    assert np.allclose(psi, t_plus)
    assert M2_T_STATE == pytest.approx(np.log2(4 / 3), abs=1e-15)
    assert stabilizer_renyi_entropy(psi) == pytest.approx(np.log2(4 / 3), abs=1e-12)


@pytest.mark.parametrize("gate_set", [("CNOT",), ALL_CLIFFORD])
def test_injected_state_m2_is_t_count_times_t_state_m2(gate_set: tuple[str, ...]) -> None:
    """M2 is additive and Clifford-invariant: k injected T gates give k·log2(4/3), whatever the Clifford part."""
    rng = np.random.default_rng(5)
    for n in (3, 6):
        for n_t in range(n + 1):
            for n_clifford in (0, 3, 20):
                psi = t_injected_state(rng, n, n_t, n_clifford, gate_set)
                assert np.linalg.norm(psi) == pytest.approx(1.0, abs=1e-12)
                assert stabilizer_renyi_entropy(psi) == pytest.approx(n_t * M2_T_STATE, abs=1e-10)


def test_injected_state_m2_agrees_with_explicit_pauli_sum() -> None:
    rng = np.random.default_rng(9)
    for n_t in range(4):
        psi = t_injected_state(rng, 4, n_t, 12, ALL_CLIFFORD)
        assert stabilizer_renyi_entropy_reference(psi) == pytest.approx(n_t * M2_T_STATE, abs=1e-10)


def test_stabilizer_states_of_both_constructions_have_zero_m2() -> None:
    rng = np.random.default_rng(2)
    for _ in range(4):
        assert stabilizer_renyi_entropy(t_injected_state(rng, 6, 0, 30, ALL_CLIFFORD)) == 0.0
        assert abs(stabilizer_renyi_entropy(doped_clifford_state(rng, 6, 30, 0))) < 1e-10


def test_default_dataset_labels_are_exact_m2_classes() -> None:
    cfg = MagicConfig()
    x, y, m2 = magic_states(cfg, seed=3, per_class=10, stream="train")
    assert x.shape == (20, 64) and np.allclose(np.linalg.norm(x, axis=1), 1.0)
    recomputed = stabilizer_renyi_entropy(x)
    assert np.allclose(recomputed, m2, atol=1e-10)
    assert np.array_equal(m2_label(recomputed, cfg), y)
    assert np.array_equal(y, np.repeat([0, 1], 10))
    assert np.all(m2[y == 0] <= cfg.m2_low) and np.all(m2[y == 1] >= cfg.m2_high)
    # injected construction: M2 is a whole number of T states (k ≤ 1 in class 0, k ≥ 3 in class 1)
    k = m2 / M2_T_STATE
    assert np.allclose(k, np.round(k), atol=1e-8)
    assert set(np.round(k[y == 0]).astype(int)) <= {0, 1} and np.round(k[y == 1]).min() >= 3


def test_magic_states_are_seeded_and_prefix_stable() -> None:
    cfg = MagicConfig(n_qubits=4)
    a, ya, _ = magic_states(cfg, 4, 4, "train")
    b, _, _ = magic_states(cfg, 4, 6, "train")
    assert np.array_equal(a[:4], b[:4]) and np.array_equal(a[4:], b[6:10])
    assert np.array_equal(a, magic_states(cfg, 4, 4, "train")[0])
    assert not np.allclose(a, magic_states(cfg, 4, 4, "test")[0])
    assert not np.allclose(a, magic_states(cfg, 5, 4, "train")[0])


def test_default_task_adding_a_client_keeps_existing_data() -> None:
    kw = {"samples_per_client": 6, "test_size": 8}
    d3 = load_task("magic", 3, seed=1, **kw)
    d4 = load_task("magic", 4, seed=1, **kw)
    for c in ("C1", "C2", "C3"):
        assert np.array_equal(d3.clients[c][0], d4.clients[c][0])
        assert np.array_equal(d3.clients[c][1], d4.clients[c][1])
    assert np.array_equal(d3.x_test, d4.x_test)
    assert d4.sizes() == {f"C{i}": 6 for i in range(1, 5)}
    assert d4.meta["construction"] == "injected" and d4.meta["m2_low"] == 0.5
    assert "T gates" in d4.meta["generator"]


def test_t_count_is_capped_at_one_t_per_qubit() -> None:
    assert MagicConfig(n_qubits=4, t_range=(0, 6)).t_counts() == (0, 4)
    assert MagicConfig(n_qubits=4, t_range=(0, 6), construction="doped").t_counts() == (0, 6)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"construction": "haar"}, "construction"),
        ({"t_range": (3, 2)}, "t_range"),
        ({"t_range": (7, 8)}, "at most"),
        ({"gate_set": ("T",)}, "gate_set"),
        ({"m2_low": 1.2, "m2_high": 0.5}, "m2_low"),
        ({"n_clifford": -1}, "n_clifford"),
    ],
)
def test_invalid_config_is_rejected(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        magic_states(MagicConfig(**kwargs), 0, 1, "train")


def test_injecting_more_t_gates_than_qubits_is_rejected() -> None:
    with pytest.raises(ValueError, match="one T per qubit"):
        t_injected_state(np.random.default_rng(0), 3, 4, 0)


def test_federated_qnn_learns_the_default_magic_task() -> None:
    """Well-posed and learnable: 2 clients, 8 rounds, q = 8 — far above chance on fresh test states."""
    from labqfl.fl.keysource import make_key_source
    from labqfl.fl.secure import SecAggConfig
    from labqfl.fl.tasks import make_model
    from labqfl.fl.training import LocalTrainConfig, run_federated

    data = load_task("magic", 2, seed=0, samples_per_client=30, test_size=100)
    res = run_federated(make_model("magic"), data, rounds=8, local=LocalTrainConfig(epochs=2, lr=0.05, batch_size=16),
                        secagg=SecAggConfig(q=8, clip=1.0, rounding="stochastic"),
                        key_source=make_key_source("csprng"), seed=0)
    assert res.final_test_accuracy >= 0.75
