"""Feedback alignment (Lillicrap et al. 2016): backprop with a fixed random ``B`` in place of ``Wᵀ``.

:class:`FeedbackAlignment` swaps every ``nn.Linear`` and ``nn.Conv2d`` of the model for a
subclass that shares its parameters and holds a fixed random buffer ``feedback_weight`` of the
weight's shape. The forward pass is unchanged; in the backward pass the gradient sent to the
layer's input uses ``feedback_weight`` instead of ``weight``; the weight gradient is the usual
local one. ``feedback_weight`` entries are i.i.d. ``N(0, 1/(3·fan_in))`` — the variance of
PyTorch's default weight initialisation — drawn from the run's seed and saved with the model.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from optdfa.errors import OptdfaError
from optdfa.rules.bp import Backprop
from optdfa.seeding import derive_seed


class _LinearFA(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias, feedback):  # type: ignore[override]
        ctx.save_for_backward(x, feedback)
        ctx.has_bias = bias is not None
        return F.linear(x, weight, bias)

    @staticmethod
    def backward(ctx, grad_out):  # type: ignore[override]
        x, feedback = ctx.saved_tensors
        grad_x = grad_out @ feedback if ctx.needs_input_grad[0] else None
        g2 = grad_out.reshape(-1, grad_out.shape[-1])
        grad_w = g2.T @ x.reshape(-1, x.shape[-1]) if ctx.needs_input_grad[1] else None
        grad_b = g2.sum(0) if ctx.has_bias and ctx.needs_input_grad[2] else None
        return grad_x, grad_w, grad_b, None


class _Conv2dFA(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias, feedback, stride, padding, dilation, groups):  # type: ignore[override]
        ctx.save_for_backward(x, feedback)
        ctx.conf = (stride, padding, dilation, groups)
        ctx.weight_shape = weight.shape
        ctx.has_bias = bias is not None
        return F.conv2d(x, weight, bias, stride, padding, dilation, groups)

    @staticmethod
    def backward(ctx, grad_out):  # type: ignore[override]
        x, feedback = ctx.saved_tensors
        grad_x = grad_w = grad_b = None
        if ctx.needs_input_grad[0]:
            grad_x = torch.nn.grad.conv2d_input(x.shape, feedback, grad_out, *ctx.conf)
        if ctx.needs_input_grad[1]:
            grad_w = torch.nn.grad.conv2d_weight(x, ctx.weight_shape, grad_out, *ctx.conf)
        if ctx.has_bias and ctx.needs_input_grad[2]:
            grad_b = grad_out.sum((0, 2, 3))
        return grad_x, grad_w, grad_b, None, None, None, None, None


class FALinear(nn.Linear):
    """``nn.Linear`` whose input gradient uses the buffer ``feedback_weight``."""

    feedback_weight: torch.Tensor

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _LinearFA.apply(x, self.weight, self.bias, self.feedback_weight)


class FAConv2d(nn.Conv2d):
    """``nn.Conv2d`` whose input gradient uses the buffer ``feedback_weight``."""

    feedback_weight: torch.Tensor

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _Conv2dFA.apply(
            x,
            self.weight,
            self.bias,
            self.feedback_weight,
            self.stride,
            self.padding,
            self.dilation,
            self.groups,
        )


def _fa_version(module: nn.Module) -> nn.Module | None:
    """An FA twin of ``module`` sharing its parameters, or None if it is not Linear/Conv2d."""
    if type(module) is nn.Linear:
        twin = torch.nn.utils.skip_init(
            FALinear,
            module.in_features,
            module.out_features,
            bias=module.bias is not None,
            device=module.weight.device,
            dtype=module.weight.dtype,
        )
    elif type(module) is nn.Conv2d:
        if isinstance(module.padding, str) or module.padding_mode != "zeros":
            raise OptdfaError("fa supports Conv2d with numeric zero padding only")
        twin = torch.nn.utils.skip_init(
            FAConv2d,
            module.in_channels,
            module.out_channels,
            module.kernel_size,
            stride=module.stride,
            padding=module.padding,
            dilation=module.dilation,
            groups=module.groups,
            bias=module.bias is not None,
            device=module.weight.device,
            dtype=module.weight.dtype,
        )
    else:
        return None
    twin.weight = module.weight
    twin.bias = module.bias
    return twin


class FeedbackAlignment(Backprop):
    """Feedback alignment: backprop through FA twins of every Linear/Conv2d layer."""

    name = "fa"

    def __init__(self, seed: int = 0) -> None:
        super().__init__()
        self.seed = seed

    def attach(self, model: nn.Module, example_input: torch.Tensor) -> None:
        super().attach(model, example_input)
        index = 0
        for parent in list(model.modules()):
            for child_name, child in list(parent.named_children()):
                twin = _fa_version(child)
                if twin is None:
                    continue
                fan_in = math.prod(child.weight.shape[1:])
                gen = torch.Generator().manual_seed(derive_seed(self.seed, "fa-feedback", index))
                fb = torch.randn(child.weight.shape, generator=gen) / math.sqrt(3.0 * fan_in)
                twin.register_buffer(
                    "feedback_weight", fb.to(child.weight.device, child.weight.dtype)
                )
                setattr(parent, child_name, twin)
                index += 1
        if index == 0:
            raise OptdfaError("fa found no nn.Linear or nn.Conv2d layer in the model")

    def describe(self) -> dict[str, Any]:
        return {"method": self.name, "seed": self.seed}
