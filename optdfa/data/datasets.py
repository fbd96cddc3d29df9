"""Datasets: ``digits`` (embedded), ``mnist``, ``fashion-mnist`` (IDX files) and ``teacher``.

Every dataset is held in memory as float32 tensors. Images have shape ``(N, 1, H, W)``,
standardised with the training set's mean and standard deviation (one scalar each); teacher
inputs have shape ``(N, input_dim)``. Classification labels are int64 class indices ``(N,)``;
regression targets are float32 ``(N, outputs)``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from optdfa.data.idx import find_idx, read_idx
from optdfa.errors import OptdfaError, choice_error
from optdfa.seeding import numpy_generator

DATA_DIR_ENV = "OPTDFA_DATA_DIR"

#: dataset name -> folder name in torchvision's layout ``DIR/<folder>/raw``
IDX_FOLDERS = {"mnist": "MNIST", "fashion-mnist": "FashionMNIST"}
DATASETS = ("digits", "mnist", "fashion-mnist", "teacher")
IDX_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}


@dataclass(frozen=True)
class TeacherSpec:
    """A two-layer teacher network ``y = Σ_m v_m g(w_m·x/√D) + noise·ξ``, ``g(z) = erf(z/√2)``.

    Inputs ``x ~ N(0, I_D)``; ``w_m ~ N(0, I_D)``, ``v_m ~ N(0, 1)`` per output. With
    ``task = "classification"`` the label is the argmax over ``outputs ≥ 2`` teacher outputs.
    """

    input_dim: int = 100
    hidden: int = 4
    outputs: int = 1
    noise: float = 0.0
    n_train: int = 10_000
    n_test: int = 2_000
    task: str = "regression"

    def validate(self) -> None:
        for name in ("input_dim", "hidden", "outputs", "n_train", "n_test"):
            if getattr(self, name) < 1:
                raise OptdfaError(
                    f"teacher.{name} must be a positive integer, got {getattr(self, name)}"
                )
        if not np.isfinite(self.noise) or self.noise < 0:
            raise OptdfaError(f"teacher.noise must be a non-negative number, got {self.noise}")
        if self.task not in ("regression", "classification"):
            raise choice_error("teacher task", self.task, ("regression", "classification"))
        if self.task == "classification" and self.outputs < 2:
            raise OptdfaError("teacher.outputs must be at least 2 for a classification teacher")


@dataclass
class Dataset:
    """A train/test split held in memory."""

    name: str
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    task: str  # "classification" or "regression"
    n_outputs: int

    @property
    def input_shape(self) -> tuple[int, ...]:
        """Shape of one input sample, e.g. ``(1, 28, 28)``."""
        return tuple(self.x_train.shape[1:])

    def to(self, device: torch.device | str) -> Dataset:
        return Dataset(
            self.name,
            self.x_train.to(device),
            self.y_train.to(device),
            self.x_test.to(device),
            self.y_test.to(device),
            self.task,
            self.n_outputs,
        )


def resolve_data_dir(data_dir: str | os.PathLike | None) -> Path:
    """``data_dir`` if given, else ``$OPTDFA_DATA_DIR``; error if neither names a folder."""
    chosen = data_dir if data_dir is not None else os.environ.get(DATA_DIR_ENV)
    if not chosen:
        raise OptdfaError(
            f"this dataset needs IDX files: pass --data-dir DIR (holding e.g. DIR/MNIST/raw/"
            f"train-images-idx3-ubyte.gz) or set {DATA_DIR_ENV}"
        )
    path = Path(chosen).expanduser()
    if not path.is_dir():
        raise OptdfaError(f"data directory {path} does not exist")
    return path


def _standardise(train: np.ndarray, test: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    train = train.astype(np.float32)
    test = test.astype(np.float32)
    mean, std = float(train.mean()), float(train.std())
    return torch.from_numpy((train - mean) / std), torch.from_numpy((test - mean) / std)


def load_idx_dataset(name: str, data_dir: str | os.PathLike | None) -> Dataset:
    """MNIST or Fashion-MNIST from ``DIR/<MNIST|FashionMNIST>/raw`` (``.gz`` or plain files)."""
    root = resolve_data_dir(data_dir)
    folder_name = IDX_FOLDERS[name]
    candidates = [root / folder_name / "raw", root / folder_name, root]
    folder = next(
        (
            c
            for c in candidates
            if (c / IDX_FILES["train_images"]).exists()
            or (c / f"{IDX_FILES['train_images']}.gz").exists()
        ),
        candidates[0],
    )
    arrays = {}
    for key, stem in IDX_FILES.items():
        arrays[key] = read_idx(find_idx(folder, stem), expected_ndim=3 if "images" in key else 1)
    for split in ("train", "test"):
        images, labels = arrays[f"{split}_images"], arrays[f"{split}_labels"]
        if len(images) != len(labels):
            raise OptdfaError(
                f"{name} {split} set: {len(images)} images but {len(labels)} labels in {folder}"
            )
        if labels.size and int(labels.max()) > 9:
            raise OptdfaError(
                f"{name} {split} labels contain class {int(labels.max())}; expected 0-9"
            )
    x_train, x_test = _standardise(arrays["train_images"], arrays["test_images"])
    return Dataset(
        name,
        x_train.unsqueeze(1),
        torch.from_numpy(arrays["train_labels"].astype(np.int64)),
        x_test.unsqueeze(1),
        torch.from_numpy(arrays["test_labels"].astype(np.int64)),
        "classification",
        10,
    )


def load_digits_dataset(data_seed: int = 0, test_fraction: float = 0.2) -> Dataset:
    """scikit-learn's 8×8 digits (1797 images), split stratified by ``data_seed`` into train/test."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    bunch = load_digits()
    images = bunch.images.astype(np.float32)  # (1797, 8, 8), values 0..16
    x_tr, x_te, y_tr, y_te = train_test_split(
        images,
        bunch.target,
        test_size=test_fraction,
        stratify=bunch.target,
        random_state=int(numpy_generator(data_seed, "digits-split").integers(2**31)),
    )
    x_train, x_test = _standardise(x_tr, x_te)
    return Dataset(
        "digits",
        x_train.unsqueeze(1),
        torch.from_numpy(y_tr.astype(np.int64)),
        x_test.unsqueeze(1),
        torch.from_numpy(y_te.astype(np.int64)),
        "classification",
        10,
    )


