"""Direct feedback alignment (Nøkland 2016) without a backward pass through the network.

One step:

1. forward the batch; every :class:`FeedbackPoint` records its input ``h_l`` (which carries the
   local graph back to the previous point) and passes a detached copy on;
2. ``e = ∂L/∂ŷ``, shape ``(batch, n_out)`` — the true error at the output (for cross-entropy
   from autograd's own kernels without starting the engine: :func:`~optdfa.rules.base.loss_and_error`);
3. one projection ``e·B`` through the feedback backend, shape ``(batch, n_feedback)``, split into
   the per-point blocks ``e·B_l`` (see :class:`FeedbackLayout`);
4. a single ``torch.autograd.backward`` over ``[ŷ, h_1, …]`` with gradients ``[e, e·B_1, …]``.
   Each segment's graph starts at a detached tensor, so autograd computes only the local
   quantities: ``δ_l = (e·B_l) ⊙ f'(a_l)`` and ``∂W_l = δ_lᵀ h_{l−1}``; no gradient with respect
   to any layer input is computed. The output layer gets the true error ``e``.

A plain MLP (:class:`~optdfa.rules.dense_chain.DenseChain`) skips the graph altogether: its
forward keeps each layer's input, and steps 2–4 run the same kernels directly (bit-identical
gradients, without the graph's fixed cost).

Per-sample clipping (for photonic differential privacy, ``docs/privacy.md``):
``clip_error = C`` rescales each sample's error ``n·e_b`` (``n`` the batch size, so ``n·e_b`` is
the per-sample loss gradient ``∂ℓ_b/∂ŷ_b``) to norm at most ``C`` before the projection, and
tells the backend the bound (:meth:`~optdfa.backends.FeedbackBackend.set_error_bound`: a noisy
backend then encodes with a fixed scale). ``clip_activation = C_h`` scales sample ``b``'s
contribution to every segment by ``min(1, C_h/‖(h_b, 1)‖)``, ``h_b`` the segment's input (the
previous feedback point's output, or the network input; the 1 stands for the bias): each
sample's update of a dense layer is then ``δ_b (h_b, 1)ᵀ`` with ``‖(h_b, 1)‖ ≤ C_h``.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from optdfa.backends import FeedbackBackend, FeedbackLayout, create_backend
from optdfa.errors import OptdfaError
from optdfa.rules.base import LearningRule, LossFn, StepResult, loss_and_error
from optdfa.rules.dense_chain import DenseChain
from optdfa.rules.feedback_point import FeedbackRecorder, feedback_points
from optdfa.seeding import derive_seed


class DirectFeedbackAlignment(LearningRule):
    """DFA with the feedback projection computed by ``backend`` (an instance or a name)."""

    name = "dfa"

    def __init__(
        self,
        backend: FeedbackBackend | str = "digital",
        seed: int = 0,
        *,
        clip_error: float | None = None,
        clip_activation: float | None = None,
        **backend_options: Any,
    ) -> None:
        super().__init__()
        for what, bound in (("error", clip_error), ("activation", clip_activation)):
            if bound is not None and not (math.isfinite(bound) and bound > 0):
                raise OptdfaError(
                    f"the {what} clipping bound must be a positive number, got {bound}"
                )
        self.clip_error = clip_error
        self.clip_activation = clip_activation
        if isinstance(backend, str):
            backend = create_backend(backend, **backend_options)
        elif backend_options:
            raise TypeError(
                "backend options go to the backend constructor when passing an instance"
            )
        self.backend = backend
        self.seed = seed
        self.layout: FeedbackLayout | None = None
        self._recorder = FeedbackRecorder()
        self._points: list = []
        self._chain: DenseChain | None = None
        #: the last step's output error ``(batch, n_out)`` and feedback ``(batch, n_feedback)``
        self.last_error: torch.Tensor | None = None
        self.last_feedback: torch.Tensor | None = None

    def attach(self, model: nn.Module, example_input: torch.Tensor) -> None:
        super().attach(model, example_input)
        named = feedback_points(model)
        if not named:
            raise OptdfaError(
                "dfa needs at least one FeedbackPoint in the model (put optdfa.FeedbackPoint() "
                "after the activation of each hidden layer)"
            )
        names = {id(p): n for n, p in named}
        for _, point in named:
            point._recorder = self._recorder
        self._recorder.start(detach=False)
        try:
            with torch.no_grad():
                output = model(example_input)
        finally:
            points, tensors = self._recorder.stop()
        if output.ndim != 2:
            raise OptdfaError(
                f"dfa needs a model output of shape (batch, n_out), got {tuple(output.shape)}"
            )
        self._points = points
        self._chain = DenseChain.match(model)
        shapes = [(names[id(p)], tuple(t.shape[1:])) for p, t in zip(points, tensors, strict=True)]
        self.layout = FeedbackLayout.from_shapes(output.shape[1], shapes)
        param = next(model.parameters())
        self.backend.setup(
            self.layout,
            seed=derive_seed(self.seed, "feedback"),
            device=param.device,
            dtype=param.dtype,
        )

    def compute_gradients(
        self, x: torch.Tensor, target: torch.Tensor, loss_fn: LossFn
    ) -> StepResult:
        model = self._model()
        chain = self._chain
        if chain is not None and self.clip_activation is None and chain.applies():
            return self._chain_gradients(chain, x, target, loss_fn)
        self._recorder.start(detach=True)
        try:
            output = model(x)
        finally:
            points, taps = self._recorder.stop()
        if points != self._points:  # modules compare by identity
            raise OptdfaError(
                "the model visited its feedback points in a different order than at attach()"
            )
        loss, error = loss_and_error(loss_fn, output, target)
        if not torch.isfinite(loss):  # diverged: nothing sensible to project; the caller stops
            return StepResult(loss, output.detach())
        error, blocks = self._project(error)
        output_grad = error
        if self.clip_activation is not None:
            inputs = [x, *(t.detach() for t in taps)]
            factors = [_clip_factors(h, self.clip_activation) for h in inputs]
            blocks = [
                b * f.view(-1, *([1] * (b.ndim - 1))) for b, f in zip(blocks, factors, strict=False)
            ]
            output_grad = error * factors[-1][:, None]
        tensors, grads = [output], [output_grad]
        for tap, block in zip(taps, blocks, strict=True):
            if tap.requires_grad:
                tensors.append(tap)
                grads.append(block)
        torch.autograd.backward(tensors, grads)
        return StepResult(loss, output.detach())

    def _project(self, error: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """The error actually projected (``error`` clipped first if asked) and the per-point
        blocks of its feedback ``(batch, n_feedback)``."""
        if self.clip_error is not None:
            n = error.shape[0]
            error = _clip_rows(error * n, self.clip_error) / n
            self.backend.set_error_bound(self.clip_error / n)
        feedback = self.backend.project(error)
        self.last_error, self.last_feedback = error, feedback
        return error, self.layout.split(feedback)

    def _chain_gradients(
        self, chain: DenseChain, x: torch.Tensor, target: torch.Tensor, loss_fn: LossFn
    ) -> StepResult:
        """The same step for a plain MLP, without autograd (:mod:`~optdfa.rules.dense_chain`)."""
        output, inputs = chain.forward(x)
        loss, error = loss_and_error(loss_fn, output, target)
        if not torch.isfinite(loss):
            return StepResult(loss, output)
        error, blocks = self._project(error)
        chain.accumulate_gradients(inputs, blocks, error)
        return StepResult(loss, output)

    def describe(self) -> dict[str, Any]:
        return {
            "method": self.name,
            "seed": self.seed,
            "layout": self.layout.to_dict() if self.layout else None,
            "backend": self.backend.describe() if self.layout else {"name": self.backend.name},
        }

    def state_dict(self) -> dict[str, Any]:
        return {"backend": self.backend.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.backend.load_state_dict(state["backend"])

    def counters(self) -> dict[str, float]:
        return self.backend.counters()

    def detach_model(self) -> None:
        """Turn the feedback points back into plain identities."""
        if self.model is not None:
            for _, point in feedback_points(self.model):
                point._recorder = None

    def close(self) -> None:
        self.backend.close()


def _clip_rows(rows: torch.Tensor, bound: float) -> torch.Tensor:
    """Each row rescaled to norm at most ``bound`` (``(n, k)``)."""
    norms = torch.linalg.vector_norm(rows, dim=1, keepdim=True)
    return rows * (bound / norms.clamp_min(bound)).clamp(max=1.0)


def _clip_factors(h: torch.Tensor, bound: float) -> torch.Tensor:
    """``min(1, bound/‖(h_b, 1)‖)`` per sample of ``h`` ``(batch, …)``."""
    flat = h.reshape(h.shape[0], -1)
    norms = (flat.square().sum(dim=1) + 1.0).sqrt()
    return (bound / norms).clamp(max=1.0)
