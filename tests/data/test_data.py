"""Dataset loaders: IDX parsing, the shipped samples, .npz validation, batching."""
from __future__ import annotations

import gzip
import struct

import numpy as np
import pytest

from qexport.data import (batches, load_dataset, load_fashion_mnist, load_npz,
                          load_samples, read_idx, samples_dir)
from shared import HAVE_FASHION_MNIST

needs_fmnist = pytest.mark.skipif(not HAVE_FASHION_MNIST, reason="apt-get install dataset-fashion-mnist")


def _write_idx(path, arr: np.ndarray, code: int = 0x08, compress: bool = True) -> None:
    header = bytes([0, 0, code, arr.ndim]) + struct.pack(f">{arr.ndim}I", *arr.shape)
    data = header + arr.astype(arr.dtype.newbyteorder(">")).tobytes()
    (gzip.open if compress else open)(path, "wb").write(data)


def test_read_idx_roundtrip(tmp_path):
    imgs = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    _write_idx(tmp_path / "a.gz", imgs)
    np.testing.assert_array_equal(read_idx(tmp_path / "a.gz"), imgs)
    ints = np.array([1, -2, 70000], dtype=np.int32)
    _write_idx(tmp_path / "b", ints, code=0x0C, compress=False)
    np.testing.assert_array_equal(read_idx(tmp_path / "b"), ints)


def test_read_idx_rejects_bad_files(tmp_path):
    (tmp_path / "bad").write_bytes(b"\x01\x02\x08\x01\x00\x00\x00\x01\x00")
    with pytest.raises(ValueError, match="not an IDX file"):
        read_idx(tmp_path / "bad")
    (tmp_path / "short").write_bytes(bytes([0, 0, 8, 1]) + struct.pack(">I", 5) + b"\x00\x01")
    with pytest.raises(ValueError, match="header says"):
        read_idx(tmp_path / "short")


def test_fashion_mnist_synthetic_root(tmp_path):
    imgs = np.full((3, 28, 28), 255, dtype=np.uint8)
    imgs[1] = 0
    _write_idx(tmp_path / "t10k-images-idx3-ubyte.gz", imgs)
    _write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", np.array([7, 0, 9], dtype=np.uint8))
    x, y = load_fashion_mnist("test", root=tmp_path)
    assert x.shape == (3, 1, 28, 28) and x.dtype == np.float32 and y.dtype == np.int64
    assert x[0].min() == 1.0 and x[1].max() == 0.0 and y.tolist() == [7, 0, 9]


def test_fashion_mnist_missing_tells_how_to_install(tmp_path):
    with pytest.raises(FileNotFoundError, match="apt-get install dataset-fashion-mnist"):
        load_fashion_mnist("train", root=tmp_path)
    with pytest.raises(ValueError, match="split"):
        load_fashion_mnist("validation")


@needs_fmnist
def test_fashion_mnist_real_files():
    x, y = load_fashion_mnist("test")
    assert x.shape == (10000, 1, 28, 28) and x.dtype == np.float32
    assert y.shape == (10000,) and y.dtype == np.int64
    assert 0.0 <= x.min() and x.max() <= 1.0 and x.max() == 1.0
    assert np.bincount(y).tolist() == [1000] * 10
    assert abs(float(x.mean()) - 0.2868) < 1e-3
    xtr, ytr = load_fashion_mnist("train")
    assert xtr.shape == (60000, 1, 28, 28) and np.bincount(ytr).tolist() == [6000] * 10


def test_samples():
    x, y = load_samples()
    assert x.shape == (512, 1, 28, 28) and x.dtype == np.float32 and y.dtype == np.int64
    assert 0.0 <= x.min() and x.max() <= 1.0
    counts = np.bincount(y, minlength=10)
    assert counts.sum() == 512 and counts.min() >= 51 and counts.max() <= 52
    x2, y2 = load_dataset("samples")
    np.testing.assert_array_equal(x, x2)


@needs_fmnist
def test_samples_are_fashion_mnist_test_images():
    x, y = load_samples()
    xt, yt = load_fashion_mnist("test")
    lookup = {xt[i].tobytes(): yt[i] for i in range(len(xt))}
    assert all(lookup.get(x[i].tobytes()) == y[i] for i in range(len(x)))
    assert len({x[i].tobytes() for i in range(len(x))}) == 512  # no duplicates


