"""Seeded noise streams for the simulated device.

:class:`NoiseSource` holds a fixed number of ``torch.Generator`` streams. A large tensor of
normals is cut into as many contiguous slices as there are streams, slice ``i`` drawn from
stream ``i`` — in parallel threads on CPU (drawing normals is the camera's main cost and one
generator is sequential). The slicing depends only on the tensor size and the stream count,
so results are identical whatever the thread count; the state of every stream is saved for a
bit-exact resume.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any

import torch

from optdfa.seeding import derive_seed

#: tensors smaller than this are drawn from the first stream only
_PARALLEL_MIN = 1 << 16
_POOL: ThreadPoolExecutor | None = None


def _pool() -> ThreadPoolExecutor:
    global _POOL
    if _POOL is None:
        _POOL = ThreadPoolExecutor(max_workers=4, thread_name_prefix="optdfa-noise")
    return _POOL


class NoiseSource:
    """``streams`` seeded generators on ``device`` (see the module docstring)."""

    def __init__(self, seed: int, device: torch.device | str = "cpu", streams: int = 2) -> None:
        if streams < 1:
            raise ValueError(f"streams must be ≥ 1, got {streams}")
        self.device = torch.device(device)
        self.generators = []
        for i in range(streams):
            gen = torch.Generator(device=self.device)
            gen.manual_seed(derive_seed(int(seed), "noise-stream", i))
            self.generators.append(gen)

    @property
    def generator(self) -> torch.Generator:
        """The first stream (used for small draws and Poisson counts)."""
        return self.generators[0]

    def normal_(self, out: torch.Tensor) -> torch.Tensor:
        """Fill ``out`` (contiguous) with standard normals; returns it."""
        k = len(self.generators)
        n = out.numel()
        if k == 1 or n < _PARALLEL_MIN:
            return out.normal_(generator=self.generators[0])
        flat = out.view(-1)
        bounds = [n * i // k for i in range(k + 1)]
        parts = [flat[bounds[i] : bounds[i + 1]] for i in range(k)]
        if self.device.type == "cpu" and torch.get_num_threads() > 1:
            futures = [
                _pool().submit(parts[i].normal_, generator=self.generators[i]) for i in range(1, k)
            ]
            parts[0].normal_(generator=self.generators[0])
            for f in futures:
                f.result()
        else:
            for part, gen in zip(parts, self.generators, strict=True):
                part.normal_(generator=gen)
        return out

    def normal_like(self, like: torch.Tensor) -> torch.Tensor:
        return self.normal_(torch.empty_like(like, memory_format=torch.contiguous_format))

    def poisson(self, mean: torch.Tensor) -> torch.Tensor:
        return torch.poisson(mean, generator=self.generators[0])

    def get_state(self) -> list[torch.Tensor]:
        return [g.get_state() for g in self.generators]

    def set_state(self, states: list[torch.Tensor]) -> None:
        if len(states) != len(self.generators):
            raise ValueError(
                f"expected {len(self.generators)} noise stream states, got {len(states)}"
            )
        for g, s in zip(self.generators, states, strict=True):
            g.set_state(s)

    def state_dict(self) -> dict[str, Any]:
        return {"streams": self.get_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.set_state(state["streams"])


def as_noise(noise: NoiseSource | torch.Generator | None) -> NoiseSource | _GeneratorNoise:
    """Accept a :class:`NoiseSource`, a bare ``torch.Generator`` or ``None`` (default RNG)."""
    if isinstance(noise, NoiseSource):
        return noise
    return _GeneratorNoise(noise)


class _GeneratorNoise:
    """A single ``torch.Generator`` (or torch's default one) with the NoiseSource methods."""

    def __init__(self, generator: torch.Generator | None) -> None:
        self.generator = generator

    def normal_(self, out: torch.Tensor) -> torch.Tensor:
        return out.normal_(generator=self.generator)

    def normal_like(self, like: torch.Tensor) -> torch.Tensor:
        return torch.empty_like(like).normal_(generator=self.generator)

    def poisson(self, mean: torch.Tensor) -> torch.Tensor:
        return torch.poisson(mean, generator=self.generator)
