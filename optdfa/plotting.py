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
