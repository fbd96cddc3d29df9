"""The camera: a list of switchable stages in physical units, applied to every frame.

Like a noise model, a :class:`Camera` is an ordered list of stage objects; each has an
``enabled`` switch and works on a ``(n_frames, n_pixels)`` float32 tensor. The standard
sensor model (EMVA 1288 order), built by :meth:`Camera.from_profile`:

1. :class:`PhotoConversion` — intensity in per-mirror units (1 = the mean speckle intensity of
   one mirror switched on) → mean photo-electrons
   ``μ = I · photon_rate · exposure_s · quantum_efficiency``;
2. :class:`DarkCurrent` — adds the mean dark charge ``dark_current_e_per_s · exposure_s``;
3. :class:`ShotNoise` — the collected charge is Poisson(μ) (photon and dark-current shot
   noise together: a sum of independent Poisson counts is Poisson). Drawn exactly where
   ``μ < poisson_exact_below_e``, from the normal approximation N(μ, μ) above;
4. :class:`FullWell` — the charge saturates at ``full_well_e``;
5. :class:`ReadNoise` — adds N(0, read_noise_e²) at readout;
6. :class:`ADC` — ``DN = clamp(round(e/gain_e_per_dn + offset_dn), 0, 2^bits − 1)``.

:meth:`Camera.expose` runs the stages in order, but draws shot and read noise as **one**
Gaussian, N(μ, μ + σ_read²), wherever that is exact: for pixels in the Gaussian regime that
cannot reach the full well (μ + 8√μ below it; only an 8σ event differs), or for every pixel
when the ADC's top code lies below the full well minus 8σ_read (then a saturated pixel reads the
top code whether its charge was clipped before or after the read noise). The other pixels are
redrawn stage by stage. :meth:`Camera.expose_staged` always goes stage by stage (a reference
for tests). Noise comes from a :class:`~optdfa.optics.noise.NoiseSource` (or a generator).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch

from optdfa.errors import OptdfaError
from optdfa.optics.noise import NoiseSource, as_noise
from optdfa.optics.workspace import Workspace

Noise = Any  # a NoiseSource, or anything with normal_like/normal_/poisson

#: pixels whose mean charge is this many standard deviations below the full well cannot saturate
SATURATION_SIGMAS = 8.0


@dataclass
class Stage:
    """One camera stage; ``enabled=False`` makes it the identity."""

    name: ClassVar[str] = ""
    enabled: bool = field(default=True, kw_only=True)

    def apply(self, x: torch.Tensor, noise: Noise) -> torch.Tensor:
        raise NotImplementedError

    def describe(self) -> dict[str, Any]:
        d = {k: v for k, v in self.__dict__.items()}
        return {"stage": self.name, **d}


@dataclass
class PhotoConversion(Stage):
    """Intensity (per-mirror units) → mean photo-electrons. Always applied."""

    name: ClassVar[str] = "photo_conversion"
    photon_rate: float  # photons/s per camera pixel per mirror switched on
    exposure_s: float
    quantum_efficiency: float

    @property
    def electrons_per_unit(self) -> float:
        """Mean photo-electrons per unit of intensity (one mirror's mean speckle)."""
        return self.photon_rate * self.exposure_s * self.quantum_efficiency

    def apply(self, x: torch.Tensor, noise: Noise) -> torch.Tensor:
        return x * self.electrons_per_unit


@dataclass
class DarkCurrent(Stage):
    """Adds the mean dark charge (its fluctuation is part of :class:`ShotNoise`)."""

    name: ClassVar[str] = "dark_current"
    rate_e_per_s: float
    exposure_s: float

    @property
    def mean_e(self) -> float:
        return self.rate_e_per_s * self.exposure_s

    def apply(self, x: torch.Tensor, noise: Noise) -> torch.Tensor:
        return x + self.mean_e


@dataclass
class ShotNoise(Stage):
    """Charge ~ Poisson(mean): exact below ``exact_below_e``, N(μ, μ) above."""

    name: ClassVar[str] = "shot_noise"
    exact_below_e: float = 50.0

    def apply(self, x: torch.Tensor, noise: Noise) -> torch.Tensor:
        mean = x.clamp_min(0)
        out = mean + mean.sqrt() * _normal(mean, noise)
        exact = mean < self.exact_below_e
        if bool(exact.any()):
            out[exact] = noise.poisson(mean[exact])
        return out


@dataclass
class FullWell(Stage):
    """Charge saturates at the full-well capacity."""

    name: ClassVar[str] = "full_well"
    capacity_e: float

    def apply(self, x: torch.Tensor, noise: Noise) -> torch.Tensor:
        return x.clamp_max(self.capacity_e)


@dataclass
class ReadNoise(Stage):
    """Additive Gaussian readout noise, ``sigma_e`` electrons rms."""

    name: ClassVar[str] = "read_noise"
    sigma_e: float

    def apply(self, x: torch.Tensor, noise: Noise) -> torch.Tensor:
        return x + self.sigma_e * _normal(x, noise)


@dataclass
class ADC(Stage):
    """Electrons → integer digital numbers in ``[0, 2^bits − 1]``."""

    name: ClassVar[str] = "adc"
    bits: int
    gain_e_per_dn: float
    offset_dn: float

    @property
    def max_dn(self) -> int:
        return 2**self.bits - 1

    def apply(self, x: torch.Tensor, noise: Noise) -> torch.Tensor:
        return x.mul(1.0 / self.gain_e_per_dn).add_(self.offset_dn).round_().clamp_(0, self.max_dn)


def _normal(like: torch.Tensor, noise: Noise) -> torch.Tensor:
    return noise.normal_like(like)


class Camera:
    """An ordered list of :class:`Stage` objects (see the module docstring)."""

    def __init__(self, stages: list[Stage]) -> None:
        if not stages or not isinstance(stages[0], PhotoConversion):
            raise OptdfaError("a camera's first stage must be PhotoConversion")
        names = [s.name for s in stages]
        if len(set(names)) != len(names):
            raise OptdfaError(f"a camera has each stage at most once, got {names}")
        if any(isinstance(s, ADC) for s in stages[:-1]):
            raise OptdfaError("the ADC must be the camera's last stage")
        self.stages = list(stages)

    @classmethod
    def from_profile(cls, profile: Any) -> Camera:
        """The standard six-stage sensor of an :class:`~optdfa.optics.profile.OpuProfile`."""
        p = profile
        return cls(
            [
                PhotoConversion(p.photon_rate, p.exposure_s, p.quantum_efficiency),
                DarkCurrent(
                    p.dark_current_e_per_s, p.exposure_s, enabled=p.dark_current_e_per_s > 0
                ),
                ShotNoise(p.poisson_exact_below_e, enabled=p.shot_noise),
                FullWell(p.full_well_e, enabled=p.saturation),
                ReadNoise(p.read_noise_e, enabled=p.read_noise_e > 0),
                ADC(p.adc_bits, p.gain_e_per_dn, p.offset_dn, enabled=p.adc),
            ]
        )

    # -- introspection ---------------------------------------------------------------------
    def stage(self, name: str) -> Stage | None:
        """The stage called ``name`` (``None`` if the camera has none)."""
        return next((s for s in self.stages if s.name == name), None)

    def _active(self, name: str) -> Stage | None:
        s = self.stage(name)
        return s if s is not None and s.enabled else None

    @property
    def conversion(self) -> PhotoConversion:
        return self.stages[0]  # type: ignore[return-value]

    @property
    def output_unit(self) -> str:
        return "DN" if self._active("adc") else "e-"

    @property
    def output_per_intensity(self) -> float:
        """Mean output (DN, or e⁻ without ADC) per unit intensity, below saturation."""
        adc = self._active("adc")
        k = self.conversion.electrons_per_unit
        return k / adc.gain_e_per_dn if adc else k  # type: ignore[union-attr]

    def describe(self) -> list[dict[str, Any]]:
        return [s.describe() for s in self.stages]

    # -- exposure ----------------------------------------------------------------------------
    def expose_staged(
        self, intensity: torch.Tensor, noise: NoiseSource | torch.Generator | None = None
    ) -> torch.Tensor:
        """Apply every enabled stage in order (no fusion)."""
        noise = as_noise(noise)
        x = intensity.to(torch.float32)
        for s in self.stages:
            if s.enabled:
                x = s.apply(x, noise)
        return x

    def expose(
        self,
        intensity: torch.Tensor,
        noise: NoiseSource | torch.Generator | None = None,
        *,
        scale: float | torch.Tensor = 1.0,
        workspace: Workspace | None = None,
    ) -> torch.Tensor:
        """Frames of non-negative intensity ``(n, pixels)`` → camera output (DN, or e⁻ without ADC).

        ``scale`` (a number, or a tensor broadcasting against the intensity, e.g. one laser
        power factor per frame ``(n, 1)``) multiplies the intensity first. The input tensor is overwritten and returned when it is float32 and
        contiguous. ``workspace`` provides scratch buffers (else they are allocated).
        """
        workspace = workspace if workspace is not None else Workspace(intensity.device)
        noise = as_noise(noise)
        x = intensity if intensity.dtype == torch.float32 else intensity.float()
        if not x.is_contiguous():
            x = x.contiguous()
        target = x
        x.mul_(scale * self.conversion.electrons_per_unit)
        stages = self.stages[1:]
        i = 0
        while i < len(stages):
            s = stages[i]
            i += 1
            if not s.enabled:
                continue
            if isinstance(s, ShotNoise):
                end = i
                while end < len(stages) and isinstance(stages[end], (FullWell, ReadNoise)):
                    end += 1
                x = self._shot_block(x, s, stages[i:end], stages[end:], noise, workspace)
                i = end
            elif isinstance(s, DarkCurrent):
                x.add_(s.mean_e)
            elif isinstance(s, FullWell):
                x.clamp_max_(s.capacity_e)
            elif isinstance(s, ReadNoise):
                z = noise.normal_(workspace.get("z", tuple(x.shape)))
                x.add_(z, alpha=s.sigma_e)
            elif isinstance(s, ADC):
                x.mul_(1.0 / s.gain_e_per_dn).add_(s.offset_dn).round_().clamp_(0, s.max_dn)
            else:
                x = s.apply(x, noise)
        if x is not target:
            target.copy_(x)
        return target

    @staticmethod
    def _saturation_shadowed(well: FullWell, read: ReadNoise | None, after: list[Stage]) -> bool:
        """True when the ADC's top code is reached before the full well can matter.

        If even a full well lowered by 8σ of read noise converts above the top code, a pixel
        that saturates reads the top code whether its charge is clipped before or after the
        read noise is added: shot and read noise may then be drawn as one Gaussian.
        """
        adc = next((t for t in after if isinstance(t, ADC) and t.enabled), None)
        if adc is None:
            return False
        sigma = read.sigma_e if read is not None else 0.0
        lowest = (well.capacity_e - SATURATION_SIGMAS * sigma) / adc.gain_e_per_dn + adc.offset_dn
        return lowest >= adc.max_dn + 0.5

    def _shot_block(
        self,
        mean: torch.Tensor,
        shot: ShotNoise,
        block: list[Stage],
        after: list[Stage],
        noise: Noise,
        workspace: Workspace,
    ) -> torch.Tensor:
        """Shot noise followed by full well and/or read noise, fused where exact.

        The fused draw N(μ, μ + σ²) is exact for a pixel in the Gaussian regime that cannot
        saturate (μ + 8√μ below the full well) or whose saturation is shadowed by the ADC;
        the other pixels are redrawn stage by stage.
        """
        well = next((t for t in block if isinstance(t, FullWell) and t.enabled), None)
        read = next((t for t in block if isinstance(t, ReadNoise) and t.enabled), None)
        if well is not None and read is not None and block.index(well) > block.index(read):
            # read noise before saturation is not the sensor order: no fusion, stage by stage
            x = shot.apply(mean, noise)
            for t in block:
                if t.enabled:
                    x = t.apply(x, noise)
            return x
        read_var = read.sigma_e**2 if read is not None else 0.0
        # mean ≥ 0: intensities are |field|² scaled by non-negative factors (see expose)
        # pixels that need the stage-by-stage treatment: exact Poisson, or able to saturate
        limit = math.inf
        if well is not None and not self._saturation_shadowed(well, read, after):
            c = well.capacity_e
            limit = ((math.sqrt(SATURATION_SIGMAS**2 + 4 * c) - SATURATION_SIGMAS) / 2) ** 2
        special = None
        if shot.exact_below_e > 0 or math.isfinite(limit):
            lo, hi = (float(v) for v in torch.aminmax(mean))
            if lo < shot.exact_below_e or hi >= limit:
                flat = mean.view(-1)
                mask = (flat < shot.exact_below_e) | (flat >= limit)
                special = mask.nonzero().squeeze(1)
                special_mean = flat[special]
        std = torch.add(mean, read_var, out=workspace.get("std", tuple(mean.shape))).sqrt_()
        z = noise.normal_(workspace.get("z", tuple(mean.shape)))
        mean.addcmul_(std, z)
        if special is not None and special.numel():
            part = shot.apply(special_mean, noise)
            if well is not None:
                part = part.clamp_max_(well.capacity_e)
            if read is not None:
                part = part + read.sigma_e * _normal(part, noise)
            mean.view(-1)[special] = part
        return mean
