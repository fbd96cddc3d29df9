"""Seeded noise streams for the simulated device.

A :class:`NoiseSource` draws the camera's and the laser's Gaussian noise with one of two
generators (``method``):

``"quantile"`` (the default)
    Each normal is one of the 2¹⁶ quantiles ``Φ⁻¹((k + ½)/2¹⁶)`` of N(0, 1), ``k`` a uniform
    16-bit integer cut from a seeded SFC64 bit stream (numpy; four draws per 64-bit word) and
    looked up in a table by one parallel gather. Every quantile has probability exactly 2⁻¹⁶, so
    the distribution function of a draw differs from Φ by at most 2⁻¹⁷ anywhere (Kolmogorov
    distance); the draws are symmetric (mean exactly 0), their variance is 1 − 2·10⁻⁵, and they
    stay within ±4.32 (the 2⁻¹⁷ tail beyond is drawn as 4.32). After the camera's ADC these
    differences are far below the normal approximation of Poisson shot noise (see
    :mod:`optdfa.optics.camera`). About twice as fast as ``"torch"`` on a CPU, where drawing
    the camera noise is the simulator's largest cost.
``"torch"``
    ``torch.Tensor.normal_`` (Box–Muller on the Mersenne twister on CPU) from ``streams``
    generators: a large tensor is cut into as many contiguous slices, slice ``i`` drawn from
    stream ``i`` in parallel threads on CPU; the slicing depends only on the tensor size and the
    stream count, so results do not depend on the thread count. optdfa used this generator
    before 2026-11-27: it reproduces the runs of that time bit for bit.

Poisson counts (exact shot noise at low means) come from a torch generator in both cases. The
state of every stream is saved for a bit-exact resume.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import torch
from scipy.special import ndtri

from optdfa.errors import OptdfaError
from optdfa.seeding import derive_seed

#: the Gaussian generators of :class:`NoiseSource`
NOISE_METHODS = ("quantile", "torch")
#: uniform bits per normal of the quantile generator: its table has ``2**QUANTILE_BITS`` entries
QUANTILE_BITS = 16

#: ``"torch"`` method: tensors smaller than this are drawn from the first stream only
_PARALLEL_MIN = 1 << 16
_POOL: ThreadPoolExecutor | None = None
_TABLES: dict[torch.device, torch.Tensor] = {}


def _pool() -> ThreadPoolExecutor:
    global _POOL
    if _POOL is None:
        _POOL = ThreadPoolExecutor(max_workers=4, thread_name_prefix="optdfa-noise")
    return _POOL


def quantile_table(device: torch.device | str = "cpu") -> torch.Tensor:
    """The ``2**16`` quantiles ``Φ⁻¹((k + ½)/2¹⁶)`` of N(0, 1), float32 ``(65536,)``, ascending."""
    device = torch.device(device)
    table = _TABLES.get(device)
    if table is None:
        n = 1 << QUANTILE_BITS
        values = ndtri((np.arange(n, dtype=np.float64) + 0.5) / n).astype(np.float32)
        table = _TABLES[device] = torch.from_numpy(values).to(device)
    return table


def check_noise_options(method: str, streams: int | None) -> None:
    """Raise a clear :class:`OptdfaError` for a bad ``noise_generator``/``noise_streams`` pair."""
    if method not in NOISE_METHODS:
        raise OptdfaError(f"unknown noise_generator {method!r}; valid: {', '.join(NOISE_METHODS)}")
    if streams is not None and not (
        isinstance(streams, int) and not isinstance(streams, bool) and streams >= 1
    ):
        raise OptdfaError(f"noise_streams must be a positive integer, got {streams!r}")
    if method == "quantile" and streams not in (None, 1):
        raise OptdfaError(
            "noise_streams applies to noise_generator=torch only (the quantile generator "
            "draws from one bit stream and looks its normals up in parallel)"
        )


class NoiseSource:
    """Seeded Gaussian (and Poisson) noise on ``device`` (see the module docstring).

    Args:
        seed: defines every stream.
        device: where the noise tensors live.
        streams: parallel torch generators of ``method="torch"`` (default 2); the
            ``"quantile"`` method accepts only ``None`` or 1.
        method: ``"quantile"`` or ``"torch"``.
    """

    def __init__(
        self,
        seed: int,
        device: torch.device | str = "cpu",
        streams: int | None = None,
        method: str = "quantile",
    ) -> None:
        check_noise_options(method, streams)
        self.method = method
        self.device = torch.device(device)
        n_torch = (streams or 2) if method == "torch" else 1
        self.generators = []
        for i in range(n_torch):
            gen = torch.Generator(device=self.device)
            gen.manual_seed(derive_seed(int(seed), "noise-stream", i))
            self.generators.append(gen)
        self._bits = (
            np.random.Generator(np.random.SFC64(derive_seed(int(seed), "noise-quantile-bits")))
            if method == "quantile"
            else None
        )
        self._index: torch.Tensor | None = None  # int32 scratch for the table lookup

    @property
    def generator(self) -> torch.Generator:
        """The first torch stream (Poisson counts; the small draws of ``"torch"``)."""
        return self.generators[0]

    @property
    def streams(self) -> int:
        return len(self.generators)

    def normal_(self, out: torch.Tensor) -> torch.Tensor:
        """Fill ``out`` (contiguous) with standard normals; returns it."""
        if self._bits is not None:
            return self._quantile_normal_(out)
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

    def _quantile_normal_(self, out: torch.Tensor) -> torch.Tensor:
        n = out.numel()
        if n == 0:
            return out
        per_word = 64 // QUANTILE_BITS
        words = self._bits.bit_generator.random_raw((n + per_word - 1) // per_word)
        codes = torch.from_numpy(words.view(np.uint16)[:n])  # little-endian 16-bit cuts
        if self._index is None or self._index.numel() < n:
            self._index = torch.empty(n, dtype=torch.int32, device=self.device)
        index = self._index[:n]
        index.copy_(codes)
        torch.index_select(quantile_table(self.device), 0, index, out=out.view(-1))
        return out

    def normal_like(self, like: torch.Tensor) -> torch.Tensor:
        return self.normal_(torch.empty_like(like, memory_format=torch.contiguous_format))

    def poisson(self, mean: torch.Tensor) -> torch.Tensor:
        return torch.poisson(mean, generator=self.generators[0])

    # -- state -----------------------------------------------------------------------------------
    def get_state(self) -> dict[str, Any]:
        """Every stream's state (tensors only: safe for ``torch.load(weights_only=True)``)."""
        state: dict[str, Any] = {"torch": [g.get_state() for g in self.generators]}
        if self._bits is not None:
            s = self._bits.bit_generator.state
            words = np.asarray(s["state"]["state"], dtype=np.uint64).view(np.int64)
            extra = np.array([s["has_uint32"], s["uinteger"]], dtype=np.int64)
            state["sfc64"] = torch.from_numpy(np.concatenate([words, extra]))
        return state

    def set_state(self, state: dict[str, Any] | list[torch.Tensor]) -> None:
        """Restore :meth:`get_state`'s result (a plain list: torch streams of older versions)."""
        torch_states = state if isinstance(state, list) else state["torch"]
        bits = None if isinstance(state, list) else state.get("sfc64")
        if (bits is None) != (self._bits is None):
            raise ValueError(
                f"the saved noise state is not one of the {self.method!r} noise generator"
            )
        if len(torch_states) != len(self.generators):
            raise ValueError(
                f"expected {len(self.generators)} noise stream states, got {len(torch_states)}"
            )
        for g, s in zip(self.generators, torch_states, strict=True):
            g.set_state(s)
        if bits is not None:
            values = bits.numpy()
            self._bits.bit_generator.state = {
                "bit_generator": "SFC64",
                "state": {"state": values[:4].view(np.uint64).copy()},
                "has_uint32": int(values[4]),
                "uinteger": int(values[5]),
            }

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