def test_samples_dir_env(tmp_path, monkeypatch):
    monkeypatch.setenv("QEXPORT_SAMPLES_DIR", str(tmp_path))
    assert samples_dir() == tmp_path
    with pytest.raises(FileNotFoundError, match="QEXPORT_SAMPLES_DIR"):
        load_samples()
    np.savez(tmp_path / "fashion_mnist_512.npz", x=np.zeros((2, 1, 28, 28), np.float32), y=np.array([3, 4]))
    x, y = load_samples()
    assert x.shape == (2, 1, 28, 28) and y.tolist() == [3, 4]


def test_load_npz_conversions(tmp_path):
    u8 = np.array([0, 51, 255], dtype=np.uint8).reshape(1, 1, 1, 3)
    np.savez(tmp_path / "u8.npz", x=u8)
    x, y = load_npz(tmp_path / "u8.npz")
    assert y is None and x.dtype == np.float32
    np.testing.assert_allclose(x.ravel(), [0.0, 0.2, 1.0])
    np.savez(tmp_path / "f64.npz", x=np.full((2, 1, 2, 2), 0.5), y=np.array([1, 2], dtype=np.uint8))
    x, y = load_npz(tmp_path / "f64.npz")
    assert x.dtype == np.float32 and y.dtype == np.int64 and y.tolist() == [1, 2]
    x, y = load_dataset(str(tmp_path / "f64.npz"))
    assert x.shape == (2, 1, 2, 2)


@pytest.mark.parametrize("arrays, message", [
    ({"images": np.zeros((1, 1, 2, 2), np.float32)}, "no array 'x'"),
    ({"x": np.zeros((5,), np.float32)}, "must be \\(N, ...\\) with one sample per row"),
    ({"x": np.zeros((1, 1, 2, 2), np.int32)}, "must be float32"),
    ({"x": np.full((1, 1, 2, 2), np.nan, np.float32)}, "NaN or infinite"),
    ({"x": np.full((1, 1, 2, 2), np.inf)}, "NaN or infinite"),
    ({"x": np.zeros((2, 1, 2, 2), np.float32), "y": np.array([1])}, "'y' must be 1-D with 2 labels"),
    ({"x": np.zeros((1, 1, 2, 2), np.float32), "y": np.array([0.5])}, "must hold integers"),
])
def test_load_npz_errors(tmp_path, arrays, message):
    np.savez(tmp_path / "d.npz", **arrays)
    with pytest.raises(ValueError, match=message):
        load_npz(tmp_path / "d.npz")


def test_load_npz_not_an_archive(tmp_path):
    (tmp_path / "junk.npz").write_bytes(b"hello")
    with pytest.raises(ValueError, match="not a readable"):
        load_npz(tmp_path / "junk.npz")
    np.save(tmp_path / "plain.npy", np.zeros((1, 1, 2, 2), np.float32))
    with pytest.raises(ValueError, match="single array"):
        load_npz(tmp_path / "plain.npy")
    with pytest.raises(FileNotFoundError):
        load_npz(tmp_path / "missing.npz")


def test_load_dataset_names():
    with pytest.raises(ValueError, match="unknown dataset"):
        load_dataset("cifar-10")
    try:
        import sklearn  # noqa: F401
    except ImportError:
        with pytest.raises(ImportError, match="scikit-learn"):
            load_dataset("digits")
    else:
        x, y = load_dataset("digits", "train")
        xt, yt = load_dataset("digits", "test")
        assert x.shape[1:] == (1, 8, 8) and len(x) + len(xt) == 1797 and x.max() <= 1.0


def test_batches():
    x = np.arange(10, dtype=np.float32).reshape(10, 1, 1, 1)
    y = np.arange(10)
    got = [(xb.flatten().tolist(), yb.tolist()) for xb, yb in batches(x, y, 4)]
    assert [len(b[1]) for b in got] == [4, 4, 2] and sum((b[1] for b in got), []) == list(range(10))
    a = [yb.tolist() for _, yb in batches(x, y, 4, shuffle=True, seed=3)]
    b = [yb.tolist() for _, yb in batches(x, y, 4, shuffle=True, seed=3)]
    c = [yb.tolist() for _, yb in batches(x, y, 4, shuffle=True, seed=4)]
    assert a == b and a != c and sorted(sum(a, [])) == list(range(10))
    assert [len(yb) for _, yb in batches(x, y, 4, drop_last=True)] == [4, 4]
    assert all(yb is None for _, yb in batches(x, None, 4))
