"""Encoders: a signed real error batch → binary DMD frames (and back).

Every encoder writes each sample ``e_b`` (a row of the error, length ``n``) as a signed sum of
``planes`` binary frames::

    e_b ≈ scale_b · Σ_p coefficients_p · frames[b, p]          (frames ∈ {0, 1}^n)

so any linear map ``M`` of the error is recovered from the maps of the frames:
``M e_b ≈ scale_b Σ_p coefficients_p M frames[b, p]`` (see :meth:`Encoding.combine`).

Unbiased encoders (``E[decoded] = e``; their error is fresh noise at every step, which SGD and
Adam alike average out):

- ``stochastic`` (the shipped profiles' default) — dithered ternarisation: ``t_k = sign(e_k)``
  with probability ``|e_k|/max|e_b|``, else 0; ``scale_b = max|e_b|`` so that
  ``E[scale_b·t_b] = e_b``. Two planes (positive, negative part), coefficients ``+1, −1``.
- ``bitplane:K`` — ``|e_k|/max|e_b|`` in ``L = 2^K − 1`` levels per sign, rounded up with
  probability the fractional part (dithered: unbiased, error below one level); 2K planes
  (K positive, K negative) with coefficients ``±2^i``; ``scale_b = max|e_b|/L``.
  (``bitplane:1`` is ``stochastic``.)

Deterministic encoders (their error repeats from step to step):

- ``ternary[:τ]`` — LightOn's photonic-DFA ternarisation: entries with ``|e_k| > τ·max|e_b|``
  become ``sign(e_k)``, the rest 0; coefficients ``+1, −1``; ``scale_b = ⟨e_b, t_b⟩/‖t_b‖²``
  (least-squares amplitude). Default ``τ = 0.1``. Its one amplitude for both signs gives the
  encoded error a sum that the error does not have (for softmax errors, a bias along the
  all-ones direction on every step): under Adam, whose per-coordinate normalisation turns a
  small persistent gradient into full-size steps, DFA then collapses (``docs/physics-model.md``,
  "Ternarisation and Adam"). Kept for LightOn fidelity and for the published results.
- ``bitplane-nearest:K`` — ``bitplane:K`` rounded to the nearest level (error ≤ half a level),
  the rounding of optdfa before 2026-12-02: it drops the small entries below half a level, a
  persistent bias of the same kind.

Samples whose error is all zero give all-zero frames and ``scale_b = 0``.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass

import torch

from optdfa.errors import OptdfaError

ENCODERS = ("stochastic", "bitplane", "ternary", "bitplane-nearest")
DEFAULT_THRESHOLD = 0.1
MAX_BITS = 16


@dataclass
class Encoding:
    """Binary frames of an error batch and how to recombine them."""

    #: ``(batch, planes, n)`` bool
    frames: torch.Tensor
    #: ``(planes,)`` float (CPU): signed weight of each plane
    coefficients: torch.Tensor
    #: ``(batch,)`` float: amplitude of each sample (error units per frame unit)
    scale: torch.Tensor

    @property
    def planes(self) -> int:
        return self.frames.shape[1]

    def combine(self, projections: torch.Tensor) -> torch.Tensor:
        """Recombine per-frame linear projections ``(batch, planes, m)`` into ``(batch, m)``."""
        planes = [projections[:, p] for p in range(self.planes)]
        return self._combine(planes[0].clone(), planes[1:])

    def combine_indexed(self, table: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        """As :meth:`combine`, frame ``(b, p)``'s projection being ``table[index[b·planes + p]]``."""
        index = index.view(-1, self.planes)
        rows = [table.index_select(0, index[:, p]) for p in range(self.planes)]
        return self._combine(rows[0], rows[1:])

    def _combine(self, first: torch.Tensor, rest: list[torch.Tensor]) -> torch.Tensor:
        """``scale ⊙ Σ_p w_p plane_p``, accumulated into ``first`` (a tensor the caller owns)."""
        coeffs = self.coefficients.tolist()
        if coeffs[0] != 1:
            first.mul_(coeffs[0])
        for plane, c in zip(rest, coeffs[1:], strict=True):
            first.add_(plane, alpha=c)
        return first.mul_(self.scale.to(first.dtype)[:, None])

    def decode(self) -> torch.Tensor:
        """The error these frames represent, ``(batch, n)`` (the identity projection)."""
        return self.combine(self.frames.to(self.scale.dtype))


