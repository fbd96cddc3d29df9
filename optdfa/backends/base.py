"""The feedback-backend interface: the one place where ``e ↦ e·B`` is computed.

A DFA network has feedback points (see :class:`optdfa.rules.FeedbackPoint`). The
:class:`FeedbackLayout` lists them as blocks of one global feedback map
``B`` of shape ``(n_out, n_feedback)``: block ``l`` owns columns
``[offset_l, offset_l + size_l)`` and no two blocks share a column, so a device can compute
every layer's feedback in **one** projection of the error.

Scale of the feedback (all backends): block ``l`` behaves like a matrix of i.i.d. entries of
zero mean and standard deviation ``1/sqrt(3·size_l)`` — the variance of Nøkland's (2016)
``uniform(−1/√size_l, 1/√size_l)`` initialisation, ``size_l`` being the number of units the
block feeds (per sample). :func:`reference_block_std` gives that number; optical backends
rescale their recovered projection to it.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from optdfa.errors import OptdfaError

COUNTER_KEYS = ("projections", "samples", "frames", "device_seconds", "energy_joules")


@dataclass(frozen=True)
class FeedbackBlock:
    """One feedback point: its module name, per-sample shape and first column in ``B``."""

    name: str
    shape: tuple[int, ...]
    offset: int

    @property
    def size(self) -> int:
        return math.prod(self.shape)


@dataclass(frozen=True)
class FeedbackLayout:
    """All feedback points of a model, in forward order, as column blocks of ``B``."""

    n_out: int
    blocks: tuple[FeedbackBlock, ...]

    @classmethod
    def from_shapes(
        cls, n_out: int, named_shapes: list[tuple[str, tuple[int, ...]]]
    ) -> FeedbackLayout:
        blocks, offset = [], 0
        for name, shape in named_shapes:
            block = FeedbackBlock(name, tuple(int(s) for s in shape), offset)
            blocks.append(block)
            offset += block.size
        return cls(int(n_out), tuple(blocks))

    @property
    def n_feedback(self) -> int:
        """Total number of feedback columns (sum of block sizes)."""
        return sum(b.size for b in self.blocks)

    @property
    def sizes(self) -> list[int]:
        return [b.size for b in self.blocks]

    def split(self, projection: torch.Tensor) -> list[torch.Tensor]:
        """Split ``(batch, n_feedback)`` into per-block views of shape ``(batch, *block.shape)``."""
        batch = projection.shape[0]
        parts = torch.split(projection, self.sizes, dim=1)
        return [
            p if len(b.shape) == 1 else p.reshape(batch, *b.shape)
            for p, b in zip(parts, self.blocks, strict=True)
        ]

    def to_dict(self) -> dict[str, Any]:
        return {
            "n_out": self.n_out,
            "blocks": [
                {"name": b.name, "shape": list(b.shape), "offset": b.offset} for b in self.blocks
            ],
        }


def reference_block_std(layout: FeedbackLayout) -> torch.Tensor:
    """Per-column standard deviation of the reference feedback matrix, shape ``(n_feedback,)``.

    Column ``j`` of block ``l`` gets ``1/sqrt(3·size_l)`` (see the module docstring).
    """
    return torch.cat([torch.full((b.size,), 1.0 / math.sqrt(3.0 * b.size)) for b in layout.blocks])


class FeedbackBackend(ABC):
    """Computes the feedback projection ``(batch, n_out) → (batch, n_feedback)``.

    Life cycle: construct with options (validated, unknown ones rejected), :meth:`setup` once
    the model's layout is known, then :meth:`project` every training step. Backends keep
    cost counters (:data:`COUNTER_KEYS`) and can save/restore their state (the feedback matrix
    or the seeds that define it, noise generator states) so a resumed run is identical.
    """

    #: registry name, e.g. ``"digital"``
    name: ClassVar[str] = ""
    #: True when :meth:`set_error_bound` makes the backend's noise data-independent (photonic DP)
    private_encoding: ClassVar[bool] = False
    #: True when :meth:`project` only approximates ``e·feedback_matrix()`` (encoded, measured):
    #: the training guard then checks the delivered feedback against it (:mod:`optdfa.guard`)
    approximate_feedback: ClassVar[bool] = False

    def __init__(self) -> None:
        self.layout: FeedbackLayout | None = None
        self._counters = dict.fromkeys(COUNTER_KEYS, 0.0)
        #: a bound on every error row's norm (set by a learning rule that clips its errors)
        self.error_bound: float | None = None

    # -- required -------------------------------------------------------------------------
    @abstractmethod
    def setup(
        self, layout: FeedbackLayout, *, seed: int, device: torch.device, dtype: torch.dtype
    ) -> None:
        """Prepare the projection for ``layout``; ``seed`` defines the feedback matrix."""

    @abstractmethod
    def project(self, error: torch.Tensor) -> torch.Tensor:
        """Project errors ``(batch, n_out)`` to feedback ``(batch, n_feedback)`` (model's dtype)."""

    # -- optional -------------------------------------------------------------------------
    def feedback_matrix(self) -> torch.Tensor | None:
        """The effective linear map ``(n_out, n_feedback)`` if the backend can report it."""
        return None

    def describe(self) -> dict[str, Any]:
        """A JSON-able description (name, options, device facts) saved with every run."""
        return {"name": self.name}

    def counters(self) -> dict[str, float]:
        """Cumulative cost counters: projections, samples, frames, device_seconds, energy_joules."""
        return dict(self._counters)

    def state_dict(self) -> dict[str, Any]:
        """What a checkpoint needs to restore this backend exactly (tensors, ints, lists)."""
        return {"counters": dict(self._counters)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._counters.update(state.get("counters", {}))

    def set_error_bound(self, bound: float | None) -> None:
        """Promise that every error row will satisfy ``‖e_b‖ ≤ bound`` (``None``: no promise).

        A noisy backend may then encode with a fixed, data-independent scale, which makes its
        noise a Gaussian mechanism for photonic differential privacy (``docs/privacy.md``).
        """
        if bound is not None and not (math.isfinite(bound) and bound > 0):
            raise OptdfaError(f"an error bound must be a positive number, got {bound}")
        self.error_bound = None if bound is None else float(bound)

    def close(self) -> None:
        """Release devices or memory held by the backend."""

    # -- helpers for implementations -------------------------------------------------------
    def _require_setup(self) -> FeedbackLayout:
        if self.layout is None:
            raise RuntimeError(f"backend {self.name!r} used before setup()")
        return self.layout

    def _check_error(self, error: torch.Tensor) -> None:
        layout = self._require_setup()
        if error.ndim != 2 or error.shape[1] != layout.n_out:
            raise OptdfaError(
                f"backend {self.name!r} expects errors of shape (batch, {layout.n_out}), got {tuple(error.shape)}"
            )
        if not torch.isfinite(error).all():
            raise OptdfaError(f"backend {self.name!r} received a non-finite error (NaN or inf)")

    def _count(self, **increments: float) -> None:
        for key, value in increments.items():
            self._counters[key] += float(value)


def reject_unknown_options(backend: str, options: dict[str, Any], known: tuple[str, ...]) -> None:
    """Raise a clear error if ``options`` holds a key not in ``known``."""
    unknown = sorted(set(options) - set(known))
    if unknown:
        valid = ", ".join(known) if known else "none"
        raise OptdfaError(
            f"backend {backend!r} has no option(s) {', '.join(unknown)}; valid options: {valid}"
        )
