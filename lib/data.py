"""Datasets that need no download.

* ``mnist1d``  - the procedural 1-D MNIST of Greydanus (generated offline by the ``mnist1d`` package);
* ``digits``   - scikit-learn's bundled 8x8 handwritten digits (1797 images);
* ``teacher``  - synthetic teacher-student regression (random tanh teacher, Gaussian inputs);
* ``cifar10``, ``fashion_mnist`` - read from a local folder when the user has one
  (``$INSTABILITIES_DATA`` or ``<repo>/data``), with a clear error otherwise; :data:`LOCAL_FILES`
  and :func:`local_files` / :func:`missing_local_files` say which files each needs (the one list,
  also used by ``reproduce`` to skip experiments whose data is absent).

All loaders return a :class:`Dataset` of float32 tensors, features standardised with
training-set statistics, labels as integer class indices (``n_classes > 0``) or as
real-valued targets (regression, ``n_classes == 0``).
"""

from __future__ import annotations

import dataclasses
import functools
import gzip
import os
import pickle
import struct
from pathlib import Path

import numpy as np
import torch

from .config import ConfigError

#: Names accepted by :func:`load_dataset`.
DATASETS = ("mnist1d", "digits", "teacher", "cifar10", "fashion_mnist")
#: Datasets read from a local folder under :func:`data_root` (never downloaded): sub-folder and files.
LOCAL_FILES: dict[str, tuple[str, tuple[str, ...]]] = {
    "cifar10": ("cifar-10-batches-py", tuple(f"data_batch_{i}" for i in range(1, 6)) + ("test_batch",)),
    "fashion_mnist": (
        "fashion-mnist",
        ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
    ),
}
REPO_ROOT = Path(__file__).resolve().parent.parent


@dataclasses.dataclass
class Dataset:
    """Train/test tensors of one dataset."""

    name: str
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    n_classes: int  # 0 for regression

    @property
    def in_shape(self) -> tuple[int, ...]:
        return tuple(self.x_train.shape[1:])

    @property
    def in_dim(self) -> int:
        return int(np.prod(self.in_shape))

    @property
    def out_dim(self) -> int:
        return self.n_classes if self.n_classes > 0 else int(self.y_train.shape[1])

    def to(self, device: str | torch.device, dtype: torch.dtype = torch.float32) -> Dataset:
        def mv(t: torch.Tensor) -> torch.Tensor:
            return t.to(device=device, dtype=dtype if t.is_floating_point() else t.dtype)

        return Dataset(self.name, mv(self.x_train), mv(self.y_train), mv(self.x_test), mv(self.y_test), self.n_classes)


def data_root(root: str | Path | None = None) -> Path:
    """Folder searched for user-supplied datasets (CIFAR-10, Fashion-MNIST)."""
    if root is not None:
        return Path(root)
    return Path(os.environ.get("INSTABILITIES_DATA", REPO_ROOT / "data"))


def local_files(name: str, root: str | Path | None = None) -> list[Path]:
    """The local files dataset ``name`` needs under :func:`data_root` (empty for datasets that need none).

    IDX files may also be present gzipped (``<file>.gz``); :func:`missing_local_files` accepts both.
    """
    if name not in LOCAL_FILES:
        return []
    folder, files = LOCAL_FILES[name]
    return [data_root(root) / folder / f for f in files]


def missing_local_files(name: str, root: str | Path | None = None) -> list[Path]:
    """Those of :func:`local_files` that are absent (neither the file nor ``<file>.gz`` exists)."""
    return [f for f in local_files(name, root) if not (f.exists() or f.with_name(f.name + ".gz").exists())]


