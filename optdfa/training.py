"""The training loop behind ``optdfa train`` and :func:`optdfa.train`.

A :class:`Trainer` builds everything from a :class:`TrainConfig` (data, model, rule, backend,
optimizer), trains epoch by epoch and, given an output directory, writes ``config.toml``,
``metrics.jsonl``, ``summary.json``, ``curves.png`` and ``checkpoint.pt`` after every epoch.
A resumed run reloads the checkpoint and continues; on CPU its weights and metrics are
bit-for-bit those of an uninterrupted run (data order is drawn per epoch from
``(seed, epoch)``, every other random stream is saved in the checkpoint).
"""

from __future__ import annotations

import shutil
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm import tqdm

from optdfa.alignment import AlignmentHook
from optdfa.config import TrainConfig, dumps_config, load_config
from optdfa.data import Dataset, load_dataset
from optdfa.errors import OptdfaError, TrainingDiverged
from optdfa.guard import TrainingGuard, monitored
from optdfa.models import build_model
from optdfa.outputs import (
    RUN_FILES,
    atomic_torch_save,
    atomic_write_json,
    atomic_write_jsonl,
    atomic_write_text,
    ensure_writable_dir,
)
from optdfa.plotting import plot_alignment, plot_curves
from optdfa.rules import LearningRule, loss_for_task, make_rule
from optdfa.seeding import torch_generator

CHECKPOINT_FORMAT = "optdfa-checkpoint/1"
EVAL_BATCH = 1024


class TrainingHook:
    """Extension point: diagnostics that run inside the loop without changing training.

    ``on_step`` is called after the gradients of a step are computed and before the optimizer
    uses them; ``on_epoch_end`` may add keys to the epoch's metrics line. Hooks save and restore
    their state with the checkpoint. Subclass and override what you need (the defaults do nothing).
    """

    def on_step(self, trainer: Trainer, step: int, x: torch.Tensor, y: torch.Tensor) -> None:
        pass

    def on_epoch_end(self, trainer: Trainer, metrics: dict[str, Any]) -> None:
        pass

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass


@dataclass
class RunResult:
    """What a finished run returns to Python callers."""

    config: TrainConfig
    summary: dict[str, Any]
    metrics: list[dict[str, Any]]
    model: nn.Module
    rule: LearningRule
    out_dir: Path | None = None


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise OptdfaError("--device cuda was asked for, but torch sees no CUDA device")
    return torch.device(name)


def make_optimizer(config: TrainConfig, params: Any) -> torch.optim.Optimizer:
    config = config.resolved()
    if config.optimizer == "sgd":
        return torch.optim.SGD(
            params, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay
        )
    return torch.optim.Adam(params, lr=config.lr, weight_decay=config.weight_decay)


