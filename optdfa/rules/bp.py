"""Backpropagation: plain autograd, the reference every other rule is compared with."""

from __future__ import annotations

import torch

from optdfa.rules.base import LearningRule, LossFn, StepResult


class Backprop(LearningRule):
    """``loss.backward()`` through the whole network."""

    name = "bp"

    def compute_gradients(
        self, x: torch.Tensor, target: torch.Tensor, loss_fn: LossFn
    ) -> StepResult:
        output = self._model()(x)
        loss = loss_fn(output, target)
        loss.backward()
        return StepResult(loss.detach(), output.detach())
