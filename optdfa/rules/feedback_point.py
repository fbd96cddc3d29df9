"""Feedback points: where a DFA feedback signal enters a network.

Put a :class:`FeedbackPoint` after the activation of every hidden layer that DFA should train
(``Linear → Tanh → FeedbackPoint``; ``Conv2d → ReLU → FeedbackPoint → MaxPool2d``). Outside DFA
training it is the identity. During a DFA step it records its input (which still carries the
local autograd graph back to the previous feedback point) and hands the next layer a
*detached* copy, so no gradient ever flows from one segment into another: each segment's
weights are trained only by the feedback block delivered at its end point.
"""

from __future__ import annotations

import torch
from torch import nn


class FeedbackPoint(nn.Module):
    """Identity module that marks a DFA feedback point (see module docstring)."""

    def __init__(self) -> None:
        super().__init__()
        self._recorder: FeedbackRecorder | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rec = self._recorder
        if rec is None or not rec.active:
            return x
        return rec.record(self, x)


class FeedbackRecorder:
    """Collects the tensors at feedback points during one forward pass of a DFA step."""

    def __init__(self) -> None:
        self.active = False
        self.detach = True
        self.points: list[FeedbackPoint] = []
        self.tensors: list[torch.Tensor] = []

    def record(self, point: FeedbackPoint, x: torch.Tensor) -> torch.Tensor:
        self.points.append(point)
        self.tensors.append(x)
        return x.detach() if self.detach else x

    def start(self, detach: bool = True) -> None:
        self.points, self.tensors = [], []
        self.detach = detach
        self.active = True

    def stop(self) -> tuple[list[FeedbackPoint], list[torch.Tensor]]:
        self.active = False
        points, tensors = self.points, self.tensors
        self.points, self.tensors = [], []
        return points, tensors


def feedback_points(model: nn.Module) -> list[tuple[str, FeedbackPoint]]:
    """All feedback points of ``model`` with their qualified names, in registration order."""
    return [(name, m) for name, m in model.named_modules() if isinstance(m, FeedbackPoint)]
