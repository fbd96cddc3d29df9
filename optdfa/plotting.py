"""Figures of a run (matplotlib, no display needed)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from optdfa.outputs import atomic_savefig  # noqa: E402


def plot_curves(metrics: list[dict[str, Any]], path: str | Path, title: str = "") -> None:
    """Loss (and accuracy, for classification) per epoch, train and test, to ``path`` (PNG)."""
    epochs = [m["epoch"] for m in metrics]
    has_acc = any(m.get("test_accuracy") is not None for m in metrics)
    fig, axes = plt.subplots(
        1, 2 if has_acc else 1, figsize=(10 if has_acc else 5.5, 4), squeeze=False
    )
    ax = axes[0][0]
    ax.plot(epochs, [m["train_loss"] for m in metrics], "o-", label="train")
    ax.plot(epochs, [m["test_loss"] for m in metrics], "s-", label="test")
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss")
    ax.set_yscale("log")
    ax.grid(alpha=0.3)
    ax.legend()
    if has_acc:
        ax = axes[0][1]
        ax.plot(epochs, [100 * m["train_accuracy"] for m in metrics], "o-", label="train")
        ax.plot(epochs, [100 * m["test_accuracy"] for m in metrics], "s-", label="test")
        ax.set_xlabel("epoch")
        ax.set_ylabel("accuracy (%)")
        ax.grid(alpha=0.3)
        ax.legend()
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    atomic_savefig(path, fig, dpi=120)
    plt.close(fig)


#: panels of the alignment figure: (quantity key, title, log scale)
ALIGNMENT_PANELS = (
    ("signal", "gradient alignment (per-sample signal cosine)", False),
    ("update", "update alignment (whole-layer gradient cosine)", False),
    ("weight", "weight alignment", False),
    ("cond", "alignment-matrix condition number", True),
    ("reference_signal", "signal alignment of DFA with the reference B", False),
    ("reference_update", "update alignment of DFA with the reference B", False),
)


def plot_alignment(lines: list[dict[str, Any]], path: str | Path, title: str = "") -> None:
    """Alignment per layer (and in total) against the optimizer step, plus the batch loss (PNG).

    ``lines`` are the measurement lines of ``alignment.jsonl``; panels whose quantity is
    undefined throughout (e.g. weight alignment of a CNN) are left out.
    """
    if not lines:
        return
    steps = [line["step"] for line in lines]
    names = lines[-1]["layers"]
    panels = [
        p
        for p in ALIGNMENT_PANELS
        if any(
            line.get(p[0]) is not None
            and (
                line[p[0]]["total"] is not None or any(v is not None for v in line[p[0]]["layers"])
            )
            for line in lines
        )
    ]
    n = len(panels) + 1
    cols = min(n, 3)
    rows = (n + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(5 * cols, 3.6 * rows), squeeze=False)
    flat = [ax for row in axes for ax in row]
    cmap = plt.get_cmap("viridis")
    for ax, (key, label, log) in zip(flat, panels, strict=False):
        for i, name in enumerate(names):
            ys = [line[key]["layers"][i] if key in line else None for line in lines]
            if all(y is None for y in ys):
                continue
            ax.plot(
                steps,
                [float("nan") if y is None else y for y in ys],
                color=cmap(i / max(1, len(names) - 1)),
                label=f"layer {i + 1} ({name})",
            )
        totals = [line[key]["total"] if key in line else None for line in lines]
        if any(t is not None for t in totals):
            ax.plot(
                steps,
                [float("nan") if t is None else t for t in totals],
                "k--",
                label="total (max)" if key == "cond" else "total",
            )
        ax.set_title(label, fontsize=10)
        ax.set_xlabel("optimizer step")
        if log:
            ax.set_yscale("log")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    ax = flat[len(panels)]
    ax.plot(steps, [line["loss"] for line in lines], "o-", ms=2)
    ax.set_title("batch loss at the measurement", fontsize=10)
    ax.set_xlabel("optimizer step")
    ax.set_yscale("log")
    ax.grid(alpha=0.3)
    for ax in flat[n:]:
        ax.axis("off")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    atomic_savefig(path, fig, dpi=110)
    plt.close(fig)
