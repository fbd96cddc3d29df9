"""IDX reader on good, gzip, truncated and wrong-magic files; real MNIST/Fashion-MNIST; digits; teacher."""

from __future__ import annotations

import gzip
import hashlib

import numpy as np
import pytest
import torch

from optdfa.data import TeacherSpec, load_dataset, read_idx
from optdfa.errors import OptdfaError


def _idx_bytes(array: np.ndarray) -> bytes:
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(
        int(d).to_bytes(4, "big") for d in array.shape
    )
    return header + array.astype(np.uint8).tobytes()


@pytest.fixture
def images() -> np.ndarray:
    return np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)


def test_reads_plain_and_gzip(tmp_path, images):
    (tmp_path / "a-idx3-ubyte").write_bytes(_idx_bytes(images))
    (tmp_path / "b-idx3-ubyte.gz").write_bytes(gzip.compress(_idx_bytes(images)))
    for name in ("a-idx3-ubyte", "b-idx3-ubyte.gz"):
        out = read_idx(tmp_path / name, expected_ndim=3)
        assert out.dtype == np.uint8 and np.array_equal(out, images)


def test_truncated_file_is_rejected(tmp_path, images):
    path = tmp_path / "t-idx3-ubyte"
    path.write_bytes(_idx_bytes(images)[:-5])
    with pytest.raises(OptdfaError, match="truncated"):
        read_idx(path)
    path.write_bytes(_idx_bytes(images)[:10])  # cut inside the header
    with pytest.raises(OptdfaError, match="truncated"):
        read_idx(path)


def test_wrong_magic_is_rejected(tmp_path, images):
    raw = bytearray(_idx_bytes(images))
    raw[2] = 0x0D  # float32 type code: not an unsigned-byte file
    path = tmp_path / "m-idx3-ubyte"
    path.write_bytes(bytes(raw))
    with pytest.raises(OptdfaError, match="magic number 0x00000d03"):
        read_idx(path)
    path.write_bytes(_idx_bytes(images))
    with pytest.raises(OptdfaError, match="expected 1 dimensions"):
        read_idx(path, expected_ndim=1)


def test_corrupt_gzip_is_rejected(tmp_path):
    path = tmp_path / "c-idx1-ubyte.gz"
    path.write_bytes(b"\x1f\x8b not really gzip")
    with pytest.raises(OptdfaError, match="cannot read IDX"):
        read_idx(path)


MD5 = {
    "MNIST": {
        "train-images-idx3-ubyte": "6bbc9ace898e44ae57da46a324031adb",
        "t10k-labels-idx1-ubyte": "27ae3e4e09519cfbb04c329615203637",
    },
    "FashionMNIST": {
        "train-images-idx3-ubyte": "f4a8712d7a061bf5bd6d2ca38dc4d50a",
        "t10k-labels-idx1-ubyte": "15d484375f8d13e6eb1aabb0c3f46965",
    },
}


@pytest.mark.parametrize("name,folder", [("mnist", "MNIST"), ("fashion-mnist", "FashionMNIST")])
def test_real_idx_datasets(shared_datasets, name, folder):
    for stem, md5 in MD5[folder].items():
        raw = read_idx(shared_datasets / folder / "raw" / f"{stem}.gz")
        assert hashlib.md5(_idx_bytes(raw)).hexdigest() == md5
    ds = load_dataset(name, data_dir=shared_datasets)
    assert ds.x_train.shape == (60000, 1, 28, 28) and ds.x_test.shape == (10000, 1, 28, 28)
    assert ds.x_train.dtype == torch.float32 and ds.y_train.dtype == torch.int64
    assert abs(ds.x_train.mean().item()) < 1e-3 and abs(ds.x_train.std().item() - 1) < 1e-3
    if name == "fashion-mnist":  # Fashion-MNIST's test set is balanced: 1000 per class
        assert torch.equal(torch.bincount(ds.y_test), torch.full((10,), 1000))
    assert set(ds.y_train.unique().tolist()) == set(range(10))


def test_mnist_in_a_folder_without_files_is_a_clear_error(tmp_path):
    with pytest.raises(OptdfaError, match="missing data file .*train-images-idx3-ubyte"):
        load_dataset("mnist", data_dir=tmp_path)


def test_digits_split_is_stratified_and_seeded():
    a, b = load_dataset("digits", data_seed=0), load_dataset("digits", data_seed=0)
    c = load_dataset("digits", data_seed=1)
    assert a.x_train.shape == (1437, 1, 8, 8) and a.x_test.shape == (360, 1, 8, 8)
    assert torch.equal(a.x_test, b.x_test) and not torch.equal(a.x_test, c.x_test)
    assert torch.bincount(a.y_test).min() >= 35  # every class is in the test set (~36 each)


def test_teacher_data_follows_its_spec():
    spec = TeacherSpec(input_dim=50, hidden=3, outputs=2, noise=0.0, n_train=3000, n_test=500)
    ds = load_dataset("teacher", teacher=spec, data_seed=4)
    assert ds.task == "regression" and ds.n_outputs == 2
    assert ds.x_train.shape == (3000, 50) and ds.y_train.shape == (3000, 2)
    # inputs are standard Gaussian
    assert abs(ds.x_train.mean().item()) < 0.01 and abs(ds.x_train.std().item() - 1) < 0.01
    # |erf| < 1 so every noiseless target is bounded by Σ|v_m|; targets are non-degenerate
    assert ds.y_train.std(0).min() > 0.1
    noisy = load_dataset(
        "teacher", teacher=TeacherSpec(**{**spec.__dict__, "noise": 0.5}), data_seed=4
    )
    resid = (noisy.y_train - ds.y_train).std().item()
    assert abs(resid - 0.5) < 0.03  # the label noise has the asked-for standard deviation
    cls = load_dataset(
        "teacher", teacher=TeacherSpec(input_dim=20, hidden=4, outputs=3, task="classification")
    )
    assert cls.y_train.dtype == torch.int64 and set(cls.y_train.unique().tolist()) <= {0, 1, 2}