@dataclass
class Trainer:
    """Builds and trains one run; see the module docstring."""

    config: TrainConfig
    progress: bool = True
    hooks: list[TrainingHook] = field(default_factory=list)
    data: Dataset | None = None  # pass a loaded dataset to skip loading

    def __post_init__(self) -> None:
        self.config = self.config.resolved()
        cfg = self.config
        cfg.validate()
        self.hooks = list(self.hooks)
        self.device = resolve_device(cfg.device)
        if self.data is None:
            self.data = load_dataset(
                cfg.dataset,
                data_dir=cfg.data_dir,
                data_seed=cfg.data_seed,
                teacher=cfg.teacher,
                train_subset=cfg.train_subset,
            )
        self.data = self.data.to(self.device)
        gen = torch_generator(cfg.seed, "init")
        self.model = build_model(
            cfg.model,
            self.data.input_shape,
            self.data.n_outputs,
            hidden=cfg.hidden,
            activation=cfg.activation,
            channels=cfg.channels,
            kernel_size=cfg.kernel_size,
            generator=gen,
            readout_scale=cfg.readout_init_scale,
        ).to(self.device)
        self.loss_fn = loss_for_task(self.data.task)
        self.rule = make_rule(
            cfg.method,
            seed=cfg.seed,
            backend=cfg.backend,
            backend_options=cfg.backend_options,
            clip_error=cfg.dp_clip_error,
            clip_activation=cfg.dp_clip_activation,
        )
        self.rule.attach(self.model, self.data.x_train[:2])
        #: the alignment diagnostics (``config.align_every > 0``), else None: no cost at all
        self.alignment: AlignmentHook | None = next(
            (h for h in self.hooks if isinstance(h, AlignmentHook)), None
        )
        if self.alignment is None and cfg.align_every > 0:
            self.alignment = AlignmentHook(cfg.align_every)
            self.hooks.append(self.alignment)
        #: ε per epoch of a private run (``config.dp_delta``), else None
        self.privacy = None
        if cfg.dp_delta is not None:
            from optdfa.privacy.hook import PrivacyHook

            self.privacy = PrivacyHook(cfg.dp_delta)
            self.privacy.ensure_mechanism(self)  # a clear error now rather than after an epoch
            self.hooks.append(self.privacy)
        #: the training guard (:mod:`optdfa.guard`) of a run with approximate (optical) feedback
        self.guard: TrainingGuard | None = next(
            (h for h in self.hooks if isinstance(h, TrainingGuard)), None
        )
        if self.guard is None and monitored(self.rule):
            self.guard = TrainingGuard()
            self.hooks.append(self.guard)
        self.optimizer = make_optimizer(cfg, self.model.parameters())
        self.scheduler = (
            torch.optim.lr_scheduler.CosineAnnealingLR(self.optimizer, T_max=cfg.epochs)
            if cfg.lr_schedule == "cosine"
            else None
        )
        self.epoch = 0  # epochs completed
        self.step = 0  # optimizer steps taken
        self.metrics: list[dict[str, Any]] = []

    # -- one epoch ----------------------------------------------------------------------------
    def train_epoch(self) -> dict[str, Any]:
        """Train one epoch; returns that epoch's metrics line."""
        cfg, data = self.config, self.data
        epoch = self.epoch + 1
        if epoch == 1 and self.guard is not None:
            self.guard.preflight(self)  # before the first step (a resumed run said it already)
        start = time.perf_counter()
        n = len(data.x_train)
        order = torch.randperm(n, generator=torch_generator(cfg.seed, "shuffle", epoch)).to(
            self.device
        )
        classification = data.task == "classification"
        loss_sum = torch.zeros((), dtype=torch.float64, device=self.device)
        correct = torch.zeros((), dtype=torch.int64, device=self.device)
        self.model.train()
        bar = tqdm(
            total=n,
            desc=f"epoch {epoch}/{cfg.epochs}",
            unit="sample",
            unit_scale=True,
            disable=not (self.progress and sys.stderr.isatty()),
            leave=False,
            file=sys.stderr,
            dynamic_ncols=True,
        )
        with bar:
            for i, begin in enumerate(range(0, n, cfg.batch_size)):
                idx = order[begin : begin + cfg.batch_size]
                x, y = data.x_train[idx], data.y_train[idx]
                self.optimizer.zero_grad(set_to_none=True)
                result = self.rule.compute_gradients(x, y, self.loss_fn)
                if not torch.isfinite(result.loss):
                    self._diverged(epoch, i + 1, float(result.loss))
                for hook in self.hooks:
                    hook.on_step(self, self.step, x, y)
                self.optimizer.step()
                self.step += 1
                loss_sum += result.loss.double() * len(idx)
                if classification:
                    correct += (result.output.argmax(1) == y).sum()
                bar.update(len(idx))
                if not bar.disable and i % 20 == 0:
                    seen = begin + len(idx)
                    stats = {"loss": f"{float(loss_sum) / seen:.4f}"}
                    if classification:
                        stats["acc"] = f"{100 * float(correct) / seen:.1f}%"
                    bar.set_postfix(stats)
        if self.scheduler is not None:
            self.scheduler.step()
        test_loss, test_acc = self.evaluate()
        self.epoch = epoch
        line: dict[str, Any] = {
            "epoch": epoch,
            "step": self.step,
            "train_loss": float(loss_sum) / n,
            "train_accuracy": float(correct) / n if classification else None,
            "test_loss": test_loss,
            "test_accuracy": test_acc,
            "lr": self.optimizer.param_groups[0]["lr"],
        }
        line.update(self.rule.counters())
        for hook in self.hooks:
            hook.on_epoch_end(self, line)
        line["seconds"] = time.perf_counter() - start
        self.metrics.append(line)
        return line

    @torch.no_grad()
    def evaluate(self, split: str = "test") -> tuple[float, float | None]:
        """Mean loss and accuracy (``None`` for regression) on the ``test`` or ``train`` split."""
        x_all = self.data.x_test if split == "test" else self.data.x_train
        y_all = self.data.y_test if split == "test" else self.data.y_train
        self.model.eval()
        loss_sum, correct = 0.0, 0
        for begin in range(0, len(x_all), EVAL_BATCH):
            x, y = x_all[begin : begin + EVAL_BATCH], y_all[begin : begin + EVAL_BATCH]
            out = self.model(x)
            loss_sum += float(self.loss_fn(out, y)) * len(x)
            if self.data.task == "classification":
                correct += int((out.argmax(1) == y).sum())
        self.model.train()
        acc = correct / len(x_all) if self.data.task == "classification" else None
        return loss_sum / len(x_all), acc

    def _diverged(self, epoch: int, batch: int, value: float) -> None:
        where = f"epoch {epoch}, batch {batch} (optimizer step {self.step + 1})"
        kept = (
            f"the last good checkpoint (epoch {self.epoch}) is kept"
            if self.epoch
            else "no checkpoint was written (it diverged in the first epoch)"
        )
        raise TrainingDiverged(
            f"the loss became {value} at {where}; training stopped and {kept}. Try a smaller --lr."
        )

    # -- checkpoints --------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {
            "format": CHECKPOINT_FORMAT,
            "config": self.config.to_dict(),
            "epoch": self.epoch,
            "step": self.step,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict() if self.scheduler else None,
            "rule": self.rule.state_dict(),
            "hooks": [h.state_dict() for h in self.hooks],
            "metrics": self.metrics,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.scheduler is not None and state["scheduler"] is not None:
            self.scheduler.load_state_dict(state["scheduler"])
        self.rule.load_state_dict(state["rule"])
        for hook, hstate in zip(self.hooks, state.get("hooks", []), strict=False):
            hook.load_state_dict(hstate)
        self.epoch, self.step = int(state["epoch"]), int(state["step"])
        self.metrics = list(state["metrics"])

    def summary(self, status: str = "completed") -> dict[str, Any]:
        last = self.metrics[-1] if self.metrics else {}
        if status == "completed" and self.guard is not None and not self.guard.healthy:
            status = "completed-with-warnings"
        acc = last.get("test_accuracy")
        summary: dict[str, Any] = {
            "status": status,
            "dataset": self.config.dataset,
            "model": self.config.model,
            "method": self.config.method,
            "backend": self.config.backend if self.config.method == "dfa" else None,
            "seed": self.config.seed,
            "epochs": self.epoch,
            "steps": self.step,
            "seconds": sum(m["seconds"] for m in self.metrics),
            "train_loss": last.get("train_loss"),
            "train_accuracy": last.get("train_accuracy"),
            "test_loss": last.get("test_loss"),
            "test_accuracy": acc,
            "test_error": None if acc is None else 1.0 - acc,
            "n_parameters": sum(p.numel() for p in self.model.parameters()),
            "rule": self.rule.describe(),
        }
        summary.update(self.rule.counters())
        if self.alignment is not None:
            summary["alignment"] = self.alignment.summary()
        if self.guard is not None:
            summary["guard"] = self.guard.summary()
        if self.privacy is not None:
            from optdfa.privacy import privacy_report

            cfg = self.config
            summary["privacy"] = privacy_report(
                self.privacy.ensure_mechanism(self),
                batch_size=cfg.batch_size,
                dataset_size=len(self.data.x_train),
                epochs=max(1, self.epoch),
                delta=cfg.dp_delta,
                clip_error=cfg.dp_clip_error,
                clip_activation=cfg.dp_clip_activation,
            )
        return summary


