"""Alignment diagnostics inside the training loop: a :class:`~optdfa.training.TrainingHook`.

Every ``every`` optimizer steps (counting from step 0, the initial weights) the hook measures
the alignment of the step's update with backprop (:func:`measure_alignment`) on the step's
batch, before the optimizer uses the update. Each measurement is one line of
``alignment.jsonl``; each epoch's metrics line gets the mean of that epoch's measurements under
``"alignment"``. The hook changes nothing in training, and its log is part of the checkpoint so
that a resumed run continues it exactly.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import torch

from optdfa.alignment.measure import (
    QUANTITIES,
    REFERENCE_QUANTITIES,
    measure_alignment,
    reference_feedback,
)
from optdfa.errors import OptdfaError
from optdfa.rules import Backprop

if TYPE_CHECKING:
    from optdfa.training import Trainer


def _mean(values: list[float | None]) -> float | None:
    kept = [v for v in values if v is not None and math.isfinite(v)]
    return sum(kept) / len(kept) if kept else None


def average_lines(lines: list[dict[str, Any]]) -> dict[str, Any]:
    """The mean of several measurement lines, quantity by quantity and layer by layer."""
    out: dict[str, Any] = {"measurements": len(lines)}
    if not lines:
        return out
    out["loss"] = _mean([line["loss"] for line in lines])
    out["layers"] = list(lines[-1]["layers"])
    for key in (*QUANTITIES, *REFERENCE_QUANTITIES):
        if key not in lines[-1]:
            continue
        rows = [line[key] for line in lines if key in line]
        n_layers = len(rows[-1]["layers"])
        out[key] = {
            "total": _mean([r["total"] for r in rows]),
            "layers": [_mean([r["layers"][i] for r in rows]) for i in range(n_layers)],
        }
    return out


class AlignmentHook:
    """Measure alignment every ``every`` steps (see the module docstring).

    For a ``bp`` run the weight alignment and conditioning are taken against the feedback
    matrix that a ``dfa`` run with the same seed would draw (digital backend), and the lines
    also hold ``reference_signal`` / ``reference_update``: how DFA's update with that matrix
    would agree with backprop's at the current weights.
    """

    def __init__(self, every: int) -> None:
        if isinstance(every, bool) or not isinstance(every, int) or every < 1:
            raise OptdfaError(f"align every must be a positive integer, got {every!r}")
        self.every = every
        self.lines: list[dict[str, Any]] = []
        self.layers: list[dict[str, Any]] = []
        self._epoch_lines: list[dict[str, Any]] = []
        self._reference: tuple[Any, torch.Tensor] | None = None
        self._reference_ready = False

    def _setup_reference(self, trainer: Trainer, x: torch.Tensor) -> None:
        self._reference_ready = True
        if isinstance(trainer.rule, Backprop):
            self._reference = reference_feedback(trainer.model, x[:2], trainer.config.seed)

    def on_step(self, trainer: Trainer, step: int, x: torch.Tensor, y: torch.Tensor) -> None:
        if step % self.every:
            return
        if not self._reference_ready:
            self._setup_reference(trainer, x)
        m = measure_alignment(
            trainer.model, trainer.rule, x, y, trainer.loss_fn, reference=self._reference
        )
        if not self.layers:
            self.layers = [info.to_dict() for info in m.layers]
        line = {"step": step, "epoch": trainer.epoch + 1, **m.to_dict()}
        self.lines.append(line)
        self._epoch_lines.append(line)

    def on_epoch_end(self, trainer: Trainer, metrics: dict[str, Any]) -> None:
        metrics["alignment"] = average_lines(self._epoch_lines)
        self._epoch_lines = []

    def summary(self) -> dict[str, Any]:
        """What ``summary.json`` records: the schedule, the layers and the last measurement."""
        return {
            "every": self.every,
            "measurements": len(self.lines),
            "layers": self.layers,
            "last": self.lines[-1] if self.lines else None,
        }

    def state_dict(self) -> dict[str, Any]:
        return {
            "every": self.every,
            "lines": list(self.lines),
            "layers": list(self.layers),
            "epoch_lines": list(self._epoch_lines),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if int(state["every"]) != self.every:
            raise OptdfaError(
                f"the checkpoint measured alignment every {state['every']} steps, not {self.every}"
            )
        self.lines = list(state["lines"])
        self.layers = list(state["layers"])
        self._epoch_lines = list(state["epoch_lines"])
