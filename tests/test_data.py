import gzip
import pickle
import struct

import numpy as np
import pytest
import torch

from instabilities import data
from instabilities.config import ConfigError


def test_digits_standardised_and_shapes():
    d = data.load_dataset("digits", n_train=300, n_test=100)
    assert d.x_train.shape == (300, 64) and d.x_test.shape == (100, 64) and d.n_classes == 10
    assert d.x_train.dtype == torch.float32
    mu, sd = d.x_train.mean(0), d.x_train.std(0)
    assert float(mu.abs().max()) < 1e-4  # trained features centred (constant pixels stay 0)
    assert float(sd.max()) < 1.01


def test_mnist1d_offline():
    d = data.load_dataset("mnist1d", n_train=200, n_test=50)
    assert d.x_train.shape == (200, 40) and int(d.y_train.max()) <= 9


def test_teacher_regression():
    d = data.load_dataset("teacher", n_train=64, n_test=32, in_dim=5, out_dim=3, noise=0.1)
    assert d.n_classes == 0 and d.out_dim == 3 and d.y_train.shape == (64, 3)


def test_unknown_dataset_and_too_many():
    with pytest.raises(ConfigError, match="choose one of"):
        data.load_dataset("imagenet")
    with pytest.raises(ConfigError, match="only"):
        data.load_dataset("digits", n_train=10_000)


def test_cifar_missing_is_clear(tmp_path):
    with pytest.raises(FileNotFoundError, match="never downloaded"):
        data.load_dataset("cifar10", root=tmp_path)
    with pytest.raises(FileNotFoundError, match="INSTABILITIES_DATA"):
        data.load_dataset("fashion_mnist", root=tmp_path)


def _write_cifar(root, n=4):
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batch = {
            b"data": rng.integers(0, 256, size=(n, 3072), dtype=np.uint8),
            b"labels": list(rng.integers(0, 10, size=n)),
        }
        with open(folder / name, "wb") as fh:
            pickle.dump(batch, fh)


def test_cifar_local_copy(tmp_path):
    _write_cifar(tmp_path)
    d = data.load_dataset("cifar10", root=tmp_path, n_train=15)
    assert d.x_train.shape == (15, 3072) and d.x_test.shape == (4, 3072)
    img = data.load_dataset("cifar10", root=tmp_path, flatten=False)
    assert img.x_train.shape == (20, 3, 32, 32)


def _write_idx(path, arr):
    header = struct.pack(">HBB", 0, 0x08, arr.ndim) + struct.pack(">" + "I" * arr.ndim, *arr.shape)
    with gzip.open(str(path) + ".gz", "wb") as fh:
        fh.write(header + arr.astype(np.uint8).tobytes())


def test_fashion_mnist_local_copy(tmp_path):
    folder = tmp_path / "fashion-mnist"
    folder.mkdir()
    rng = np.random.default_rng(1)
    _write_idx(folder / "train-images-idx3-ubyte", rng.integers(0, 256, (6, 28, 28)))
    _write_idx(folder / "train-labels-idx1-ubyte", rng.integers(0, 10, (6,)))
    _write_idx(folder / "t10k-images-idx3-ubyte", rng.integers(0, 256, (3, 28, 28)))
    _write_idx(folder / "t10k-labels-idx1-ubyte", rng.integers(0, 10, (3,)))
    d = data.load_dataset("fashion_mnist", root=tmp_path, flatten=False)
    assert d.x_train.shape == (6, 1, 28, 28) and d.y_test.shape == (3,)


def test_read_idx_rejects_garbage(tmp_path):
    p = tmp_path / "bad-idx"
    p.write_bytes(b"\x01\x02\x03\x04garbage")
    with pytest.raises(ValueError):
        data.read_idx(p)


def test_local_files_name_what_each_dataset_needs(tmp_path):
    assert data.local_files("mnist1d", tmp_path) == [] and data.missing_local_files("digits", tmp_path) == []
    need = data.local_files("fashion_mnist", tmp_path)
    assert [p.name for p in need][0] == "train-images-idx3-ubyte" and len(need) == 4
    assert data.missing_local_files("fashion_mnist", tmp_path) == need
    need[0].parent.mkdir(parents=True)
    need[0].with_name(need[0].name + ".gz").write_bytes(b"")  # gzipped copies count
    assert data.missing_local_files("fashion_mnist", tmp_path) == need[1:]
    _write_cifar(tmp_path)
    assert data.missing_local_files("cifar10", tmp_path) == []
    assert {p.name for p in data.local_files("cifar10", tmp_path)} == {f"data_batch_{i}" for i in range(1, 6)} | {
        "test_batch"
    }
