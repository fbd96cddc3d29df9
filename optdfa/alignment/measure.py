"""One alignment measurement of a model on a batch: the rule's update against backprop's.

:func:`measure_alignment` is called after a learning rule has computed its gradients and before
the optimizer uses them (the place of :meth:`TrainingHook.on_step`). It reads the rule's update
from ``param.grad`` (and, for DFA, the feedback the rule just used, ``rule.last_feedback``), and
computes the true backprop gradient for the same weights and batch with
``torch.autograd.grad`` on a plain forward pass (feedback points are identities outside a DFA
step; FA layers are evaluated with the ordinary ops). It changes no ``.grad``, no weight and no
random state, so training is the same with or without it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from optdfa.alignment.metrics import (
    LayerValues,
    alignment_matrix,
    condition_number,
    dfa_weight_target,
    feedback_conditioning,
    signal_alignment,
    update_alignment,
    weight_alignment,
)
from optdfa.backends import FeedbackLayout
from optdfa.backends.digital import DigitalBackend
from optdfa.errors import OptdfaError
from optdfa.rules import (
    Backprop,
    DirectFeedbackAlignment,
    FAConv2d,
    FALinear,
    FeedbackAlignment,
    FeedbackPoint,
    LearningRule,
    LossFn,
)
from optdfa.seeding import derive_seed

#: the quantities of every measurement, in the order they are logged
QUANTITIES = ("signal", "update", "weight", "cond", "feedback_cond")
#: extra quantities of a ``bp`` run measured against a reference feedback matrix
REFERENCE_QUANTITIES = ("reference_signal", "reference_update")


@dataclass(frozen=True)
class LayerInfo:
    """A layer with weights, as seen in one forward pass (forward order).

    ``feedback_point``: the feedback point this layer feeds (the first one after it, before the
    next layer with weights); ``input_point``: the feedback point whose tensor is this layer's
    input; ``fed_by_input``: its input is the network input; ``is_output``: its output is the
    network output.
    """

    name: str
    kind: str
    weight_shape: tuple[int, ...] | None
    feedback_point: str | None
    input_point: str | None
    fed_by_input: bool
    is_output: bool

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": self.kind,
            "weight_shape": None if self.weight_shape is None else list(self.weight_shape),
            "feedback_point": self.feedback_point,
            "input_point": self.input_point,
            "fed_by_input": self.fed_by_input,
            "is_output": self.is_output,
        }


@dataclass
class Measurement:
    """The result of :func:`measure_alignment` (see ``docs/alignment.md`` for each quantity)."""

    loss: float
    layers: list[LayerInfo]
    values: dict[str, LayerValues] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"loss": self.loss, "layers": [info.name for info in self.layers]}
        for key, value in self.values.items():
            out[key] = value.to_dict()
        return out


@dataclass
class _Trace:
    layers: list[LayerInfo]
    modules: list[nn.Module]
    outputs: list[torch.Tensor]  # each layer's output (its pre-activation), in the graph
    points: dict[str, torch.Tensor]  # feedback point name -> the tensor it passes on
    point_order: list[str]
    output: torch.Tensor


def _same_tensor(a: torch.Tensor, b: torch.Tensor) -> bool:
    """True if ``a`` is ``b`` or a reshaped view of the same memory (e.g. through Flatten)."""
    return a.numel() == b.numel() and a.data_ptr() == b.data_ptr() and a.dtype == b.dtype


def _plain_output(module: nn.Module, inp: torch.Tensor) -> torch.Tensor:
    if isinstance(module, FALinear):
        return F.linear(inp, module.weight, module.bias)
    return F.conv2d(
        inp,
        module.weight,
        module.bias,
        module.stride,
        module.padding,
        module.dilation,
        module.groups,
    )


def _trace(model: nn.Module, x: torch.Tensor, *, plain: bool) -> _Trace:
    """Forward ``x`` recording every layer with weights and every feedback point.

    ``plain=True`` evaluates FA layers with the ordinary ops, so autograd gives backprop's
    gradients; ``plain=False`` keeps the model's own backward (FA's fixed feedback weights).
    """
    names = {id(m): n for n, m in model.named_modules()}
    events: list[tuple[str, nn.Module, torch.Tensor, torch.Tensor]] = []

    def on_layer(module: nn.Module, args: tuple, output: Any) -> Any:
        if (
            not args
            or not isinstance(args[0], torch.Tensor)
            or not isinstance(output, torch.Tensor)
        ):
            raise OptdfaError(
                f"alignment diagnostics need layers mapping one tensor to one tensor; "
                f"{names[id(module)]!r} ({type(module).__name__}) does not"
            )
        if plain and isinstance(module, (FALinear, FAConv2d)):
            output = _plain_output(module, args[0])
        events.append(("layer", module, args[0], output))
        return output

    def on_point(module: nn.Module, args: tuple, output: Any) -> None:
        events.append(("point", module, args[0], output))

    handles = []
    for module in model.modules():
        if isinstance(module, FeedbackPoint):
            handles.append(module.register_forward_hook(on_point))
        elif any(True for _ in module.parameters(recurse=False)):
            handles.append(module.register_forward_hook(on_layer))
    try:
        output = model(x)
    finally:
        for h in handles:
            h.remove()
    if not isinstance(output, torch.Tensor) or output.ndim != 2:
        raise OptdfaError("alignment diagnostics need a model output of shape (batch, n_out)")

    seen: set[int] = set()
    for _, module, _, _ in events:
        if id(module) in seen:
            raise OptdfaError(
                f"alignment diagnostics need each layer and feedback point to run once per forward "
                f"pass; {names[id(module)]!r} ran more than once"
            )
        seen.add(id(module))

    layers, modules, outputs = [], [], []
    points: dict[str, torch.Tensor] = {}
    point_order: list[str] = []
    last_point: tuple[str, torch.Tensor] | None = None
    for i, (kind, module, inp, out) in enumerate(events):
        name = names[id(module)]
        if kind == "point":
            points[name] = out
            point_order.append(name)
            last_point = (name, out)
            continue
        following = events[i + 1] if i + 1 < len(events) else None
        feeds = names[id(following[1])] if following and following[0] == "point" else None
        input_point = (
            last_point[0] if last_point is not None and _same_tensor(inp, last_point[1]) else None
        )
        weight = getattr(module, "weight", None)
        layers.append(
            LayerInfo(
                name=name,
                kind=type(module).__name__,
                weight_shape=tuple(weight.shape) if isinstance(weight, torch.Tensor) else None,
                feedback_point=feeds,
                input_point=input_point,
                fed_by_input=_same_tensor(inp, x),
                is_output=_same_tensor(out, output),
            )
        )
        modules.append(module)
        outputs.append(out)
    if not layers:
        raise OptdfaError("alignment diagnostics found no layer with weights in the model")
    return _Trace(layers, modules, outputs, points, point_order, output)


def _layer_params(trace: _Trace) -> list[list[nn.Parameter]]:
    return [[p for p in m.parameters(recurse=False) if p.requires_grad] for m in trace.modules]


def _grads(
    outputs: torch.Tensor | Sequence[torch.Tensor],
    inputs: Sequence[torch.Tensor],
    grad_outputs: torch.Tensor | Sequence[torch.Tensor] | None = None,
) -> list[torch.Tensor | None]:
    if not inputs:
        return []
    return list(
        torch.autograd.grad(
            outputs, list(inputs), grad_outputs, retain_graph=True, allow_unused=True
        )
    )


def _local_signals(trace: _Trace, blocks: dict[str, torch.Tensor]) -> list[torch.Tensor | None]:
    """The signal at each layer's output if its feedback point receives ``blocks[point]``.

    ``δ_l = ∂⟨h_l, block_l⟩/∂a_l`` through the local path only (for ``h_l = f(a_l)``:
    ``block_l ⊙ f'(a_l)``).
    """
    signals: list[torch.Tensor | None] = []
    for info, out in zip(trace.layers, trace.outputs, strict=True):
        point = info.feedback_point
        if point is None or point not in blocks:
            signals.append(None)
            continue
        (g,) = _grads(trace.points[point], [out], blocks[point])
        signals.append(g)
    return signals


def _rule_updates(trace: _Trace) -> list[list[torch.Tensor] | None]:
    """Each layer's update as the rule left it in ``.grad`` (missing grads count as zero)."""
    updates: list[list[torch.Tensor] | None] = []
    for params in _layer_params(trace):
        if not params or all(p.grad is None for p in params):
            updates.append(None)
        else:
            updates.append([p.grad if p.grad is not None else torch.zeros_like(p) for p in params])
    return updates


def _split_columns(layout: FeedbackLayout, matrix: torch.Tensor) -> dict[str, torch.Tensor]:
    """Blocks ``B_l`` of shape ``(n_out, size_l)`` of a feedback matrix, by feedback point."""
    return {b.name: matrix[:, b.offset : b.offset + b.size] for b in layout.blocks}


def _dfa_structure(
    trace: _Trace,
    layout: FeedbackLayout,
    matrix: torch.Tensor | None,
    values: dict[str, LayerValues],
) -> None:
    """Weight alignment, alignment-matrix and feedback conditioning against ``matrix`` (DFA's B)."""
    if matrix is None:
        return
    blocks = _split_columns(layout, matrix)
    shapes = {b.name: b.shape for b in layout.blocks}
    weights: list[torch.Tensor | None] = []
    targets: list[torch.Tensor | None] = []
    conds: list[float | None] = []
    fb_conds: list[float | None] = []
    for info, module in zip(trace.layers, trace.modules, strict=True):
        point = info.feedback_point
        fb_conds.append(
            feedback_conditioning(blocks[point], shapes[point]) if point in blocks else None
        )
        w = getattr(module, "weight", None)
        b_in = blocks.get(info.input_point) if info.input_point else None
        b_out = blocks.get(point) if point else None
        dense = isinstance(w, torch.Tensor) and w.ndim == 2
        if not dense or b_in is None or (b_out is None and not info.is_output):
            weights.append(None)
            targets.append(None)
            conds.append(None)
            continue
        target = dfa_weight_target(b_out, b_in)
        if tuple(target.shape) != tuple(w.shape):
            weights.append(None)
            targets.append(None)
            conds.append(None)
            continue
        weights.append(w)
        targets.append(target)
        conds.append(condition_number(alignment_matrix(w, b_out, b_in)))
    values["weight"] = weight_alignment(weights, targets)
    defined = [c for c in conds if c is not None]
    values["cond"] = LayerValues(max(defined) if defined else None, conds)
    fb_defined = [c for c in fb_conds if c is not None]
    values["feedback_cond"] = LayerValues(max(fb_defined) if fb_defined else None, fb_conds)


def reference_layout(model: nn.Module, example_input: torch.Tensor) -> FeedbackLayout | None:
    """The DFA layout of ``model`` (as :class:`DirectFeedbackAlignment` would build it), or None."""
    with torch.no_grad():
        trace = _trace(model, example_input, plain=True)
    if not trace.point_order:
        return None
    shapes = [(name, tuple(trace.points[name].shape[1:])) for name in trace.point_order]
    return FeedbackLayout.from_shapes(trace.output.shape[1], shapes)


def reference_feedback(
    model: nn.Module, example_input: torch.Tensor, seed: int
) -> tuple[FeedbackLayout, torch.Tensor] | None:
    """The feedback matrix ``(n_out, n_feedback)`` that ``dfa`` (digital backend) would draw for
    ``model`` with run seed ``seed``, with its layout; ``None`` if the model has no feedback point.

    It lets a ``bp`` (or any) run be measured against the B a DFA run of the same seed uses.
    """
    layout = reference_layout(model, example_input)
    if layout is None:
        return None
    param = next(model.parameters())
    backend = DigitalBackend()
    backend.setup(
        layout, seed=derive_seed(seed, "feedback"), device=param.device, dtype=param.dtype
    )
    return layout, backend.B


def _fill(params: list[nn.Parameter], grads: Sequence[torch.Tensor | None]) -> list[torch.Tensor]:
    return [g if g is not None else torch.zeros_like(p) for p, g in zip(params, grads, strict=True)]


@dataclass
class _Backprop:
    """Backprop's quantities on the plain trace: per-layer updates and signals, output error."""

    updates: list[list[torch.Tensor] | None]
    signals: list[torch.Tensor | None]
    error: torch.Tensor  # ∂L/∂ŷ, (batch, n_out)


def _backprop(trace: _Trace, loss: torch.Tensor) -> _Backprop:
    params = _layer_params(trace)
    flat = [p for ps in params for p in ps]
    fed = [i for i, info in enumerate(trace.layers) if info.feedback_point is not None]
    grads = _grads(loss, [*flat, *(trace.outputs[i] for i in fed), trace.output])
    updates: list[list[torch.Tensor] | None] = []
    k = 0
    for ps in params:
        updates.append(_fill(ps, grads[k : k + len(ps)]) or None)
        k += len(ps)
    signals: list[torch.Tensor | None] = [None] * len(trace.layers)
    for i, g in zip(fed, grads[len(flat) : -1], strict=True):
        signals[i] = g
    return _Backprop(updates, signals, grads[-1])


def _fa_signals(
    model: nn.Module, x: torch.Tensor, target: torch.Tensor, loss_fn: LossFn, n_layers: int
) -> list[torch.Tensor | None]:
    """FA's backward signal at each layer's output that feeds a feedback point."""
    trace = _trace(model, x, plain=False)
    fed = [i for i, info in enumerate(trace.layers) if info.feedback_point is not None]
    grads = _grads(loss_fn(trace.output, target), [trace.outputs[i] for i in fed])
    signals: list[torch.Tensor | None] = [None] * n_layers
    for i, g in zip(fed, grads, strict=True):
        signals[i] = g
    return signals


def _blocks(layout: FeedbackLayout, feedback: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per-point blocks ``(batch, *shape)`` of a projection ``(batch, n_feedback)``."""
    return dict(zip((b.name for b in layout.blocks), layout.split(feedback), strict=True))


def _dfa_updates(
    trace: _Trace, blocks: dict[str, torch.Tensor], error: torch.Tensor
) -> list[list[torch.Tensor] | None]:
    """The update DFA would make with feedback ``blocks``: each layer feeding a point is trained
    by its block through the local path, the output layer by the true error."""
    updates: list[list[torch.Tensor] | None] = []
    for info, ps in zip(trace.layers, _layer_params(trace), strict=True):
        if ps and info.feedback_point in blocks:
            point = info.feedback_point
            updates.append(_fill(ps, _grads(trace.points[point], ps, blocks[point])))
        elif ps and info.is_output:
            updates.append(_fill(ps, _grads(trace.output, ps, error)))
        else:
            updates.append(None)
    return updates


def _fa_weights(trace: _Trace) -> LayerValues:
    """cos(W_l, F_l) for every FA layer whose feedback weight carries a signal (not the first)."""
    weights, targets = [], []
    for info, module in zip(trace.layers, trace.modules, strict=True):
        fb = getattr(module, "feedback_weight", None)
        usable = isinstance(fb, torch.Tensor) and not info.fed_by_input
        weights.append(module.weight if usable else None)
        targets.append(fb if usable else None)
    return weight_alignment(weights, targets)


def measure_alignment(
    model: nn.Module,
    rule: LearningRule,
    x: torch.Tensor,
    target: torch.Tensor,
    loss_fn: LossFn,
    *,
    reference: tuple[FeedbackLayout, torch.Tensor] | None = None,
) -> Measurement:
    """Alignment of ``rule``'s current update with backprop on the batch ``(x, target)``.

    Call it after ``rule.compute_gradients(x, target, loss_fn)`` and before
    ``optimizer.step()``, with ``.grad`` holding only that step's gradients. ``reference``
    (a layout and its ``(n_out, n_feedback)`` matrix) gives a ``bp`` run a feedback matrix to be
    measured against: the weight alignment and conditioning use it, and ``reference_signal`` /
    ``reference_update`` report how well DFA with that matrix would agree with backprop here.
    """
    if rule.model is not model:
        raise OptdfaError("measure_alignment: the rule is not attached to this model")
    if not isinstance(rule, (Backprop, FeedbackAlignment, DirectFeedbackAlignment)):
        raise OptdfaError(
            f"alignment diagnostics support the bp, fa and dfa rules, not {type(rule).__name__}"
        )
    devices = [x.device] if x.device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices), torch.enable_grad():
        trace = _trace(model, x, plain=True)
        loss = loss_fn(trace.output, target)
        bp = _backprop(trace, loss)
        n = len(trace.layers)
        undefined = LayerValues(None, [None] * n)
        not_output = [i for i, info in enumerate(trace.layers) if not info.is_output]
        values: dict[str, LayerValues] = {}
        if isinstance(rule, DirectFeedbackAlignment):
            feedback = rule.last_feedback
            if feedback is None or feedback.shape[0] != x.shape[0]:
                raise OptdfaError(
                    "measure_alignment: call it after rule.compute_gradients on the same batch"
                )
            rule_signals = _local_signals(trace, _blocks(rule.layout, feedback.to(bp.error.dtype)))
        elif isinstance(rule, FeedbackAlignment):
            rule_signals = _fa_signals(model, x, target, loss_fn, n)
        else:
            rule_signals = list(bp.signals)
        values["signal"] = signal_alignment(rule_signals, bp.signals)
        values["update"] = update_alignment(_rule_updates(trace), bp.updates, not_output)
        values["weight"] = values["cond"] = values["feedback_cond"] = undefined
        if isinstance(rule, DirectFeedbackAlignment):
            _dfa_structure(trace, rule.layout, rule.backend.feedback_matrix(), values)
        elif isinstance(rule, FeedbackAlignment):
            values["weight"] = _fa_weights(trace)
        elif reference is not None:
            layout, matrix = reference
            _dfa_structure(trace, layout, matrix, values)
            blocks = _blocks(layout, bp.error.detach() @ matrix.to(bp.error.dtype))
            values["reference_signal"] = signal_alignment(_local_signals(trace, blocks), bp.signals)
            values["reference_update"] = update_alignment(
                _dfa_updates(trace, blocks, bp.error.detach()), bp.updates, not_output
            )
    return Measurement(float(loss.detach()), trace.layers, values)