def make_teacher_dataset(spec: TeacherSpec, data_seed: int = 0) -> Dataset:
    """Synthetic teacher–student data (Refinetti et al. 2021 set-up); see :class:`TeacherSpec`."""
    from scipy.special import erf

    spec.validate()
    rng = numpy_generator(data_seed, "teacher")
    w = rng.standard_normal((spec.hidden, spec.input_dim))
    v = rng.standard_normal((spec.outputs, spec.hidden))
    n = spec.n_train + spec.n_test
    x = rng.standard_normal((n, spec.input_dim))
    clean = erf((x @ w.T) / np.sqrt(spec.input_dim) / np.sqrt(2.0)) @ v.T  # (n, outputs)
    noisy = clean + spec.noise * rng.standard_normal(clean.shape)
    x_t = torch.from_numpy(x.astype(np.float32))
    if spec.task == "classification":
        y_t = torch.from_numpy(noisy.argmax(axis=1).astype(np.int64))
        n_out = spec.outputs
    else:
        y_t = torch.from_numpy(noisy.astype(np.float32))
        n_out = spec.outputs
    return Dataset(
        "teacher",
        x_t[: spec.n_train],
        y_t[: spec.n_train],
        x_t[spec.n_train :],
        y_t[spec.n_train :],
        spec.task,
        n_out,
    )


def load_dataset(
    name: str,
    *,
    data_dir: str | os.PathLike | None = None,
    data_seed: int = 0,
    teacher: TeacherSpec | None = None,
    train_subset: int | None = None,
) -> Dataset:
    """Load dataset ``name`` (one of :data:`DATASETS`).

    ``train_subset`` keeps the first N training samples (for quick runs); the test set is whole.
    """
    if name == "digits":
        ds = load_digits_dataset(data_seed)
    elif name in IDX_FOLDERS:
        ds = load_idx_dataset(name, data_dir)
    elif name == "teacher":
        ds = make_teacher_dataset(teacher or TeacherSpec(), data_seed)
    else:
        raise choice_error("dataset", name, DATASETS)
    if train_subset is not None:
        if train_subset < 1:
            raise OptdfaError(f"train_subset must be positive, got {train_subset}")
        ds.x_train, ds.y_train = ds.x_train[:train_subset], ds.y_train[:train_subset]
    return ds