class Encoder(ABC):
    """Turns ``(batch, n)`` signed errors into an :class:`Encoding`."""

    #: how the encoder is written in a profile or on the command line
    spec: str
    #: binary frames per sample
    planes: int
    #: whether :meth:`encode` consumes random numbers
    stochastic: bool = False

    @abstractmethod
    def _encode(
        self,
        error: torch.Tensor,
        magnitude: torch.Tensor,
        peak: torch.Tensor,
        generator: torch.Generator | None,
    ) -> Encoding: ...

    def encode(
        self,
        error: torch.Tensor,
        generator: torch.Generator | None = None,
        *,
        check_finite: bool = True,
        peak: float | None = None,
    ) -> Encoding:
        """Encode ``error`` (batch, n); ``generator`` drives stochastic encoders.

        ``check_finite=False`` skips the NaN/inf check (for callers that made it already).
        ``peak`` replaces each sample's ``max|e_b|`` by one fixed bound (every ``|e_bk| ≤ peak``):
        the stochastic and bit-plane scales then no longer depend on the data (photonic DP).
        """
        if error.ndim != 2:
            raise OptdfaError(
                f"encoder {self.spec!r} expects an error of shape (batch, n), got {tuple(error.shape)}"
            )
        if check_finite and not torch.isfinite(error).all():
            raise OptdfaError(f"encoder {self.spec!r} received a non-finite error (NaN or inf)")
        if self.stochastic and generator is None:
            raise ValueError(f"encoder {self.spec!r} needs a torch.Generator")
        if not error.is_floating_point():
            error = error.float()
        if peak is None:
            magnitude = error.abs()
            return self._encode(error, magnitude, magnitude.amax(dim=1), generator)
        if not (math.isfinite(peak) and peak > 0) or bool((error.abs() > peak * 1.00001).any()):
            raise OptdfaError(f"encoder {self.spec!r}: error entries exceed the fixed peak {peak}")
        error = error.clamp(-peak, peak)  # float rounding of a clipped norm
        peaks = torch.full(error.shape[:1], float(peak), dtype=error.dtype, device=error.device)
        return self._encode(error, error.abs(), peaks, generator)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.spec!r})"


