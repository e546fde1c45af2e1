"""Generated datasets: labels agree with exact recomputation; seeding; splits; MNIST loaders."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest

from labqfl.errors import DataFormatError
from labqfl.fl.datasets.magic import MagicConfig, m2_label, magic_states
from labqfl.fl.datasets.measures import concentratable_entanglement, stabilizer_renyi_entropy
from labqfl.fl.datasets.mnist import (
    downsample_16,
    load_embedded_mnist,
    load_mnist_dir,
    select_digits,
)
from labqfl.fl.datasets.ntangled import NTangledConfig, ce_label, ntangled_states
from labqfl.fl.datasets.splits import split_dirichlet, split_iid
from labqfl.fl.datasets.tasks import load_task

TINY_NT = NTangledConfig(train_steps=12, train_batch=8, tol=0.08, input_polar_max=1.5)
TINY_MAGIC = MagicConfig(n_qubits=4, n_clifford=8, t_range=(0, 6), m2_low=0.5, m2_high=1.0)


def test_ntangled_labels_agree_with_exact_ce() -> None:
    x, y, ce = ntangled_states(TINY_NT, seed=3, per_class=6, stream="train")
    assert x.shape == (12, 64) and np.allclose(np.linalg.norm(x, axis=1), 1.0)
    recomputed = concentratable_entanglement(x)
    assert np.allclose(recomputed, ce, atol=1e-12)
    assert np.array_equal(ce_label(recomputed, TINY_NT), y)


def test_ntangled_is_seeded_and_prefix_stable() -> None:
    a = ntangled_states(TINY_NT, 3, 4, "train")[0]
    b = ntangled_states(TINY_NT, 3, 6, "train")[0]
    assert np.array_equal(a[:4], b[:4]) and np.array_equal(a[4:], b[6:10])
    c = ntangled_states(TINY_NT, 3, 4, "test")[0]
    assert not np.allclose(a, c)


def test_magic_labels_agree_with_exact_m2() -> None:
    x, y, m2 = magic_states(TINY_MAGIC, seed=1, per_class=8, stream="train")
    recomputed = stabilizer_renyi_entropy(x)
    assert np.allclose(recomputed, m2, atol=1e-10)
    assert np.array_equal(m2_label(recomputed, TINY_MAGIC), y)
    assert set(y.tolist()) == {0, 1}
    x2, _, _ = magic_states(TINY_MAGIC, seed=1, per_class=8, stream="train")
    assert np.array_equal(x, x2)


def test_quantum_task_adding_a_client_keeps_existing_data() -> None:
    kw = {"samples_per_client": 4, "test_size": 4, "magic": TINY_MAGIC}
    d3 = load_task("magic", 3, seed=2, **kw)
    d4 = load_task("magic", 4, seed=2, **kw)
    for c in ("C1", "C2", "C3"):
        assert np.array_equal(d3.clients[c][0], d4.clients[c][0])
    assert np.array_equal(d3.x_test, d4.x_test)
    assert d4.sizes() == {"C1": 4, "C2": 4, "C3": 4, "C4": 4}


def test_iid_split_is_a_partition(rng: np.random.Generator) -> None:
    parts = split_iid(103, 4, rng)
    allidx = np.concatenate(parts)
    assert sorted(allidx.tolist()) == list(range(103))
    assert max(map(len, parts)) - min(map(len, parts)) <= 1


def test_dirichlet_split_is_a_skewed_partition(rng: np.random.Generator) -> None:
    labels = np.repeat(np.arange(10), 50)
    parts = split_dirichlet(labels, 5, 0.1, rng)
    assert sorted(np.concatenate(parts).tolist()) == list(range(500))
    # strong skew: some client is dominated by few classes
    top_share = max(np.bincount(labels[p], minlength=10).max() / len(p) for p in parts)
    assert top_share > 0.3
    with pytest.raises(ValueError, match="alpha"):
        split_dirichlet(labels, 5, 0.0, rng)


def test_embedded_mnist_subset_and_downsampling() -> None:
    mn = load_embedded_mnist()
    assert mn.x_train.shape == (4000, 28, 28) and mn.x_test.shape == (1000, 28, 28)
    assert np.array_equal(np.bincount(mn.y_test), np.full(10, 100))
    x, y = select_digits(mn.x_test, mn.y_test, (3, 8))
    assert set(np.unique(y).tolist()) == {0, 1} and len(y) == 200
    f = downsample_16(x)
    assert f.shape == (200, 16) and np.allclose(np.linalg.norm(f, axis=1), 1.0)


def _write_idx(path: Path, arr: np.ndarray) -> None:
    header = struct.pack(">HBB", 0, 0x08, arr.ndim) + struct.pack(">" + "I" * arr.ndim, *arr.shape)
    with gzip.open(path, "wb") as fh:
        fh.write(header + arr.astype(np.uint8).tobytes())


def test_full_mnist_from_idx_and_npz(tmp_path: Path, rng: np.random.Generator) -> None:
    xtr = rng.integers(0, 256, size=(6, 28, 28))
    ytr = np.arange(6) % 10
    xte = rng.integers(0, 256, size=(3, 28, 28))
    yte = np.arange(3)
    _write_idx(tmp_path / "train-images-idx3-ubyte.gz", xtr)
    _write_idx(tmp_path / "train-labels-idx1-ubyte.gz", ytr)
    _write_idx(tmp_path / "t10k-images-idx3-ubyte.gz", xte)
    _write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", yte)
    mn = load_mnist_dir(tmp_path)
    assert np.array_equal(mn.x_train, xtr) and np.array_equal(mn.y_test, yte)

    npz_dir = tmp_path / "npz"
    npz_dir.mkdir()
    np.savez(npz_dir / "mnist.npz", x_train=xtr.astype(np.uint8), y_train=ytr, x_test=xte.astype(np.uint8), y_test=yte)
    mn2 = load_mnist_dir(npz_dir)
    assert np.array_equal(mn2.x_test, xte)


def test_mnist_dir_errors_name_the_problem(tmp_path: Path) -> None:
    with pytest.raises(DataFormatError, match="missing IDX files"):
        load_mnist_dir(tmp_path)
    (tmp_path / "train-images-idx3-ubyte").write_bytes(b"\x00\x00\x0d\x03" + b"\x00" * 12)
    for stem in ("train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"):
        (tmp_path / stem).write_bytes(b"")
    with pytest.raises(DataFormatError, match="IDX"):
        load_mnist_dir(tmp_path)
