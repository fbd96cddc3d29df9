"""Run configuration: one dataclass, strict TOML round trip, one validation pass.

Precedence when the CLI builds a config: defaults < ``--config FILE`` < explicit flags. Every
field is documented in ``docs/user-guide.md``.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tomli_w
import tomllib

from optdfa.data.datasets import DATASETS, TeacherSpec
from optdfa.errors import OptdfaError, choice_error
from optdfa.models import ACTIVATIONS, MODELS
from optdfa.rules import METHODS

OPTIMIZERS = ("sgd", "adam")
#: the learning rate (per step) of an optimizer when none is given: SGD at Adam's 1e-3 barely
#: moves (digits MLP, 10 epochs: 82 % with momentum 0.9, 13 % without); 0.05 trains both
#: (95.0 % and 93.6 %, docs/results/recipes.md)
DEFAULT_LR = {"adam": 1e-3, "sgd": 0.05}
LR_SCHEDULES = ("constant", "cosine")
DEVICES = ("cpu", "cuda", "auto")


@dataclass
class TrainConfig:
    """Everything that defines a training run (units: epochs, samples, learning rate per step)."""

    dataset: str = "digits"
    data_dir: str | None = None
    data_seed: int = 0  # train/test split of digits, teacher weights and samples
    train_subset: int | None = None  # keep the first N training samples
    teacher: TeacherSpec = field(default_factory=TeacherSpec)
    model: str = "mlp"
    hidden: list[int] = field(default_factory=lambda: [256, 256])
    channels: list[int] = field(default_factory=lambda: [32, 64])  # cnn only
    kernel_size: int = 5  # cnn only
    activation: str = "tanh"
    readout_init_scale: float = 1.0  # multiplies the output layer's initial weights
    method: str = "dfa"
    backend: str = "digital"  # dfa only
    backend_options: dict[str, Any] = field(default_factory=dict)
    epochs: int = 10
    batch_size: int = 128
    optimizer: str = "adam"
    lr: float | None = None  # None: DEFAULT_LR of the optimizer (resolved() fills it in)
    momentum: float = 0.9  # sgd only
    weight_decay: float = 0.0
    lr_schedule: str = "constant"  # cosine: anneal to 0 over `epochs`, stepped per epoch
    seed: int = 0
    device: str = "cpu"
    align_every: int = 0  # alignment diagnostics every N optimizer steps (0: off, no cost)
    # photonic differential privacy (dfa on an optical backend; docs/privacy.md)
    dp_delta: float | None = None  # report (ε, δ) per epoch for this δ
    dp_clip_error: float | None = None  # per-sample error norm bound C_e
    dp_clip_activation: float | None = None  # per-sample layer-input norm bound C_h

    # -- conversion -----------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """A plain dict (TOML-able: ``None`` fields are left out)."""
        out = {k: v for k, v in dataclasses.asdict(self).items() if v is not None}
        out["teacher"] = dataclasses.asdict(self.teacher)
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any], *, source: str = "config") -> TrainConfig:
        """Build from a dict, rejecting unknown fields and values of the wrong type."""
        data = dict(data)
        known = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - set(known))
        if unknown:
            raise OptdfaError(
                f"{source}: unknown field(s) {', '.join(unknown)}; valid fields: {', '.join(known)}"
            )
        kwargs: dict[str, Any] = {}
        for name, value in data.items():
            if name == "teacher":
                kwargs[name] = _teacher_from(value, source)
            else:
                kwargs[name] = _coerce(name, value, _FIELD_TYPES[name], source)
        return cls(**kwargs)

    def resolved(self) -> TrainConfig:
        """This config with every default that depends on another field filled in (``lr``)."""
        if self.lr is None and self.optimizer in DEFAULT_LR:
            return dataclasses.replace(self, lr=DEFAULT_LR[self.optimizer])
        return self

    def replace(self, **changes: Any) -> TrainConfig:
        merged = self.to_dict()
        merged.update(changes)
        return TrainConfig.from_dict(merged)

    # -- validation -----------------------------------------------------------------------
    def validate(self) -> None:
        """Raise :class:`OptdfaError` naming the first invalid field."""
        for name, valid in (
            ("dataset", DATASETS),
            ("model", MODELS),
            ("activation", ACTIVATIONS),
            ("method", METHODS),
            ("optimizer", OPTIMIZERS),
            ("lr_schedule", LR_SCHEDULES),
            ("device", DEVICES),
        ):
            if getattr(self, name) not in valid:
                raise choice_error(name.replace("_", " "), getattr(self, name), valid)
        from optdfa.backends import available_backends

        if self.backend not in available_backends():
            raise choice_error("backend", self.backend, available_backends())
        if self.method != "dfa" and self.backend_options:
            raise OptdfaError(
                f"backend options apply to --method dfa only (got --method {self.method})"
            )
        if self.method != "dfa" and self.backend != "digital":
            raise OptdfaError(
                f"--backend {self.backend} applies to --method dfa only (got --method {self.method})"
            )
        for name in ("epochs", "batch_size", "kernel_size"):
            if getattr(self, name) < 1:
                raise OptdfaError(
                    f"{name.replace('_', ' ')} must be a positive integer, got {getattr(self, name)}"
                )
        if self.train_subset is not None and self.train_subset < 1:
            raise OptdfaError(f"train subset must be a positive integer, got {self.train_subset}")
        if self.lr is not None and not (math.isfinite(self.lr) and self.lr > 0):
            raise OptdfaError(f"lr must be a positive number, got {self.lr}")
        if not (math.isfinite(self.readout_init_scale) and self.readout_init_scale >= 0):
            raise OptdfaError(
                f"readout init scale must be a non-negative number, got {self.readout_init_scale}"
            )
        if not (math.isfinite(self.momentum) and 0 <= self.momentum < 1):
            raise OptdfaError(f"momentum must be in [0, 1), got {self.momentum}")
        if not (math.isfinite(self.weight_decay) and self.weight_decay >= 0):
            raise OptdfaError(
                f"weight decay must be a non-negative number, got {self.weight_decay}"
            )
        if self.align_every < 0:
            raise OptdfaError(
                f"align every must be a non-negative integer (0 turns the diagnostics off), "
                f"got {self.align_every}"
            )
        if self.seed < 0 or self.data_seed < 0:
            raise OptdfaError("seeds must be non-negative integers")
        for name in ("hidden", "channels"):
            bad = [w for w in getattr(self, name) if w < 1]
            if bad:
                raise OptdfaError(
                    f"{name} widths must be positive integers, got {getattr(self, name)}"
                )
        self.teacher.validate()
        dp = {
            "dp_delta": self.dp_delta,
            "dp_clip_error": self.dp_clip_error,
            "dp_clip_activation": self.dp_clip_activation,
        }
        if any(v is not None for v in dp.values()) and self.method != "dfa":
            raise OptdfaError(
                f"--dp-delta and the --dp-clip-* bounds apply to --method dfa only (got --method {self.method})"
            )
        for name in ("dp_clip_error", "dp_clip_activation"):
            value = dp[name]
            if value is not None and not (math.isfinite(value) and value > 0):
                raise OptdfaError(
                    f"{name.replace('_', ' ')} must be a positive number, got {value}"
                )
        if self.dp_delta is not None:
            if not 0 < self.dp_delta < 1:
                raise OptdfaError(f"dp delta must be in (0, 1), got {self.dp_delta}")
            if self.dp_clip_error is None:
                raise OptdfaError(
                    "--dp-delta needs --dp-clip-error C (the per-sample error bound that fixes the "
                    "encoding scale; C = 1.5 clips nothing for softmax cross-entropy, whose "
                    "per-sample error norm is at most sqrt(2))"
                )


_FIELD_TYPES: dict[str, Any] = {
    "dataset": str,
    "data_dir": (str, None),
    "data_seed": int,
    "train_subset": (int, None),
    "model": str,
    "hidden": list,
    "channels": list,
    "kernel_size": int,
    "activation": str,
    "readout_init_scale": float,
    "method": str,
    "backend": str,
    "backend_options": dict,
    "epochs": int,
    "batch_size": int,
    "optimizer": str,
    "lr": (float, None),
    "momentum": float,
    "weight_decay": float,
    "lr_schedule": str,
    "seed": int,
    "device": str,
    "align_every": int,
    "dp_delta": (float, None),
    "dp_clip_error": (float, None),
    "dp_clip_activation": (float, None),
}


def _coerce(name: str, value: Any, kind: Any, source: str) -> Any:
    optional = isinstance(kind, tuple)
    base = kind[0] if optional else kind
    if value is None and optional:
        return None
    ok = (
        (base is int and isinstance(value, int) and not isinstance(value, bool))
        or (base is float and isinstance(value, (int, float)) and not isinstance(value, bool))
        or (base is str and isinstance(value, str))
        or (base is dict and isinstance(value, dict))
        or (
            base is list
            and isinstance(value, list)
            and all(isinstance(v, int) and not isinstance(v, bool) for v in value)
        )
    )
    if not ok:
        expected = {
            int: "an integer",
            float: "a number",
            str: "a string",
            dict: "a table",
            list: "a list of integers",
        }[base]
        raise OptdfaError(f"{source}: field {name!r} must be {expected}, got {value!r}")
    return float(value) if base is float else value


def _teacher_from(value: Any, source: str) -> TeacherSpec:
    if isinstance(value, TeacherSpec):
        return value
    if not isinstance(value, dict):
        raise OptdfaError(f"{source}: field 'teacher' must be a table, got {value!r}")
    known = {f.name: f for f in dataclasses.fields(TeacherSpec)}
    unknown = sorted(set(value) - set(known))
    if unknown:
        raise OptdfaError(
            f"{source}: unknown teacher field(s) {', '.join(unknown)}; valid: {', '.join(known)}"
        )
    types = {
        "input_dim": int,
        "hidden": int,
        "outputs": int,
        "noise": float,
        "n_train": int,
        "n_test": int,
        "task": str,
    }
    return TeacherSpec(
        **{k: _coerce(f"teacher.{k}", v, types[k], source) for k, v in value.items()}
    )


def load_toml(path: str | Path) -> dict[str, Any]:
    """Parse a TOML file into a dict, with a clear error if it is missing or malformed."""
    path = Path(path)
    try:
        with path.open("rb") as f:
            return tomllib.load(f)
    except FileNotFoundError:
        raise OptdfaError(f"config file {path} does not exist") from None
    except tomllib.TOMLDecodeError as exc:
        raise OptdfaError(f"config file {path} is not valid TOML: {exc}") from None
    except OSError as exc:
        raise OptdfaError(f"cannot read config file {path}: {exc}") from None


def load_config(path: str | Path) -> TrainConfig:
    """A :class:`TrainConfig` from a TOML file (fields as in ``config.toml`` of a run)."""
    return TrainConfig.from_dict(load_toml(path), source=str(path))


def dumps_config(config: TrainConfig) -> str:
    """TOML text of ``config``."""
    return tomli_w.dumps(config.to_dict())
