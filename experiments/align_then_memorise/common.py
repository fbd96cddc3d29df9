"""What the align-then-memorise experiments share: arguments, runs, curve statistics, output."""

from __future__ import annotations

import argparse
import math
import platform
import re
import shlex
import sys
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

import optdfa
from optdfa.backends import backend_class
from optdfa.backends.optical import DEFAULT_PROFILE
from optdfa.cli.options import key_value
from optdfa.config import TrainConfig
from optdfa.data import Dataset, TeacherSpec
from optdfa.errors import OptdfaError
from optdfa.optics.profile import load_profile
from optdfa.outputs import atomic_savefig, atomic_write_json
from optdfa.training import Trainer

DEFAULT_OUT = Path("docs/results")
QUICK_OUT = Path("runs/align-then-memorise-quick")
#: fraction of the change used for "time to alignment" and "time to learn"
FRACTION = 0.9


def parser(
    description: str, *, data: bool = False, backend: bool = False
) -> argparse.ArgumentParser:
    """The flags every experiment takes (plus ``--data-dir`` / ``--backend`` where relevant)."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--quick", action="store_true", help="small settings (≤ 3 min): a smoke run")
    p.add_argument("--seeds", type=int, default=None, help="number of seeds (default 3)")
    p.add_argument(
        "--out",
        type=Path,
        default=None,
        help=f"folder for the figure and JSON (default {DEFAULT_OUT}; --quick: {QUICK_OUT})",
    )
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    if data:
        p.add_argument(
            "--data-dir",
            default=None,
            help="folder holding MNIST/raw and FashionMNIST/raw (or set OPTDFA_DATA_DIR)",
        )
    if backend:
        p.add_argument(
            "--backend",
            default="digital",
            help="feedback backend of the DFA runs (e.g. sim-opu; default digital)",
        )
        p.add_argument(
            "--profile",
            default=None,
            help="device profile of the backend (backend option 'profile', e.g. lighton-aurora)",
        )
        p.add_argument(
            "--opu",
            action="append",
            type=key_value,
            default=[],
            metavar="KEY=VALUE",
            help="override one field of the device profile, e.g. encoder=stochastic "
            "(repeatable; as `optdfa train --opu`)",
        )
    return p


def prepare(args: argparse.Namespace) -> Path:
    """Apply ``--threads``, check the arguments, and return the output folder."""
    if args.threads < 1:
        raise OptdfaError(f"--threads must be a positive integer, got {args.threads}")
    if args.seeds is not None and args.seeds < 1:
        raise OptdfaError(f"--seeds must be a positive integer, got {args.seeds}")
    torch.set_num_threads(args.threads)
    backend = getattr(args, "backend", "digital")
    optical = getattr(args, "profile", None) is not None or bool(getattr(args, "opu", None))
    if optical and backend == "digital":
        raise OptdfaError(
            "--profile and --opu apply to an optical backend: add e.g. --backend sim-opu"
        )
    if backend not in optdfa.available_backends():
        raise OptdfaError(
            f"backend {args.backend!r} is not installed here (available: "
            f"{', '.join(optdfa.available_backends())})"
        )
    if optical:
        if not getattr(backend_class(backend), "uses_opu_profile", False):
            raise OptdfaError(f"--profile and --opu do not apply to --backend {backend}")
        # fail now, not after the first seeds: unknown profile, field or value
        load_profile(args.profile or DEFAULT_PROFILE, dict(args.opu))
    return args.out or (QUICK_OUT if args.quick else DEFAULT_OUT)


def settings_for(
    args: argparse.Namespace, quick: dict[str, Any], full: dict[str, Any]
) -> dict[str, Any]:
    """A copy of the experiment's ``quick`` or ``full`` settings (``--quick``), with ``--seeds``."""
    settings = dict(quick if args.quick else full)
    if args.seeds:
        settings["seeds"] = args.seeds
    return settings


