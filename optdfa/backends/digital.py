"""The digital backend: an explicit float feedback matrix and one exact matmul per step."""

from __future__ import annotations

from typing import Any

import torch

from optdfa.backends.base import (
    FeedbackBackend,
    FeedbackLayout,
    reference_block_std,
    reject_unknown_options,
)


class DigitalBackend(FeedbackBackend):
    """``e·B`` with ``B`` (n_out, n_feedback) Gaussian, block-wise scaled (see ``base``).

    ``B`` lives on the model's device and dtype, is drawn from ``seed`` and is part of the
    backend state (saved in checkpoints).
    """

    name = "digital"

    def __init__(self, **options: Any) -> None:
        reject_unknown_options(self.name, options, ())
        super().__init__()
        self.B: torch.Tensor | None = None

    def setup(
        self, layout: FeedbackLayout, *, seed: int, device: torch.device, dtype: torch.dtype
    ) -> None:
        self.layout = layout
        gen = torch.Generator().manual_seed(seed)
        B = torch.randn(layout.n_out, layout.n_feedback, generator=gen, dtype=torch.float64)
        B *= reference_block_std(layout).to(torch.float64)
        self.B = B.to(device=device, dtype=dtype)

    def project(self, error: torch.Tensor) -> torch.Tensor:
        self._check_error(error)
        self._count(projections=1, samples=error.shape[0])
        return error @ self.B

    def feedback_matrix(self) -> torch.Tensor | None:
        return self.B

    def describe(self) -> dict[str, Any]:
        layout = self._require_setup()
        return {"name": self.name, "n_out": layout.n_out, "n_feedback": layout.n_feedback}

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "B": self.B}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        B = state["B"]
        if self.B is not None and B.shape != self.B.shape:
            raise ValueError(
                f"saved feedback matrix has shape {tuple(B.shape)}, expected {tuple(self.B.shape)}"
            )
        self.B = B.to(
            device=self.B.device if self.B is not None else B.device,
            dtype=self.B.dtype if self.B is not None else B.dtype,
        )
