"""The input stage: a digital micromirror device (DMD) of ``rows × cols`` binary mirrors.

A device input is a *macro-pixel*: a group of mirrors switched together (lightonml's formatter
spreads a few features over the whole DMD the same way). Input ``k`` holds ``mirrors[k]``
mirrors; the groups must fit on the DMD. Frames are ``{0, 1}`` arrays — ``bool``, or ``uint8``
holding only 0 and 1 — of shape ``(n_frames, n_inputs)`` (or one frame ``(n_inputs,)``);
anything else is rejected with a clear error.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from optdfa.errors import OptdfaError


@dataclass(frozen=True)
class DMD:
    """Mirror array geometry (units: mirrors)."""

    rows: int
    cols: int

    @property
    def mirrors(self) -> int:
        return self.rows * self.cols

    def describe(self) -> str:
        return f"{self.rows}×{self.cols} = {self.mirrors} mirrors"

    def check_layout(self, mirrors: Sequence[int]) -> None:
        """Reject a macro-pixel layout that does not fit on the DMD."""
        if len(mirrors) == 0:
            raise OptdfaError("a DMD layout needs at least one input")
        if any(int(m) < 1 for m in mirrors):
            raise OptdfaError("every DMD input needs at least one mirror")
        used = int(sum(int(m) for m in mirrors))
        if used > self.mirrors:
            raise OptdfaError(f"the inputs need {used} mirrors but the DMD has {self.describe()}")

    def validate_frames(self, frames: Any, n_inputs: int) -> torch.Tensor:
        """Check binary frames for a device of ``n_inputs`` inputs; returns ``(n, n_inputs)`` bool."""
        if isinstance(frames, np.ndarray):
            frames = torch.from_numpy(frames)
        if not isinstance(frames, torch.Tensor):
            raise OptdfaError(
                f"DMD frames must be a torch tensor or numpy array, got {type(frames).__name__}"
            )
        if frames.dtype not in (torch.bool, torch.uint8):
            raise OptdfaError(
                f"DMD frames must be binary (bool, or uint8 holding 0/1), got dtype {frames.dtype}"
            )
        if frames.ndim == 1:
            frames = frames[None, :]
        if frames.ndim != 2:
            raise OptdfaError(
                f"DMD frames must have shape (n_frames, n_inputs), got {tuple(frames.shape)}"
            )
        width = frames.shape[1]
        if width > self.mirrors:
            raise OptdfaError(
                f"a frame of {width} pixels is larger than the DMD ({self.describe()})"
            )
        if width != n_inputs:
            raise OptdfaError(
                f"frames have {width} pixels but the device was built for {n_inputs} inputs"
            )
        if frames.dtype == torch.uint8:
            if frames.numel() and int(frames.max()) > 1:
                raise OptdfaError(
                    f"DMD frames must be binary: uint8 frames may hold only 0 and 1, found {int(frames.max())}"
                )
            frames = frames.bool()
        return frames


#: frames of at most this many inputs pack into one int64 key (:func:`frame_keys`)
MAX_PACKED_INPUTS = 62
_WEIGHTS: dict[tuple[int, str], torch.Tensor] = {}


def bit_weights(k: int, device: torch.device) -> torch.Tensor:
    """``2**i`` for input ``i < k``, int64 ``(k,)`` on ``device`` (cached)."""
    key = (k, str(device))
    if key not in _WEIGHTS:
        _WEIGHTS[key] = 2 ** torch.arange(k, device=device, dtype=torch.int64)
    return _WEIGHTS[key]


def frame_keys(frames: torch.Tensor) -> torch.Tensor:
    """Each bool frame of ``(n, k)`` (``k ≤ 62``) as the integer ``Σ_i x_i 2^i``, int64 ``(n,)``."""
    k = frames.shape[1]
    if k > MAX_PACKED_INPUTS:
        raise ValueError(f"frames of {k} inputs do not pack into an int64 key")
    return (frames.to(torch.int64) * bit_weights(k, frames.device)).sum(dim=1)