def teacher_spec(settings: dict[str, Any]) -> TeacherSpec:
    """The one-output teacher of the teacher-student experiments (sizes from ``settings``)."""
    return TeacherSpec(
        input_dim=settings["input_dim"],
        hidden=settings["teacher_hidden"],
        outputs=1,
        n_train=settings["n_train"],
        n_test=settings["n_test"],
    )


def dfa_backend(args: argparse.Namespace) -> dict[str, Any]:
    """TrainConfig fields that put the DFA runs on ``--backend`` with ``--profile``."""
    name = getattr(args, "backend", "digital")
    options: dict[str, Any] = {"profile": args.profile} if getattr(args, "profile", None) else {}
    if getattr(args, "opu", None):
        options["overrides"] = dict(args.opu)
    if name == "sim-opu":
        # the camera-noise generator the documented results were drawn with (bit-exact); the
        # default "quantile" draws the same law within 2^-17 (docs/physics-model.md)
        options["noise_generator"] = "torch"
    return {"backend": name, "backend_options": options}


def backend_suffix(args: argparse.Namespace) -> str:
    """``""`` for the digital backend, else ``"-<backend>[-<profile>][-<key>-<value>…]"`` for
    file names (``--opu encoder=ternary:0.5`` adds ``-encoder-ternary0.5``)."""
    name = getattr(args, "backend", "digital")
    if name == "digital":
        return ""
    profile = getattr(args, "profile", None)
    suffix = f"-{name}" + (f"-{profile}" if profile else "")
    for key, value in sorted(dict(getattr(args, "opu", None) or []).items()):
        suffix += f"-{key}-" + re.sub(r"[^A-Za-z0-9.]+", "", str(value))
    return suffix


def device_cost(run: Run) -> dict[str, float]:
    """The backend's ``frames`` and ``device_seconds`` over a run (0 for a digital backend)."""
    last = run.trainer.metrics[-1] if run.trainer.metrics else {}
    return {key: float(last.get(key, 0.0)) for key in ("frames", "device_seconds")}


