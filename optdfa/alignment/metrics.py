"""Alignment metrics as pure functions of tensors: no model, no training state.

Conventions (as in :mod:`optdfa.backends.base`): the feedback block of feedback point ``l`` is
``B_l`` of shape ``(n_out, size_l)``, so DFA delivers ``e·B_l`` for an output error ``e`` of
shape ``(batch, n_out)``; a dense weight ``W_l`` has torch's shape ``(width_l, width_{l-1})``.
Every cosine is computed in float64. ``docs/alignment.md`` states each definition.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

#: condition numbers are capped here; a value this large means "singular"
SINGULAR_KAPPA = 1e12


@dataclass
class LayerValues:
    """One quantity per layer (``None`` where it is undefined) plus a whole-network ``total``."""

    total: float | None
    layers: list[float | None] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"total": self.total, "layers": list(self.layers)}


def _flat64(t: torch.Tensor) -> torch.Tensor:
    return t.detach().reshape(-1).to(torch.float64)


def cosine(a: torch.Tensor, b: torch.Tensor) -> float | None:
    """``⟨vec a, vec b⟩ / (‖a‖ ‖b‖)`` over all entries; ``None`` if either tensor is zero."""
    if a.numel() != b.numel():
        raise ValueError(f"cosine of tensors with {a.numel()} and {b.numel()} entries")
    a64, b64 = _flat64(a), _flat64(b)
    na, nb = torch.linalg.vector_norm(a64), torch.linalg.vector_norm(b64)
    if na == 0 or nb == 0:
        return None
    return float(a64 @ b64 / (na * nb))


def per_sample_cosine(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Cosine of ``a[i]`` and ``b[i]`` for every sample ``i`` (batch first), shape ``(batch,)``.

    A sample where either vector is zero gets NaN (its direction is undefined).
    """
    if a.shape[0] != b.shape[0] or a[0].numel() != b[0].numel():
        raise ValueError(f"per-sample cosine of shapes {tuple(a.shape)} and {tuple(b.shape)}")
    a64 = a.detach().reshape(a.shape[0], -1).to(torch.float64)
    b64 = b.detach().reshape(b.shape[0], -1).to(torch.float64)
    dots = (a64 * b64).sum(1)
    norms = torch.linalg.vector_norm(a64, dim=1) * torch.linalg.vector_norm(b64, dim=1)
    return torch.where(norms > 0, dots / norms, torch.full_like(dots, math.nan))


def _nanmean(values: torch.Tensor) -> float | None:
    ok = ~torch.isnan(values)
    return float(values[ok].mean()) if bool(ok.any()) else None


def signal_alignment(
    rule_signals: Sequence[torch.Tensor | None], bp_signals: Sequence[torch.Tensor | None]
) -> LayerValues:
    """Per-sample cosine of a rule's backward signal with backprop's, averaged over the batch.

    ``rule_signals[l]`` and ``bp_signals[l]`` have shape ``(batch, *units_l)`` (e.g. the gradient
    with respect to layer ``l``'s pre-activation), or are ``None`` where layer ``l`` has no
    signal to compare. Layer value: ``mean_i cos(δ_l^rule[i], δ_l^bp[i])``; total: the same with
    each sample's signals of all compared layers concatenated. Samples with a zero vector are
    left out of the mean.
    """
    if len(rule_signals) != len(bp_signals):
        raise ValueError("rule and bp signals must list the same layers")
    layers: list[float | None] = []
    rule_cat, bp_cat = [], []
    for r, b in zip(rule_signals, bp_signals, strict=True):
        if r is None or b is None:
            layers.append(None)
            continue
        layers.append(_nanmean(per_sample_cosine(r, b)))
        rule_cat.append(r.detach().reshape(r.shape[0], -1))
        bp_cat.append(b.detach().reshape(b.shape[0], -1))
    total = (
        _nanmean(per_sample_cosine(torch.cat(rule_cat, 1), torch.cat(bp_cat, 1)))
        if rule_cat
        else None
    )
    return LayerValues(total, layers)


def update_alignment(
    rule_updates: Sequence[Sequence[torch.Tensor] | None],
    bp_updates: Sequence[Sequence[torch.Tensor] | None],
    total_over: Sequence[int] | None = None,
) -> LayerValues:
    """Cosine of a layer's whole update (all its parameter gradients, concatenated) with backprop's.

    ``rule_updates[l]`` lists the gradients of layer ``l``'s parameters (``None``: not compared).
    The total is the cosine of the concatenation over the layers in ``total_over`` (default: all
    compared layers).
    """
    if len(rule_updates) != len(bp_updates):
        raise ValueError("rule and bp updates must list the same layers")
    layers: list[float | None] = []
    flat: list[tuple[torch.Tensor, torch.Tensor] | None] = []
    for r, b in zip(rule_updates, bp_updates, strict=True):
        if r is None or b is None or len(r) == 0:
            layers.append(None)
            flat.append(None)
            continue
        rv = torch.cat([_flat64(t) for t in r])
        bv = torch.cat([_flat64(t) for t in b])
        layers.append(cosine(rv, bv))
        flat.append((rv, bv))
    chosen = range(len(flat)) if total_over is None else total_over
    pairs = [flat[i] for i in chosen if flat[i] is not None]
    total = (
        cosine(torch.cat([p[0] for p in pairs]), torch.cat([p[1] for p in pairs]))
        if pairs
        else None
    )
    return LayerValues(total, layers)