def _standardise(x_train: np.ndarray, x_test: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Centre and scale every feature with the training set's mean and std."""
    flat_tr = x_train.reshape(len(x_train), -1).astype(np.float64)
    flat_te = x_test.reshape(len(x_test), -1).astype(np.float64)
    mu, sd = flat_tr.mean(0), flat_tr.std(0)
    sd[sd < 1e-8] = 1.0
    return (
        ((flat_tr - mu) / sd).reshape(x_train.shape).astype(np.float32),
        ((flat_te - mu) / sd).reshape(x_test.shape).astype(np.float32),
    )


def _subset(x: np.ndarray, y: np.ndarray, n: int | None, what: str) -> tuple[np.ndarray, np.ndarray]:
    if n is None:
        return x, y
    if n > len(x):
        raise ConfigError(f"asked for {n} {what} examples but the dataset has only {len(x)}; lower n_{what}.")
    return x[:n], y[:n]


@functools.lru_cache(maxsize=4)
def _mnist1d_arrays(seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    from mnist1d.data import get_dataset_args, make_dataset  # generated procedurally, no download

    args = get_dataset_args()
    args.seed = seed
    d = make_dataset(args)
    return (
        np.asarray(d["x"], np.float32),
        np.asarray(d["y"], np.int64),
        np.asarray(d["x_test"], np.float32),
        np.asarray(d["y_test"], np.int64),
    )


def _load_digits() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    d = load_digits()
    x, y = d.data.astype(np.float32), d.target.astype(np.int64)
    perm = np.random.default_rng(0).permutation(len(x))  # fixed split, independent of the run seed
    x, y = x[perm], y[perm]
    return x[:1500], y[:1500], x[1500:], y[1500:]


def teacher_student(
    n_train: int, n_test: int, in_dim: int = 20, out_dim: int = 1, hidden: int = 32, noise: float = 0.0, seed: int = 0
) -> tuple[np.ndarray, ...]:
    """Gaussian inputs labelled by a random one-hidden-layer tanh teacher plus Gaussian label noise."""
    rng = np.random.default_rng(seed)
    w1 = rng.normal(size=(in_dim, hidden)) / np.sqrt(in_dim)
    w2 = rng.normal(size=(hidden, out_dim)) / np.sqrt(hidden)
    x = rng.normal(size=(n_train + n_test, in_dim))
    y = np.tanh(x @ w1) @ w2
    y_noisy = y + noise * rng.normal(size=y.shape)
    x, y_noisy, y = x.astype(np.float32), y_noisy.astype(np.float32), y.astype(np.float32)
    return x[:n_train], y_noisy[:n_train], x[n_train:], y[n_train:]  # clean test targets


def _open_maybe_gz(path: Path):
    if path.exists():
        return open(path, "rb")
    gz = path.with_name(path.name + ".gz")
    if gz.exists():
        return gzip.open(gz, "rb")
    raise FileNotFoundError(path)


def read_idx(path: Path) -> np.ndarray:
    """Read an IDX file (the MNIST / Fashion-MNIST format), plain or ``.gz``."""
    with _open_maybe_gz(path) as fh:
        raw = fh.read()
    zero, dtype_code, ndim = struct.unpack(">HBB", raw[:4])
    if zero != 0 or dtype_code != 0x08:
        raise ValueError(f"{path} is not an unsigned-byte IDX file")
    shape = struct.unpack(">" + "I" * ndim, raw[4 : 4 + 4 * ndim])
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)


def _missing(name: str, folder: Path, expected: str) -> FileNotFoundError:
    return FileNotFoundError(
        f"{name} is not bundled and is never downloaded by this book. Put a local copy at {folder} "
        f"({expected}), or set INSTABILITIES_DATA to the folder that contains it, or use an offline "
        f"dataset instead: 'mnist1d' or 'digits'."
    )


def _load_cifar10(root: Path) -> tuple[np.ndarray, ...]:
    folder = root / LOCAL_FILES["cifar10"][0]
    files = local_files("cifar10", root)
    if not all(f.exists() for f in files):
        raise _missing("CIFAR-10", folder, "the python version: data_batch_1..5 and test_batch")

    def read(f: Path) -> tuple[np.ndarray, np.ndarray]:
        with open(f, "rb") as fh:
            d = pickle.load(fh, encoding="bytes")
        x = np.asarray(d[b"data"], np.uint8).reshape(-1, 3, 32, 32).astype(np.float32) / 255.0
        return x, np.asarray(d[b"labels"], np.int64)

    parts = [read(f) for f in files[:-1]]
    x_te, y_te = read(files[-1])
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]), x_te, y_te


def _load_fashion_mnist(root: Path) -> tuple[np.ndarray, ...]:
    folder, names = root / LOCAL_FILES["fashion_mnist"][0], LOCAL_FILES["fashion_mnist"][1]
    try:
        xtr, ytr, xte, yte = (read_idx(folder / n) for n in names)
    except FileNotFoundError:
        raise _missing(
            "Fashion-MNIST", folder, "the four IDX files " + ", ".join(names) + " (optionally .gz)"
        ) from None
    to_x = lambda a: (a.astype(np.float32) / 255.0)[:, None, :, :]  # noqa: E731
    return to_x(xtr), ytr.astype(np.int64), to_x(xte), yte.astype(np.int64)


def load_dataset(
    name: str,
    n_train: int | None = None,
    n_test: int | None = None,
    seed: int = 0,
    root: str | Path | None = None,
    flatten: bool = True,
    **teacher_kwargs,
) -> Dataset:
    """Load one of :data:`DATASETS`, take the first ``n_train``/``n_test`` examples, standardise.

    ``flatten`` turns image datasets into vectors (for MLPs); use ``flatten=False`` for CNNs.
    ``teacher_kwargs`` are passed to :func:`teacher_student` for ``name="teacher"``.
    """
    if name not in DATASETS:
        raise ConfigError(f"dataset {name!r} is unknown; choose one of {DATASETS}.")
    n_classes = 10
    if name == "mnist1d":
        xtr, ytr, xte, yte = _mnist1d_arrays(seed)
    elif name == "digits":
        xtr, ytr, xte, yte = _load_digits()
    elif name == "teacher":
        xtr, ytr, xte, yte = teacher_student(n_train or 1000, n_test or 1000, seed=seed, **teacher_kwargs)
        n_classes = 0
    elif name == "cifar10":
        xtr, ytr, xte, yte = _load_cifar10(data_root(root))
    else:
        xtr, ytr, xte, yte = _load_fashion_mnist(data_root(root))
    xtr, ytr = _subset(xtr, ytr, n_train, "train")
    xte, yte = _subset(xte, yte, n_test, "test")
    xtr, xte = _standardise(xtr, xte)
    if flatten:
        xtr, xte = xtr.reshape(len(xtr), -1), xte.reshape(len(xte), -1)
    return Dataset(
        name,
        torch.from_numpy(np.ascontiguousarray(xtr)),
        torch.from_numpy(np.ascontiguousarray(ytr)),
        torch.from_numpy(np.ascontiguousarray(xte)),
        torch.from_numpy(np.ascontiguousarray(yte)),
        n_classes,
    )


def one_hot(labels: torch.Tensor, n_classes: int) -> torch.Tensor:
    """Float one-hot encoding of integer labels (targets of the MSE loss)."""
    return torch.nn.functional.one_hot(labels.long(), n_classes).to(torch.get_default_dtype())