def _read_checkpoint(path: Path) -> dict[str, Any]:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise OptdfaError(f"nothing to resume: {path} does not exist") from None
    except Exception as exc:
        raise OptdfaError(f"cannot read checkpoint {path}: {exc}") from None
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise OptdfaError(f"{path} is not an optdfa checkpoint")
    return state


def _config_from(config: TrainConfig | Mapping[str, Any] | str | Path) -> TrainConfig:
    if isinstance(config, TrainConfig):
        return config.resolved()
    if isinstance(config, Mapping):
        return TrainConfig.from_dict(dict(config)).resolved()
    return load_config(config).resolved()


def resume_config(out_dir: str | Path, epochs: int | None = None) -> TrainConfig:
    """The config of the run in ``out_dir``, with ``epochs`` changed if given (to extend it)."""
    out = Path(out_dir)
    if not (out / "checkpoint.pt").exists():
        raise OptdfaError(f"nothing to resume: {out / 'checkpoint.pt'} does not exist")
    cfg = load_config(out / "config.toml")
    if epochs is None or epochs == cfg.epochs:
        return cfg
    if cfg.lr_schedule != "constant":
        raise OptdfaError(
            f"cannot change the epochs of a run with a {cfg.lr_schedule} learning-rate schedule "
            f"(the schedule was laid out for {cfg.epochs} epochs)"
        )
    return cfg.replace(epochs=epochs)