def dfa_weight_target(b_out: torch.Tensor | None, b_in: torch.Tensor | None) -> torch.Tensor | None:
    """What a dense DFA layer's weight aligns with, shape of ``W`` ``(width_out, width_in)``.

    Hidden layer between feedback points ``l−1`` and ``l``: ``B_lᵀ B_{l−1}``; output layer
    (``b_out=None``, its output is the network's): ``B_{L−1}`` itself; first layer (``b_in=None``,
    fed by the input): ``None``.
    """
    if b_in is None:
        return None
    if b_out is None:
        return b_in
    return b_out.T.to(torch.float64) @ b_in.to(torch.float64)


def weight_alignment(
    weights: Sequence[torch.Tensor | None], targets: Sequence[torch.Tensor | None]
) -> LayerValues:
    """``cos(vec W_l, vec T_l)`` per layer and for the concatenation over layers (total).

    ``T_l`` is :func:`dfa_weight_target` for DFA, the fixed backward weight for FA; ``None``
    entries are left out.
    """
    layers: list[float | None] = []
    ws, ts = [], []
    for w, t in zip(weights, targets, strict=True):
        if w is None or t is None:
            layers.append(None)
            continue
        if w.numel() != t.numel():
            raise ValueError(
                f"weight of shape {tuple(w.shape)} cannot be compared with {tuple(t.shape)}"
            )
        layers.append(cosine(w, t))
        ws.append(_flat64(w))
        ts.append(_flat64(t))
    total = cosine(torch.cat(ws), torch.cat(ts)) if ws else None
    return LayerValues(total, layers)


def alignment_matrix(
    w: torch.Tensor, b_out: torch.Tensor | None, b_in: torch.Tensor
) -> torch.Tensor:
    """The ``(n_out, n_out)`` matrix ``A`` with ``W ≈ B_outᵀ A B_in`` in the least-squares sense.

    ``A = (B_outᵀ)⁺ W B_in⁺`` (Moore–Penrose pseudo-inverses; exact when ``W`` lies in the span).
    For the output layer (``b_out=None``): ``W ≈ A B_in``, ``A = W B_in⁺``. Float64.
    """
    w64, b_in64 = w.detach().to(torch.float64), b_in.detach().to(torch.float64)
    a = w64 @ torch.linalg.pinv(b_in64)
    if b_out is not None:
        a = torch.linalg.pinv(b_out.detach().to(torch.float64).T) @ a
    return a


def condition_number(m: torch.Tensor) -> float:
    """``σ_max / σ_min`` of a matrix (float64 SVD), capped at :data:`SINGULAR_KAPPA`.

    Only ``min(rows, cols)`` singular values exist: a wide or tall matrix is judged on those.
    """
    s = torch.linalg.svdvals(m.detach().to(torch.float64))
    if s.numel() == 0 or float(s[0]) == 0.0:
        return SINGULAR_KAPPA
    smin = float(s[-1])
    return SINGULAR_KAPPA if smin <= float(s[0]) / SINGULAR_KAPPA else float(s[0]) / smin


def effective_feedback(block: torch.Tensor, shape: Sequence[int]) -> torch.Tensor:
    """The feedback a layer's weights can respond to, shape ``(n_out, units)``.

    Dense feedback point (``shape = (width,)``): the block itself. Convolutional feedback point
    (``shape = (C, H, W)``): a conv kernel is shared over positions, so what it sees of ``e·B_l``
    is the position sum per channel: ``B̄[:, c] = Σ_{h,w} B_l[:, c, h, w]``, shape ``(n_out, C)``.
    """
    if len(shape) <= 1:
        return block
    return block.reshape(block.shape[0], shape[0], -1).sum(-1)


def feedback_conditioning(block: torch.Tensor, shape: Sequence[int]) -> float:
    """Condition number of the map ``e ↦ e·B̄`` from the ``n_out`` error directions to the
    :func:`effective_feedback` ``B̄`` (``σ_max/σ_min`` of its ``n_out`` singular values).

    With fewer units (channels) than outputs some error directions produce no feedback at all:
    the map is singular and the result is :data:`SINGULAR_KAPPA`.
    """
    eff = effective_feedback(block, shape)
    if eff.shape[1] < eff.shape[0]:
        return SINGULAR_KAPPA
    return condition_number(eff)