class EvalProbe:
    """A training hook recording test loss (and accuracy) every ``every`` steps.

    Like the alignment hook it runs before the optimizer step, so row ``s`` holds the test
    metrics of the weights after ``s`` updates. Evaluation changes nothing in training.
    """

    def __init__(self, every: int) -> None:
        self.every = every
        self.rows: list[tuple[int, float, float | None]] = []

    def on_step(self, trainer: Trainer, step: int, x: torch.Tensor, y: torch.Tensor) -> None:
        if step % self.every == 0:
            loss, acc = trainer.evaluate()
            self.rows.append((step, loss, acc))

    def on_epoch_end(self, trainer: Trainer, metrics: dict[str, Any]) -> None:
        pass

    def state_dict(self) -> dict[str, Any]:
        return {"rows": list(self.rows)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.rows = list(state["rows"])


@dataclass
class Run:
    """A finished in-process run: the trainer (model, rule, logs) and its test probe."""

    config: TrainConfig
    trainer: Trainer
    probe: EvalProbe | None
    seconds: float
    lines: list[dict[str, Any]] = field(default_factory=list)

    @property
    def steps(self) -> np.ndarray:
        return np.array([line["step"] for line in self.lines])

    def series(self, key: str, layer: int | None = None) -> np.ndarray:
        """One logged quantity over the measurements (``layer=None``: its total); NaN if undefined."""
        out = []
        for line in self.lines:
            entry = line.get(key)
            value = None if entry is None else entry["total" if layer is None else "layers"]
            if layer is not None and value is not None:
                value = value[layer]
            out.append(math.nan if value is None else value)
        return np.array(out, dtype=float)


def train_run(
    config: TrainConfig, *, data: Dataset | None = None, probe_every: int | None = None
) -> Run:
    """Train ``config`` in process (alignment every ``config.align_every`` steps)."""
    probe = EvalProbe(probe_every) if probe_every else None
    trainer = Trainer(config, progress=False, hooks=[probe] if probe else [], data=data)
    start = time.perf_counter()
    try:
        while trainer.epoch < config.epochs:
            trainer.train_epoch()
    finally:
        trainer.rule.close()
    seconds = time.perf_counter() - start
    lines = trainer.alignment.lines if trainer.alignment is not None else []
    return Run(config, trainer, probe, seconds, lines)


# -- curve statistics ------------------------------------------------------------------------
def smooth(values: np.ndarray, window: int) -> np.ndarray:
    """Centred moving average over ``window`` points (shrinking at the ends), NaNs ignored."""
    values = np.asarray(values, dtype=float)
    if window <= 1:
        return values.copy()
    half = window // 2
    out = np.empty_like(values)
    for i in range(len(values)):
        chunk = values[max(0, i - half) : i + half + 1]
        chunk = chunk[~np.isnan(chunk)]
        out[i] = chunk.mean() if chunk.size else math.nan
    return out


def tail_mean(values: np.ndarray, tail: float) -> float | None:
    """Mean of the last ``tail`` fraction of a curve (NaNs ignored); ``None`` if all are NaN."""
    chunk = np.asarray(values, dtype=float)[-max(1, int(len(values) * tail)) :]
    chunk = chunk[~np.isnan(chunk)]
    return float(chunk.mean()) if chunk.size else None


def time_to_rise(
    steps: np.ndarray, values: np.ndarray, fraction: float = FRACTION, tail: float = 0.5
) -> int | None:
    """First step where a (smoothed) rising curve has made ``fraction`` of its rise.

    Rise: from the first value to the plateau, the mean of the last ``tail`` of the run (a
    curve that peaks and then decays a little has its plateau below the peak). ``None`` if the
    curve never rises.
    """
    ok = ~np.isnan(values)
    if ok.sum() < 2:
        return None
    s, v = steps[ok], values[ok]
    plateau = float(v[-max(1, int(len(v) * tail)) :].mean())
    if plateau <= v[0]:
        return None
    threshold = v[0] + fraction * (plateau - v[0])
    return int(s[np.argmax(v >= threshold)])


def time_to_peak_fraction(
    steps: np.ndarray, values: np.ndarray, fraction: float = FRACTION
) -> int | None:
    """First step where a (smoothed) curve has made ``fraction`` of its rise to its maximum.

    A clock for curves that rise and then decay (e.g. alignment under a drifting feedback
    matrix), where the late plateau of :func:`time_to_rise` lies below the peak. ``None`` if the
    curve never rises above its first value.
    """
    ok = ~np.isnan(values)
    if ok.sum() < 2:
        return None
    s, v = steps[ok], values[ok]
    peak = float(v.max())
    if peak <= v[0]:
        return None
    return int(s[np.argmax(v >= v[0] + fraction * (peak - v[0]))])


def nanmax(values: np.ndarray) -> float | None:
    """Largest value ignoring NaNs; ``None`` if all are NaN (an undefined quantity)."""
    values = np.asarray(values, dtype=float)
    return float(np.nanmax(values)) if (~np.isnan(values)).any() else None


def time_to_fall(
    steps: np.ndarray, values: np.ndarray, fraction: float = FRACTION, tail: float = 0.1
) -> int | None:
    """First step where a (smoothed) falling curve has made ``fraction`` of its total decrease.

    Decrease: from the first value to the mean of the last ``tail`` of the run.
    """
    ok = ~np.isnan(values)
    if ok.sum() < 2:
        return None
    s, v = steps[ok], values[ok]
    final = float(v[-max(1, int(len(v) * tail)) :].mean())
    if final >= v[0]:
        return None
    threshold = v[0] - fraction * (v[0] - final)
    return int(s[np.argmax(v <= threshold)])


def stats(values: Sequence[float | None]) -> dict[str, Any]:
    """Mean and sample standard deviation over seeds (``None`` entries left out)."""
    kept = [float(v) for v in values if v is not None and not math.isnan(float(v))]
    n = len(kept)
    mean = float(np.mean(kept)) if n else None
    std = float(np.std(kept, ddof=1)) if n > 1 else (0.0 if n == 1 else None)
    return {
        "mean": mean,
        "std": std,
        "n": n,
        "values": [None if v is None else float(v) for v in values],
    }


def fmt(s: dict[str, Any], digits: int = 3) -> str:
    """``mean ± std`` of :func:`stats` for tables."""
    if s["mean"] is None:
        return "n/a"
    return f"{s['mean']:.{digits}f} ± {s['std']:.{digits}f}"


def curve_band(steps: np.ndarray, curves: list[np.ndarray], points: int = 200) -> dict[str, list]:
    """Mean and std over seeds of curves sampled at the same steps, thinned to ≈ ``points``."""
    stack = np.vstack(curves)
    keep = np.unique(np.linspace(0, len(steps) - 1, min(points, len(steps))).astype(int))
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns: undefined quantities
        mean = np.nanmean(stack, axis=0)
        std = np.nanstd(stack, axis=0, ddof=1) if len(curves) > 1 else np.zeros_like(mean)

    def clean(a: np.ndarray) -> list[float | None]:
        return [None if math.isnan(v) else float(v) for v in a[keep]]

    return {"step": [int(s) for s in steps[keep]], "mean": clean(mean), "std": clean(std)}


def plot_band(
    ax: Any, steps: np.ndarray, curves: list[np.ndarray], label: str, color: str, log: bool = False
) -> None:
    """Mean over seeds with a ± 1 std band (``log``: geometric mean and std of the logarithm)."""
    stack = np.vstack(curves)
    if log:
        stack = np.log(stack)
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns: undefined quantities
        mean = np.nanmean(stack, axis=0)
        std = np.nanstd(stack, axis=0, ddof=1) if len(curves) > 1 else np.zeros_like(mean)
    low, mid, high = mean - std, mean, mean + std
    if log:
        low, mid, high = np.exp(low), np.exp(mid), np.exp(high)
    ax.plot(steps, mid, color=color, label=label)
    ax.fill_between(steps, low, high, color=color, alpha=0.2, lw=0)


def time_to_level(steps: np.ndarray, values: np.ndarray, level: float | None) -> int | None:
    """First step where a (smoothed) curve reaches ``level``; ``None`` if it never does."""
    if level is None:
        return None
    ok = ~np.isnan(values)
    hit = np.flatnonzero(values[ok] >= level)
    return int(steps[ok][hit[0]]) if hit.size else None


# -- output ----------------------------------------------------------------------------------
def command_line(module: str, argv: Sequence[str] | None) -> str:
    """The command that produced a result, as a user would type it."""
    args = list(sys.argv[1:] if argv is None else argv)
    return " ".join([f"python -m {module}", *map(shlex.quote, args)])


def write(out: Path, name: str, payload: dict[str, Any], fig: Any) -> tuple[Path, Path]:
    """Write ``<out>/<name>.json`` and ``<out>/<name>.png``; returns both paths."""
    out.mkdir(parents=True, exist_ok=True)
    payload = {
        **payload,
        "environment": {
            "optdfa": optdfa.__version__,
            "torch": torch.__version__,
            "python": platform.python_version(),
            "threads": torch.get_num_threads(),
        },
    }
    json_path, png_path = out / f"{name}.json", out / f"{name}.png"
    atomic_write_json(json_path, payload)
    atomic_savefig(png_path, fig, dpi=120)
    import matplotlib.pyplot as plt

    plt.close(fig)
    return json_path, png_path


def main_guard(run: Any) -> None:
    """Run an experiment's ``main``; user errors print one line and exit non-zero."""
    try:
        run()
    except OptdfaError as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(exc.exit_code) from None
