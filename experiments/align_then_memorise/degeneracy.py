"""Experiment 2 — degeneracy breaking: among solutions of equal training loss, DFA finds the
ones with high alignment; BP's are not aligned with the feedback matrix.

An over-parametrised ``erf`` student (K hidden units, K·D weights ≫ n training samples) fits a
small teacher data set, so many weight configurations reach zero training loss. For each seed,
DFA and BP start from the same initial weights, and BP is measured against the feedback matrix
B that DFA uses with that seed. Both are trained until the training loss (on the whole training
set) falls below the same target; then, on the training set, we measure the gradient alignment
(per-sample cosine of DFA's hidden-layer signal with backprop's — for BP: what DFA's signal
with B would be at BP's solution), the update alignment, and the weight alignment cos(v, b).

Run from the repository root::

    python -m experiments.align_then_memorise.degeneracy [--quick] [--seeds N]
"""

from __future__ import annotations

import time
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from experiments.align_then_memorise import common  # noqa: E402
from optdfa.alignment import measure_alignment, reference_feedback  # noqa: E402
from optdfa.config import TrainConfig  # noqa: E402
from optdfa.training import Trainer  # noqa: E402

MODULE = "experiments.align_then_memorise.degeneracy"
NAME = "atm-degeneracy"
CLAIM = (
    "Degeneracy breaking: of the many solutions with the same (near-zero) training loss, DFA "
    "converges to ones with high gradient and weight alignment; BP's solutions are not aligned."
)

FULL = {
    "input_dim": 100,
    "teacher_hidden": 2,
    "student_hidden": 100,
    "n_train": 200,
    "n_test": 5_000,
    "batch_size": 20,
    "lr": 0.2,
    "target_train_loss": 1e-4,
    "max_epochs": 3_000,
    "seeds": 5,
}
QUICK = {
    **FULL,
    "input_dim": 50,
    "student_hidden": 60,
    "n_train": 100,
    "max_epochs": 1_500,
    "seeds": 3,
}


def config(settings: dict[str, Any], method: str, seed: int) -> TrainConfig:
    return TrainConfig(
        dataset="teacher",
        teacher=common.teacher_spec(settings),
        data_seed=seed,
        model="mlp",
        hidden=[settings["student_hidden"]],
        activation="erf",
        method=method,
        optimizer="sgd",
        momentum=0.0,
        lr=settings["lr"],
        batch_size=settings["batch_size"],
        epochs=settings["max_epochs"],
        seed=seed,
    )


def train_to_target(
    cfg: TrainConfig, target: float
) -> tuple[Trainer, dict[str, Any], list[tuple[int, float]], float]:
    """Train until the whole-training-set loss is ≤ ``target`` (or the epoch budget runs out).

    Returns the trainer, the alignment at initialisation, the loss curve and the seconds taken.
    """
    trainer = Trainer(cfg, progress=False)
    initial = solution_alignment(trainer, cfg.seed)
    curve = [(0, trainer.evaluate("train")[0])]
    start = time.perf_counter()
    while trainer.epoch < cfg.epochs and curve[-1][1] > target:
        trainer.train_epoch()
        curve.append((trainer.step, trainer.evaluate("train")[0]))
    return trainer, initial, curve, time.perf_counter() - start


def solution_alignment(trainer: Trainer, seed: int) -> dict[str, Any]:
    """Alignment of the network as it is now, measured on the whole training set."""
    x, y = trainer.data.x_train, trainer.data.y_train
    model, rule = trainer.model, trainer.rule
    reference = None if trainer.config.method == "dfa" else reference_feedback(model, x[:2], seed)
    trainer.optimizer.zero_grad(set_to_none=True)
    rule.compute_gradients(x, y, trainer.loss_fn)
    m = measure_alignment(model, rule, x, y, trainer.loss_fn, reference=reference)
    trainer.optimizer.zero_grad(set_to_none=True)
    own = trainer.config.method == "dfa"
    v = m.values
    return {
        "gradient_alignment": v["signal" if own else "reference_signal"].layers[0],
        "update_alignment": v["update" if own else "reference_update"].layers[0],
        "weight_alignment": v["weight"].layers[1],
    }


def figure(rows: list[dict[str, Any]], curves: dict[str, list], settings: dict[str, Any]) -> Any:
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    colors = {"dfa": "tab:blue", "bp": "tab:orange"}
    for method, runs in curves.items():
        for i, curve in enumerate(runs):
            steps, losses = zip(*curve, strict=True)
            axes[0].plot(
                np.maximum(steps, 1), losses, color=colors[method], alpha=0.7,
                label=method.upper() if i == 0 else None,
            )  # fmt: skip
    axes[0].axhline(settings["target_train_loss"], color="k", ls="--", lw=1, label="target")
    axes[0].set_xscale("log")
    axes[0].set_yscale("log")
    axes[0].set_xlabel("SGD step")
    axes[0].set_ylabel("training loss (whole training set)")
    axes[0].legend(fontsize=8)
    for ax, key, label in (
        (axes[1], "gradient_alignment", "gradient alignment at the solution"),
        (axes[2], "weight_alignment", "weight alignment cos(v, b) at the solution"),
    ):
        for j, method in enumerate(("dfa", "bp")):
            vals = [r[key] for r in rows if r["method"] == method]
            ax.scatter(
                np.full(len(vals), j) + np.linspace(-0.08, 0.08, len(vals)),
                vals,
                color=colors[method],
                zorder=3,
            )
            ax.errorbar(
                j + 0.2,
                np.mean(vals),
                yerr=np.std(vals, ddof=1) if len(vals) > 1 else 0,
                fmt="ks",
                capsize=4,
            )
        ax.axhline(0, color="grey", lw=0.8)
        ax.set_xticks([0, 1], ["DFA", "BP (vs DFA's B)"])
        ax.set_xlim(-0.5, 1.5)
        ax.set_ylim(-1.05, 1.05)
        ax.set_ylabel(label)
        ax.grid(alpha=0.3, axis="y")
    fig.suptitle(
        f"Degeneracy breaking: student K={settings['student_hidden']} on n={settings['n_train']} "
        f"teacher samples (D={settings['input_dim']}), all trained to training loss ≤ "
        f"{settings['target_train_loss']:g}; mean ± std over seeds"
    )
    fig.tight_layout()
    return fig