def _signed_planes(error: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """``(batch, 2K, n)`` bool: the kept entries ``keep`` ``(batch, K, n)`` (or ``(batch, n)``:
    K = 1) of the positive part, then of the negative part."""
    if keep.ndim == 2:
        keep = keep[:, None, :]
    return torch.cat(((error > 0)[:, None, :] & keep, (error < 0)[:, None, :] & keep), dim=1)


def _in_units_of(magnitude: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """``|e_bk| / scale_b`` ``(batch, n)``; an all-zero sample (``scale_b = 0``) gives zeros."""
    return magnitude / scale.clamp_min(torch.finfo(magnitude.dtype).tiny)[:, None]


_PLUS_MINUS = torch.tensor([1.0, -1.0])


class TernaryEncoder(Encoder):
    """Deterministic ternarisation with threshold ``τ`` relative to the sample's largest entry."""

    planes = 2

    def __init__(self, threshold: float = DEFAULT_THRESHOLD) -> None:
        if not (math.isfinite(threshold) and 0 <= threshold < 1):
            raise OptdfaError(f"ternary threshold must be in [0, 1), got {threshold}")
        self.threshold = float(threshold)
        self.spec = f"ternary:{self.threshold:g}"

    def _encode(
        self,
        error: torch.Tensor,
        magnitude: torch.Tensor,
        peak: torch.Tensor,
        generator: torch.Generator | None,
    ) -> Encoding:
        keep = magnitude > (self.threshold * peak)[:, None]
        # ⟨e, t⟩ = Σ |e_k| over kept entries, ‖t‖² = number of kept entries
        scale = (magnitude * keep).sum(dim=1) / keep.sum(dim=1).clamp_min(1)
        return Encoding(_signed_planes(error, keep), _PLUS_MINUS, scale)


class StochasticTernaryEncoder(Encoder):
    """Unbiased dithered ternarisation: ``E[scale·t] = e``."""

    planes = 2
    stochastic = True
    spec = "stochastic"

    def _encode(
        self,
        error: torch.Tensor,
        magnitude: torch.Tensor,
        peak: torch.Tensor,
        generator: torch.Generator | None,
    ) -> Encoding:
        prob = _in_units_of(magnitude, peak)
        u = torch.rand(error.shape, generator=generator, device=error.device, dtype=error.dtype)
        return Encoding(_signed_planes(error, u < prob), _PLUS_MINUS, peak)


class BitPlaneEncoder(Encoder):
    """``K`` bits per sign: ``2K`` frames recombined with powers of two.

    ``dither=True`` (``bitplane:K``) rounds ``|e|/step`` up with probability its fractional part,
    so that ``E[encoded] = e``; ``dither=False`` (``bitplane-nearest:K``) rounds to the nearest
    level, a deterministic error that does not average out (it drops the many small positive
    entries of a softmax error: a persistent bias).
    """

    def __init__(self, bits: int, *, dither: bool = True) -> None:
        name = "bitplane" if dither else "bitplane-nearest"
        if not (isinstance(bits, int) and 1 <= bits <= MAX_BITS):
            raise OptdfaError(f"{name} needs 1 to {MAX_BITS} bits, got {bits}")
        self.bits = bits
        self.dither = bool(dither)
        self.stochastic = self.dither
        self.planes = 2 * bits
        self.spec = f"{name}:{bits}"
        powers = 2.0 ** torch.arange(bits, dtype=torch.float64)
        self._coefficients = torch.cat((powers, -powers)).float()

    def _encode(
        self,
        error: torch.Tensor,
        magnitude: torch.Tensor,
        peak: torch.Tensor,
        generator: torch.Generator | None,
    ) -> Encoding:
        levels = 2**self.bits - 1
        step = peak / levels
        units = _in_units_of(magnitude, step)
        if self.dither:  # floor(v + u), u ~ U[0, 1): unbiased, and never above `levels`
            u = torch.rand(error.shape, generator=generator, device=error.device, dtype=error.dtype)
            units = torch.floor(units.add_(u))
        else:
            units = torch.round(units)
        q = units.clamp_(0, levels).to(torch.int32)
        powers = 2 ** torch.arange(self.bits, device=error.device, dtype=torch.int32)
        bits = (q[:, None, :] & powers[None, :, None]) != 0  # (batch, K, n)
        return Encoding(_signed_planes(error, bits), self._coefficients, step)


def parse_encoder(spec: str) -> Encoder:
    """Build an encoder from its spec: ``stochastic``, ``bitplane:K``, ``ternary[:THRESHOLD]``,
    ``bitplane-nearest:K``."""
    if not isinstance(spec, str):
        raise OptdfaError(f"an encoder is given as a string, got {spec!r}")
    text = spec.strip().lower()
    name, sep, arg = text.partition(":")
    usage = (
        "valid encoders: stochastic, bitplane:K (K = 1..16), ternary[:THRESHOLD] "
        "(e.g. ternary:0.15), bitplane-nearest:K"
    )
    if name == "ternary":
        if not sep:
            return TernaryEncoder()
        try:
            threshold = float(arg)
        except ValueError:
            raise OptdfaError(
                f"cannot parse encoder {spec!r}: the ternary threshold must be a number in [0, 1)"
            ) from None
        return TernaryEncoder(threshold)
    if name == "stochastic":
        if sep:
            raise OptdfaError(f"cannot parse encoder {spec!r}: stochastic takes no parameter")
        return StochasticTernaryEncoder()
    if name in ("bitplane", "bitplane-nearest"):
        try:
            bits = int(arg)
        except ValueError:
            raise OptdfaError(
                f"cannot parse encoder {spec!r}: write {name}:K with K bits per sign (1..16)"
            ) from None
        return BitPlaneEncoder(bits, dither=name == "bitplane")
    raise OptdfaError(f"cannot parse encoder {spec!r}; {usage}")
