"""The learning-rule interface shared by ``bp``, ``fa`` and ``dfa``."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass
class StepResult:
    """What one gradient computation returns: the batch loss and the network output (detached)."""

    loss: torch.Tensor  # scalar
    output: torch.Tensor  # (batch, n_out)


def cross_entropy(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy of logits ``(batch, n_classes)`` against class indices ``(batch,)``."""
    return F.cross_entropy(output, target)


def half_squared_error(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``½ Σ_k (ŷ_k − y_k)²`` averaged over the batch (regression; the teacher task)."""
    return 0.5 * F.mse_loss(output, target, reduction="sum") / output.shape[0]


def loss_for_task(task: str) -> LossFn:
    """The loss used for ``"classification"`` or ``"regression"``."""
    return cross_entropy if task == "classification" else half_squared_error


def loss_and_error(
    loss_fn: LossFn, output: torch.Tensor, target: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """The loss and the output error ``e = ∂L/∂output`` ``(batch, n_out)``, both detached.

    Nothing flows into ``output``'s graph. For :func:`cross_entropy` on class indices the
    error comes from the same kernels autograd would run (bit-identical) without building a
    graph for the loss or starting the autograd engine; any other loss is differentiated by
    autograd on a detached copy of ``output``.
    """
    out = output.detach()
    if loss_fn is cross_entropy and out.ndim == 2 and not target.is_floating_point():
        with torch.no_grad():
            return _cross_entropy_and_error(out, target)
    out.requires_grad_(True)
    with torch.enable_grad():
        loss = loss_fn(out, target)
    (error,) = torch.autograd.grad(loss, out)
    return loss.detach(), error


def _cross_entropy_and_error(
    logits: torch.Tensor, target: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean cross-entropy of ``logits`` ``(batch, n_classes)`` and its gradient, via aten's
    forward and backward kernels of ``log_softmax`` and ``nll_loss`` (what autograd calls)."""
    aten = torch.ops.aten
    mean, no_ignored_class = 1, -100  # torch's reduction code for "mean"; F.nll_loss's default
    log_p = torch.log_softmax(logits, dim=1)
    loss, total_weight = aten.nll_loss_forward(log_p, target, None, mean, no_ignored_class)
    seed = torch.ones((), dtype=log_p.dtype, device=log_p.device)
    grad_log_p = aten.nll_loss_backward(
        seed, log_p, target, None, mean, no_ignored_class, total_weight
    )
    return loss, aten._log_softmax_backward_data(grad_log_p, log_p, 1, log_p.dtype)


class LearningRule(ABC):
    """Computes weight gradients for a model, leaving them in ``param.grad`` like ``backward()``.

    Use: ``rule.attach(model, example_input)`` once, then per batch
    ``optimizer.zero_grad(); rule.compute_gradients(x, y, loss_fn); optimizer.step()`` —
    any ``torch.optim`` optimizer works, since the rule only writes ``.grad``.
    """

    name: ClassVar[str] = ""

    def __init__(self) -> None:
        self.model: nn.Module | None = None

    def attach(self, model: nn.Module, example_input: torch.Tensor) -> None:
        """Bind the rule to ``model``; ``example_input`` (a batch) reveals the layer shapes."""
        self.model = model

    @abstractmethod
    def compute_gradients(
        self, x: torch.Tensor, target: torch.Tensor, loss_fn: LossFn
    ) -> StepResult:
        """Forward ``x``, compute the loss and accumulate this rule's gradients."""

    def describe(self) -> dict[str, Any]:
        return {"method": self.name}

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass

    def counters(self) -> dict[str, float]:
        """Cost counters of the feedback path (empty for rules without a backend)."""
        return {}

    def close(self) -> None:
        pass

    def _model(self) -> nn.Module:
        if self.model is None:
            raise RuntimeError(f"rule {self.name!r} used before attach()")
        return self.model