def markdown_table(rows: list[dict[str, Any]]) -> str:
    head = (
        "| method | seed | steps | train loss | test loss | gradient alignment (init → end) | "
        "update alignment | weight alignment (init → end) |\n|---|---|---|---|---|---|---|---|\n"
    )
    body = "".join(
        f"| {r['method'].upper()} | {r['seed']} | {r['steps']} | {r['train_loss']:.2e} | "
        f"{r['test_loss']:.4f} | {r['initial_gradient_alignment']:.3f} → {r['gradient_alignment']:.3f} | "
        f"{r['update_alignment']:.3f} | {r['initial_weight_alignment']:.3f} → {r['weight_alignment']:.3f} |\n"
        for r in rows
    )
    return head + body


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run the experiment (``argv``: command-line arguments); returns the JSON payload."""
    p = common.parser(__doc__.splitlines()[0])
    args = p.parse_args(argv)
    out = common.prepare(args)
    settings = common.settings_for(args, QUICK, FULL)
    start = time.perf_counter()
    rows: list[dict[str, Any]] = []
    curves: dict[str, list] = {"dfa": [], "bp": []}
    for seed in range(settings["seeds"]):
        for method in ("dfa", "bp"):
            trainer, initial, curve, seconds = train_to_target(
                config(settings, method, seed), settings["target_train_loss"]
            )
            train_loss = curve[-1][1]
            row = {
                "method": method,
                "seed": seed,
                "steps": trainer.step,
                "train_loss": train_loss,
                "reached_target": train_loss <= settings["target_train_loss"],
                "test_loss": trainer.evaluate("test")[0],
                **solution_alignment(trainer, seed),
                "initial_gradient_alignment": initial["gradient_alignment"],
                "initial_weight_alignment": initial["weight_alignment"],
                "seconds": seconds,
            }
            rows.append(row)
            curves[method].append(curve)
            print(
                f"seed {seed} {method}: {row['steps']} steps, train loss {train_loss:.2e}, "
                f"gradient alignment {row['gradient_alignment']:.3f}, weight alignment "
                f"{row['weight_alignment']:.3f} ({seconds:.1f} s)",
                flush=True,
            )
    summary = {
        method: {
            key: common.stats([r[key] for r in rows if r["method"] == method])
            for key in (
                "steps",
                "train_loss",
                "test_loss",
                "gradient_alignment",
                "update_alignment",
                "weight_alignment",
                "initial_gradient_alignment",
                "initial_weight_alignment",
            )
        }
        for method in ("dfa", "bp")
    }
    all_reached = all(r["reached_target"] for r in rows)
    dfa_min = min(r["gradient_alignment"] for r in rows if r["method"] == "dfa")
    bp_max = max(r["gradient_alignment"] for r in rows if r["method"] == "bp")
    dfa_w_min = min(r["weight_alignment"] for r in rows if r["method"] == "dfa")
    bp_w_max = max(abs(r["weight_alignment"]) for r in rows if r["method"] == "bp")
    # reproduced: every run reached the same loss target, and every DFA solution is more aligned
    # (gradient and weights) than every BP solution
    reproduced = all_reached and dfa_min > bp_max and dfa_w_min > bp_w_max
    table = markdown_table(rows)
    payload = {
        "experiment": "degeneracy",
        "claim": CLAIM,
        "command": common.command_line(MODULE, argv),
        "quick": args.quick,
        "settings": settings,
        "rows": rows,
        "summary": summary,
        "all_reached_target": all_reached,
        "separation": {
            "min_dfa_gradient_alignment": dfa_min,
            "max_bp_gradient_alignment": bp_max,
            "min_dfa_weight_alignment": dfa_w_min,
            "max_abs_bp_weight_alignment": bp_w_max,
        },
        "reproduced": reproduced,
        "table_markdown": table,
        "seconds": time.perf_counter() - start,
    }
    json_path, png_path = common.write(out, NAME, payload, figure(rows, curves, settings))
    print(table)
    print(
        f"DFA gradient alignment {common.fmt(summary['dfa']['gradient_alignment'])}, BP "
        f"{common.fmt(summary['bp']['gradient_alignment'])} -> "
        f"{'reproduced' if reproduced else 'NOT reproduced'}\n{json_path}\n{png_path}"
    )

    return payload


if __name__ == "__main__":
    common.main_guard(main)
