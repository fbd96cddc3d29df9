"""Reusable scratch buffers for the hot path (no fresh large allocation per frame batch).

Large fresh tensors cost page faults on every call; a :class:`Workspace` keeps one growing
buffer per name and hands out views of it. A view is valid until the same name is asked for
again, so buffers never escape to callers.
"""

from __future__ import annotations

import math

import torch


class Workspace:
    """Named, growing scratch buffers on one device."""

    def __init__(self, device: torch.device | str = "cpu") -> None:
        self.device = torch.device(device)
        self._buffers: dict[tuple[str, torch.dtype], torch.Tensor] = {}

    def get(
        self, name: str, shape: tuple[int, ...], dtype: torch.dtype = torch.float32
    ) -> torch.Tensor:
        """An uninitialised tensor of ``shape`` backed by the buffer ``name``."""
        n = math.prod(shape)
        key = (name, dtype)
        buf = self._buffers.get(key)
        if buf is None or buf.numel() < n:
            size = max(n, int(1.25 * buf.numel()) if buf is not None else n)
            buf = torch.empty(size, dtype=dtype, device=self.device)
            self._buffers[key] = buf
        return buf[:n].view(shape)

    def clear(self) -> None:
        self._buffers.clear()