def train(
    config: TrainConfig | Mapping[str, Any] | str | Path,
    out_dir: str | Path | None = None,
    *,
    resume: bool = False,
    overwrite: bool = False,
    progress: bool = False,
    hooks: list[TrainingHook] | None = None,
    data: Dataset | None = None,
) -> RunResult:
    """Train a model as ``optdfa train`` does.

    ``config`` is a :class:`TrainConfig`, a dict of its fields or a TOML path. With ``out_dir``
    the run's files are written there; ``resume=True`` continues the run found there (its
    config must equal ``config`` except for ``epochs``).
    """
    cfg = _config_from(config)
    out = Path(out_dir).expanduser() if out_dir is not None else None
    saved_state = None
    if out is not None:
        if resume:
            saved_state = _read_checkpoint(out / "checkpoint.pt")
            saved_cfg = TrainConfig.from_dict(saved_state["config"]).to_dict()
            diff = sorted(
                k for k, v in cfg.to_dict().items() if k != "epochs" and saved_cfg.get(k) != v
            )
            diff += sorted(k for k in saved_cfg if k not in cfg.to_dict())
            if diff:
                raise OptdfaError(
                    f"cannot resume {out}: the config differs from the saved run in {', '.join(diff)}"
                )
        elif out.exists() and any((out / f).exists() for f in RUN_FILES) and not overwrite:
            raise OptdfaError(
                f"{out} already holds a run; pass --resume to continue it, "
                f"--overwrite to replace it, or choose another --out"
            )
    trainer = Trainer(cfg, progress=progress, hooks=list(hooks or []), data=data)
    if saved_state is not None:
        if saved_state["epoch"] > cfg.epochs:
            raise OptdfaError(
                f"the run in {out} has already trained {saved_state['epoch']} epochs, "
                f"more than the {cfg.epochs} asked for"
            )
        trainer.load_state_dict(saved_state)
    created = False
    if out is not None:
        out, created = ensure_writable_dir(out)
        if overwrite and not resume:
            for f in RUN_FILES:
                (out / f).unlink(missing_ok=True)
        try:
            atomic_write_text(out / "config.toml", dumps_config(cfg))
        except OSError as exc:
            if created:
                shutil.rmtree(out, ignore_errors=True)
            raise OptdfaError(f"cannot write to {out}: {exc}") from None
    title = f"{cfg.method} ({cfg.backend}) — {cfg.dataset} {cfg.model}"
    try:
        while trainer.epoch < cfg.epochs:
            line = trainer.train_epoch()
            if progress:
                tqdm.write(_epoch_report(line, cfg.epochs), file=sys.stderr)
            if out is not None:
                atomic_torch_save(out / "checkpoint.pt", trainer.state_dict())
                atomic_write_jsonl(out / "metrics.jsonl", trainer.metrics)
                plot_curves(trainer.metrics, out / "curves.png", title)
                if trainer.alignment is not None:
                    atomic_write_jsonl(out / "alignment.jsonl", trainer.alignment.lines)
                    plot_alignment(trainer.alignment.lines, out / "alignment.png", title)
    except TrainingDiverged as exc:
        if out is not None:
            summary = trainer.summary(status="diverged")
            summary["error"] = str(exc)
            atomic_write_json(out / "summary.json", summary)
        raise
    finally:
        trainer.rule.close()
    summary = trainer.summary()
    if out is not None:
        atomic_write_json(out / "summary.json", summary)
    return RunResult(cfg, summary, trainer.metrics, trainer.model, trainer.rule, out)


def _epoch_report(line: dict[str, Any], epochs: int) -> str:
    def pct(v: float | None) -> str:
        return "" if v is None else f" acc {100 * v:6.2f}%"

    dp = ""
    if "dp_delta" in line:
        eps = line.get("dp_epsilon")
        dp = f"  ε {'inf' if eps is None else f'{eps:.4g}'} (δ {line['dp_delta']:g})"
    align = (line.get("alignment") or {}).get("signal", {}).get("total")
    return (
        f"epoch {line['epoch']:>3}/{epochs}  train loss {line['train_loss']:.4f}{pct(line['train_accuracy'])}"
        f"  test loss {line['test_loss']:.4f}{pct(line['test_accuracy'])}"
        + ("" if align is None else f"  gradient alignment {align:.3f}")
        + dp
        + f"  ({line['seconds']:.1f} s)"
    )
