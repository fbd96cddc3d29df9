"""DFA's local updates of a plain MLP, computed directly instead of through autograd.

For a model that is an ``nn.Sequential`` of an optional ``Flatten``, then
``(Linear → Tanh|ReLU → FeedbackPoint) × L`` and a last ``Linear`` — what ``optdfa train
--model mlp`` builds — the DFA step needs no autograd graph: the forward pass keeps each
layer's input and activation, and with the feedback blocks ``e·B_l`` ``(batch, width_l)``

    δ_l = (e·B_l) ⊙ f'(a_l),   ∂W_l = δ_lᵀ h_{l−1},   ∂b_l = Σ_batch δ_l,

the output layer taking the true error ``e``. :class:`DenseChain` runs exactly the kernels
autograd runs for these modules (``addmm``, ``tanh``/``relu``, ``tanh_backward`` /
``threshold_backward``, ``mm``, ``sum``) in the same layouts, and accumulates into ``.grad``
as autograd does, so the gradients are bit-identical to the generic path
(``tests/test_rules_reference.py``); it only skips building and walking the graph — the fixed
cost that DFA, with its cheaper products, feels more than backprop. Models of any other shape,
and models with hooks (which autograd would call), take the generic path.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from optdfa.optics.workspace import Workspace
from optdfa.rules.feedback_point import FeedbackPoint

_ACTIVATIONS = (nn.Tanh, nn.ReLU)


class DenseChain:
    """The layers of a matched MLP (see the module docstring); build with :meth:`match`."""

    def __init__(
        self,
        modules: list[nn.Module],
        flatten: bool,
        linears: list[nn.Linear],
        activations: list[nn.Module],
    ) -> None:
        self.modules = modules
        self.flatten = flatten
        self.linears = linears
        self.activations = activations
        self._workspaces: dict[torch.device, Workspace] = {}

    def _workspace(self, like: torch.Tensor) -> Workspace:
        ws = self._workspaces.get(like.device)
        if ws is None:
            ws = self._workspaces[like.device] = Workspace(like.device)
        return ws

    @classmethod
    def match(cls, model: nn.Module) -> DenseChain | None:
        """The chain of ``model``, or ``None`` if ``model`` is not such an MLP."""
        if type(model) is not nn.Sequential:
            return None
        modules = list(model)
        flatten = bool(modules) and type(modules[0]) is nn.Flatten
        if flatten and (modules[0].start_dim, modules[0].end_dim) != (1, -1):
            return None
        body = modules[1:] if flatten else modules
        if len(body) < 4 or (len(body) - 1) % 3:
            return None
        linears, activations = [], []
        for i in range(0, len(body) - 1, 3):
            lin, act, point = body[i : i + 3]
            if (
                type(lin) is not nn.Linear
                or type(act) not in _ACTIVATIONS
                or getattr(act, "inplace", False)
                or type(point) is not FeedbackPoint
            ):
                return None
            linears.append(lin)
            activations.append(act)
        if type(body[-1]) is not nn.Linear:
            return None
        linears.append(body[-1])
        return cls(modules, flatten, linears, activations)

    def applies(self) -> bool:
        """False while a hook (global, on a module or on a parameter) is registered: hooks run
        on the generic path, which calls the modules and autograd."""
        if (
            nn.modules.module._global_forward_hooks
            or nn.modules.module._global_forward_pre_hooks
            or nn.modules.module._global_backward_hooks
            or nn.modules.module._global_backward_pre_hooks
        ):
            return False
        for m in self.modules:
            if (
                m._forward_hooks
                or m._forward_pre_hooks
                or m._backward_hooks
                or m._backward_pre_hooks
            ):
                return False
        for lin in self.linears:
            for p in (lin.weight, lin.bias):
                if p is not None and (p._backward_hooks or p._post_accumulate_grad_hooks):
                    return False
        return True

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Output ``(batch, n_out)`` and the layer inputs ``[h_0 = x, h_1, …, h_L]`` (no graph).

        The hidden activations live in scratch buffers reused from step to step (valid until
        the next call): a step allocates only its output, its feedback and its gradients.
        """
        with torch.no_grad():
            h = x.flatten(1) if self.flatten else x
            inputs = [h]
            for i, (lin, act) in enumerate(zip(self.linears[:-1], self.activations, strict=True)):
                a = self._workspace(h).get(f"h{i}", (h.shape[0], lin.out_features), h.dtype)
                if lin.bias is None:
                    torch.mm(h, lin.weight.t(), out=a)
                else:
                    torch.addmm(lin.bias, h, lin.weight.t(), out=a)
                h = a.tanh_() if type(act) is nn.Tanh else a.relu_()
                inputs.append(h)
            last = self.linears[-1]
            return F.linear(h, last.weight, last.bias), inputs

    def accumulate_gradients(
        self, inputs: list[torch.Tensor], blocks: list[torch.Tensor], error: torch.Tensor
    ) -> None:
        """Add each layer's local gradient to ``.grad`` (blocks ``(batch, width_l)``)."""
        aten = torch.ops.aten
        deltas = []
        for i, (act, block, out) in enumerate(
            zip(self.activations, blocks, inputs[1:], strict=True)
        ):
            delta = self._workspace(out).get(f"delta{i}", tuple(out.shape), out.dtype)
            if type(act) is nn.Tanh:
                aten.tanh_backward.grad_input(block, out, grad_input=delta)
            else:
                aten.threshold_backward.grad_input(block, out, 0, grad_input=delta)
            deltas.append(delta)
        deltas.append(error)
        with torch.no_grad():  # from the output layer down, the order autograd's engine takes
            for lin, delta, h in reversed(list(zip(self.linears, deltas, inputs, strict=True))):
                if lin.weight.requires_grad:
                    _accumulate(lin.weight, torch.mm(delta.t(), h))
                if lin.bias is not None and lin.bias.requires_grad:
                    _accumulate(lin.bias, delta.sum(0))


def _accumulate(param: nn.Parameter, grad: torch.Tensor) -> None:
    if param.grad is None:
        param.grad = grad
    else:
        param.grad += grad
