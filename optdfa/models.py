"""Model builders: MLPs and small CNNs with their DFA feedback points marked.

Initialisation (from an explicit generator, never the global RNG): weights
``N(0, gain²/fan_in)`` with gain 1 for tanh/erf/linear (LeCun) and √2 for relu (He); biases 0;
the output layer's weights optionally scaled by ``readout_scale``.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from optdfa.errors import OptdfaError, choice_error
from optdfa.rules.feedback_point import FeedbackPoint

ACTIVATIONS = ("tanh", "relu", "erf", "linear")
MODELS = ("mlp", "cnn")


class Erf(nn.Module):
    """``erf(x/√2)``, the activation of the teacher–student literature."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.erf(x * (1.0 / math.sqrt(2.0)))


def make_activation(name: str) -> nn.Module:
    if name == "tanh":
        return nn.Tanh()
    if name == "relu":
        return nn.ReLU()
    if name == "erf":
        return Erf()
    if name == "linear":
        return nn.Identity()
    raise choice_error("activation", name, ACTIVATIONS)


def build_mlp(
    input_shape: tuple[int, ...], hidden: list[int], n_out: int, activation: str
) -> nn.Sequential:
    """``Flatten → [Linear → act → FeedbackPoint] × len(hidden) → Linear(n_out)``."""
    layers: list[nn.Module] = [nn.Flatten()]
    width = math.prod(input_shape)
    for h in hidden:
        layers += [nn.Linear(width, h), make_activation(activation), FeedbackPoint()]
        width = h
    layers.append(nn.Linear(width, n_out))
    return nn.Sequential(*layers)


def build_cnn(
    input_shape: tuple[int, ...],
    channels: list[int],
    hidden: list[int],
    n_out: int,
    activation: str,
    kernel_size: int = 5,
) -> nn.Sequential:
    """``[Conv2d(k, same padding) → act → FeedbackPoint → MaxPool2d(2)] × len(channels)``, then an MLP head.

    Pooling is skipped once the feature map is smaller than 2×2.
    """
    if len(input_shape) != 3:
        raise OptdfaError(
            f"cnn needs image inputs (channels, height, width), got shape {input_shape}"
        )
    if kernel_size < 1 or kernel_size % 2 == 0:
        raise OptdfaError(f"kernel_size must be a positive odd integer, got {kernel_size}")
    c, h, w = input_shape
    layers: list[nn.Module] = []
    for ch in channels:
        layers += [
            nn.Conv2d(c, ch, kernel_size, padding=kernel_size // 2),
            make_activation(activation),
            FeedbackPoint(),
        ]
        if h >= 2 and w >= 2:
            layers.append(nn.MaxPool2d(2))
            h, w = h // 2, w // 2
        c = ch
    layers.append(nn.Flatten())
    width = c * h * w
    for units in hidden:
        layers += [nn.Linear(width, units), make_activation(activation), FeedbackPoint()]
        width = units
    layers.append(nn.Linear(width, n_out))
    return nn.Sequential(*layers)


def initialise(model: nn.Module, activation: str, generator: torch.Generator) -> None:
    """Re-initialise every Linear/Conv2d of ``model`` in place (see module docstring)."""
    gain = math.sqrt(2.0) if activation == "relu" else 1.0
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (nn.Linear, nn.Conv2d)):
                fan_in = math.prod(m.weight.shape[1:])
                m.weight.normal_(0.0, gain / math.sqrt(fan_in), generator=generator)
                if m.bias is not None:
                    m.bias.zero_()


def build_model(
    model: str,
    input_shape: tuple[int, ...],
    n_out: int,
    *,
    hidden: list[int],
    activation: str,
    channels: list[int] | None = None,
    kernel_size: int = 5,
    generator: torch.Generator,
    readout_scale: float = 1.0,
) -> nn.Sequential:
    """Build and initialise the model named ``model`` (``mlp`` or ``cnn``).

    ``readout_scale`` multiplies the initial weights of the output layer (1: the standard
    initialisation; a small value starts the network with a near-zero output, the usual
    teacher–student set-up).
    """
    if activation not in ACTIVATIONS:
        raise choice_error("activation", activation, ACTIVATIONS)
    if model == "mlp":
        net = build_mlp(input_shape, hidden, n_out, activation)
    elif model == "cnn":
        net = build_cnn(input_shape, list(channels or []), hidden, n_out, activation, kernel_size)
    else:
        raise choice_error("model", model, MODELS)
    initialise(net, activation, generator)
    if readout_scale != 1.0:
        with torch.no_grad():
            net[-1].weight.mul_(readout_scale)
    return net
