"""Explicit, derived seeds: no randomness in optdfa comes from a global RNG.

A run has one integer ``seed``. Every random stream (weight init, feedback matrix, data order,
device noise, …) gets its own seed derived from ``(seed, purpose, *more)`` with numpy's
``SeedSequence``, so streams are independent and a stream does not shift when another one is
added or consumed differently.
"""

from __future__ import annotations

import zlib

import numpy as np
import torch


def derive_seed(seed: int, purpose: str, *more: int) -> int:
    """A 63-bit seed for the stream ``purpose`` (and optional integers such as an epoch)."""
    if seed < 0:
        raise ValueError(f"seed must be non-negative, got {seed}")
    key = [int(seed), zlib.crc32(purpose.encode()), *(int(m) for m in more)]
    return int(np.random.SeedSequence(key).generate_state(2, dtype=np.uint64)[0] >> np.uint64(1))


def torch_generator(
    seed: int, purpose: str, *more: int, device: str | torch.device = "cpu"
) -> torch.Generator:
    """A ``torch.Generator`` on ``device`` seeded with :func:`derive_seed`."""
    gen = torch.Generator(device=device)
    gen.manual_seed(derive_seed(seed, purpose, *more))
    return gen


def numpy_generator(seed: int, purpose: str, *more: int) -> np.random.Generator:
    """A numpy ``Generator`` seeded with :func:`derive_seed`."""
    return np.random.default_rng(derive_seed(seed, purpose, *more))
