"""Learning rules: ``bp`` (backprop), ``fa`` (feedback alignment), ``dfa`` (direct feedback alignment)."""

from __future__ import annotations

from typing import Any

from optdfa.errors import choice_error
from optdfa.rules.base import (
    LearningRule,
    LossFn,
    StepResult,
    cross_entropy,
    half_squared_error,
    loss_for_task,
)
from optdfa.rules.bp import Backprop
from optdfa.rules.dfa import DirectFeedbackAlignment
from optdfa.rules.fa import FAConv2d, FALinear, FeedbackAlignment
from optdfa.rules.feedback_point import FeedbackPoint, feedback_points

METHODS = ("bp", "fa", "dfa")


def make_rule(
    method: str,
    *,
    seed: int = 0,
    backend: str = "digital",
    backend_options: dict[str, Any] | None = None,
    clip_error: float | None = None,
    clip_activation: float | None = None,
) -> LearningRule:
    """The learning rule named ``method``; ``backend``, its options and clipping apply to ``dfa`` only."""
    if method == "bp":
        return Backprop()
    if method == "fa":
        return FeedbackAlignment(seed=seed)
    if method == "dfa":
        return DirectFeedbackAlignment(
            backend,
            seed=seed,
            clip_error=clip_error,
            clip_activation=clip_activation,
            **(backend_options or {}),
        )
    raise choice_error("method", method, METHODS)


__all__ = [
    "METHODS",
    "Backprop",
    "DirectFeedbackAlignment",
    "FAConv2d",
    "FALinear",
    "FeedbackAlignment",
    "FeedbackPoint",
    "LearningRule",
    "LossFn",
    "StepResult",
    "cross_entropy",
    "feedback_points",
    "half_squared_error",
    "loss_for_task",
    "make_rule",
]
