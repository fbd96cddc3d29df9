"""The simulated optical processing unit: binary frames in, camera output out.

:class:`SimulatedOPU` composes the stages — :class:`~optdfa.optics.dmd.DMD` →
:class:`~optdfa.optics.medium.TransmissionMatrix` (optionally drifting, with laser power jitter)
→ :class:`~optdfa.optics.camera.Camera` — and keeps the cost counters. Its interface is small
on purpose (see :class:`OpticalDevice`): encoders and decoders only need ``transform``, so a
real ``lightonml`` OPU can stand in for it.

Units: intensity in *per-mirror units* (one mirror switched on gives a mean intensity of 1 at
every pixel); the camera turns it into electrons and DN (see :mod:`optdfa.optics.camera`).
Input ``k`` is a macro-pixel of ``mirrors[k]`` mirrors: its field is the sum of its mirrors'
fields, which is ``√mirrors[k]`` times a unit complex Gaussian column (same law, drawn once).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

import torch

from optdfa.errors import OptdfaError
from optdfa.optics.camera import Camera
from optdfa.optics.dmd import DMD, frame_keys
from optdfa.optics.medium import (
    DEFAULT_DENSE_BUDGET,
    FIELD_PER_LSB,
    TransmissionMatrix,
)
from optdfa.optics.noise import NoiseSource
from optdfa.optics.profile import OpuProfile
from optdfa.optics.workspace import Workspace
from optdfa.seeding import derive_seed

#: inputs up to which the field is a float32 product with a cached, mirror-weighted matrix
_FLOAT_PATH_MAX_INPUTS = 64
#: largest table of the fields of every possible frame (float32 re, im; see ``_intensity_table``)
FIELD_TABLE_MAX_BYTES = 64 * 2**20


@runtime_checkable
class OpticalDevice(Protocol):
    """What encoders/decoders need from a device (the simulator or a wrapped real OPU)."""

    n_in: int
    n_out: int

    def transform(self, frames: torch.Tensor) -> torch.Tensor:
        """Binary frames ``(n_frames, n_in)`` → camera output ``(n_frames, n_out)`` float32."""
        ...


def _squared_modulus(f: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
    """``re² + im²`` of fields ``(n, 2, n_out)`` (re, im), float32 ``(n, n_out)``."""
    re, im = f[:, 0], f[:, 1]
    out = torch.mul(re, re) if out is None else torch.mul(re, re, out=out)
    return out.addcmul_(im, im)


def transform_into(device: OpticalDevice, frames: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """``device.transform(frames)``, written into ``out`` when the device supports it."""
    if getattr(device, "accepts_out", False):
        return device.transform(frames, out=out)  # type: ignore[call-arg]
    return device.transform(frames)


class SimulatedOPU:
    """A seeded, physically modelled OPU (see the module docstring).

    Args:
        profile: the hardware profile (optics, camera, cost).
        n_in: device inputs (macro-pixels on the DMD).
        n_out: camera pixels read (a region of interest of the camera).
        seed: defines the transmission matrix ``H`` (element-wise, see ``medium``).
        mirrors: mirrors per input (default 1 each); must fit on the DMD.
        noise_seed: seed of the noise generator (default derived from ``seed``).
        device: torch device for all tensors.
        dense_budget_bytes: largest dense copy of ``H`` kept in memory (else streamed).
        workers: threads that generate ``H`` when streaming.
        camera: a custom :class:`Camera` (default: the profile's six stages).
        noise_generator: ``"quantile"`` (default) or ``"torch"`` (see :class:`NoiseSource`).
        noise_streams: parallel torch generators of the ``"torch"`` noise generator (default 2).
    """

    def __init__(
        self,
        profile: OpuProfile,
        n_in: int,
        n_out: int,
        *,
        seed: int,
        mirrors: Sequence[int] | None = None,
        noise_seed: int | None = None,
        device: torch.device | str = "cpu",
        dense_budget_bytes: int = DEFAULT_DENSE_BUDGET,
        workers: int | None = None,
        camera: Camera | None = None,
        noise_generator: str = "quantile",
        noise_streams: int | None = None,
    ) -> None:
        self.profile = profile
        self.dmd = DMD(profile.dmd_rows, profile.dmd_cols)
        self.n_in, self.n_out = int(n_in), int(n_out)
        if self.n_in > self.dmd.mirrors:
            raise OptdfaError(f"{self.n_in} inputs do not fit on the DMD ({self.dmd.describe()})")
        mirrors = [1] * self.n_in if mirrors is None else [int(m) for m in mirrors]
        if len(mirrors) != self.n_in:
            raise OptdfaError(f"mirrors lists {len(mirrors)} inputs, expected {self.n_in}")
        self.dmd.check_layout(mirrors)
        if not 1 <= self.n_out <= profile.camera_pixels:
            raise OptdfaError(
                f"{self.n_out} output pixels requested; the camera has "
                f"{profile.camera_rows}×{profile.camera_cols} = {profile.camera_pixels}"
            )
        self.device = torch.device(device)
        self.seed = int(seed)
        self.mirrors = torch.tensor(mirrors, dtype=torch.float64)
        self.medium = TransmissionMatrix(
            self.n_out,
            self.n_in,
            self.seed,
            dense_budget_bytes=dense_budget_bytes,
            device=self.device,
            workers=workers,
        )
        if profile.drift_per_frame > 0 and not self.medium.fits_dense:
            raise OptdfaError(
                f"a drifting medium is simulated densely, but H ({self.n_out}×{self.n_in}) needs "
                f"{self.medium.dense_bytes / 2**20:.0f} MiB, above the budget of "
                f"{dense_budget_bytes / 2**20:.0f} MiB; raise the budget or set drift_per_frame = 0"
            )
        self.camera = camera if camera is not None else Camera.from_profile(profile)
        noise_seed = derive_seed(self.seed, "opu-noise") if noise_seed is None else noise_seed
        #: the camera and laser noise streams
        self.noise = NoiseSource(
            int(noise_seed), self.device, streams=noise_streams, method=noise_generator
        )
        self.drift_generator = torch.Generator(device=self.device)
        self.drift_generator.manual_seed(derive_seed(int(noise_seed), "opu-drift"))
        self.workspace = Workspace(self.device)
        self._weighted: torch.Tensor | None = None  # (n_in, 2*n_out) float32 field units
        self._intensities: torch.Tensor | None = None  # (2**n_in, n_out), see _intensity_table
        self._tabulated = (
            not self.drifts
            and self.n_in <= _FLOAT_PATH_MAX_INPUTS
            and (2**self.n_in) * 2 * self.n_out * 4 <= FIELD_TABLE_MAX_BYTES
            and self.medium.fits_dense
        )
        self._drifting: torch.Tensor | None = None  # same layout, evolving with drift
        self.frames = 0

    # -- cost ----------------------------------------------------------------------------------
    def count_frames(self, n: int) -> None:
        """Charge ``n`` frames to the device's counters."""
        self.frames += int(n)

    def counters(self) -> dict[str, float]:
        """``frames``, ``device_seconds`` (frames × frame time) and ``energy_joules`` (× power)."""
        seconds = self.frames * self.profile.frame_time_s
        return {
            "frames": float(self.frames),
            "device_seconds": seconds,
            "energy_joules": seconds * self.profile.power_w,
        }

    # -- optics --------------------------------------------------------------------------------
    @property
    def drifts(self) -> bool:
        return self.profile.drift_per_frame > 0

    def _weighted_matrix(self) -> torch.Tensor:
        """``H`` with each input's amplitude ``√mirrors`` folded in: ``(n_in, 2·n_out)`` float32."""
        if self._weighted is None:
            q = self.medium.dense_levels().to(torch.float32)  # (n_in, 2, n_out)
            amp = (self.mirrors.sqrt() * FIELD_PER_LSB).to(torch.float32).to(self.device)
            self._weighted = (q * amp[:, None, None]).reshape(self.n_in, 2 * self.n_out)
        return self._weighted

    def _intensity_table(self) -> torch.Tensor | None:
        """``|Hx|²`` of every possible frame ``x``, row ``Σ_k x_k 2^k``: ``(2**n_in, n_out)``.

        Only for a static medium whose fields table fits :data:`FIELD_TABLE_MAX_BYTES` (a few
        inputs: the error entries of a classifier plus the reference); else ``None``. Each
        field is the sum of its frame's columns of the weighted matrix accumulated in input
        order, built by doubling: the frames whose highest input is ``k`` are the frames below
        ``2^k`` plus column ``k``. That is the order in which the frame-by-matrix product
        accumulates; its float32 values are bit-identical to the product's for the shapes
        tested (a product of other shapes may round a last bit differently).
        """
        if self._intensities is not None or not self._tabulated:
            return self._intensities
        weighted = self._weighted_matrix()
        fields = torch.zeros(2**self.n_in, 2 * self.n_out, device=self.device)
        for k in range(self.n_in):
            torch.add(fields[: 2**k], weighted[k], out=fields[2**k : 2 ** (k + 1)])
        self._intensities = _squared_modulus(fields.view(-1, 2, self.n_out))
        return self._intensities

    def _field_parts(self, x: torch.Tensor) -> tuple[torch.Tensor, float]:
        """Field ``(n, 2, n_out)`` (re, im) of binary frames, and a scale it still needs.

        Returns ``(f, s)`` with the true field ``s·f``: ``s`` is folded into later steps.
        """
        n = x.shape[0]
        if self.drifts:
            return self._drifting_field(x), 1.0
        if self.n_in <= _FLOAT_PATH_MAX_INPUTS and self.medium.fits_dense:
            f = self.workspace.get("field", (n, 2 * self.n_out))
            torch.mm(x.to(torch.float32), self._weighted_matrix(), out=f)
            return f.view(n, 2, self.n_out), 1.0
        groups = torch.unique(self.mirrors)
        if len(groups) == 1:
            m = float(groups[0])
            return self.medium.product(x), FIELD_PER_LSB * math.sqrt(m)
        out = torch.zeros(n, 2, self.n_out, device=self.device)
        for m in groups.tolist():
            mask = (self.mirrors == m).to(self.device)
            out.add_(self.medium.product(x & mask), alpha=FIELD_PER_LSB * math.sqrt(m))
        return out, 1.0

    def _drifting_field(self, x: torch.Tensor) -> torch.Tensor:
        """Frame by frame with ``H_{t+1} = ρ H_t + √(1−ρ²) W_t`` (W with ``H``'s law)."""
        if self._drifting is None:
            self._drifting = self._weighted_matrix().clone()
        rho = 1.0 - self.profile.drift_per_frame
        kick = math.sqrt(max(0.0, 1.0 - rho * rho))
        # per entry: each quadrature of an input of m mirrors has variance m/2
        std = (self.mirrors / 2).sqrt().to(torch.float32).to(self.device)[:, None]
        h = self._drifting
        xf = x.to(torch.float32)
        out = torch.empty(x.shape[0], 2 * self.n_out, device=self.device)
        w = torch.empty_like(h)
        for t in range(x.shape[0]):
            torch.mm(xf[t : t + 1], h, out=out[t : t + 1])
            w.normal_(generator=self.drift_generator).mul_(std)
            h.mul_(rho).add_(w, alpha=kick)
        return out.view(-1, 2, self.n_out)

    def field(self, frames: torch.Tensor) -> torch.Tensor:
        """Noiseless complex field ``(n, n_out)`` of the current medium (no frame is charged)."""
        x = self.dmd.validate_frames(frames, self.n_in).to(self.device)
        if self.drifts:
            if self._drifting is None:
                self._drifting = self._weighted_matrix().clone()
            f = (x.to(torch.float32) @ self._drifting).view(-1, 2, self.n_out)
            scale = 1.0
        else:
            f, scale = self._field_parts(x)
        return torch.complex(f[:, 0] * scale, f[:, 1] * scale)

    def intensity(self, frames: torch.Tensor) -> torch.Tensor:
        """Noiseless ``|Hx|²`` ``(n, n_out)`` in per-mirror units (no camera, no charge)."""
        return self.field(frames).abs().square()

    # -- the device operation ------------------------------------------------------------------
    #: :meth:`transform` takes ``out=`` (see :func:`transform_into`)
    accepts_out = True

    def transform(self, frames: torch.Tensor, *, out: torch.Tensor | None = None) -> torch.Tensor:
        """Show binary frames ``(n_frames, n_in)`` and read the camera: ``(n_frames, n_out)`` float32.

        The output is in DN (integer values) with the ADC on, in electrons without it; it is
        written into ``out`` if given. Every frame is charged ``frame_time_s`` of device time.
        """
        x = self.dmd.validate_frames(frames, self.n_in).to(self.device)
        n = x.shape[0]
        if out is None:
            out = torch.empty(n, self.n_out, device=self.device)
        elif out.shape != (n, self.n_out) or out.dtype != torch.float32 or not out.is_contiguous():
            raise ValueError(
                f"out must be a contiguous float32 tensor of shape ({n}, {self.n_out})"
            )
        table = self._intensity_table()
        if table is not None:
            torch.index_select(table, 0, frame_keys(x), out=out)
            scale = 1.0
        else:
            f, scale = self._field_parts(x)
            _squared_modulus(f, out=out)
        gain: float | torch.Tensor = scale * scale
        if self.profile.power_jitter > 0:  # one laser power factor per frame
            z = self.noise.normal_(torch.empty(n, 1, device=self.device))
            gain = z.mul_(self.profile.power_jitter).add_(1).clamp_(min=0).mul_(gain)
        self.camera.expose(out, self.noise, scale=gain, workspace=self.workspace)
        self.count_frames(n)
        return out

    # -- description and state ------------------------------------------------------------------
    def describe(self) -> dict[str, Any]:
        return {
            "n_in": self.n_in,
            "n_out": self.n_out,
            "dmd": self.dmd.describe(),
            "mirrors_per_input": sorted({int(m) for m in self.mirrors.tolist()}),
            "medium": "dense" if self.medium.fits_dense else "streamed",
            "camera_output": self.camera.output_unit,
            "intensity_table": self._tabulated,
            "noise_generator": self.noise.method,
            "noise_streams": self.noise.streams,
            "output_per_intensity": self.camera.output_per_intensity,
        }

    def state_dict(self) -> dict[str, Any]:
        """Noise generators, drifted medium and frame count: enough for a bit-exact resume."""
        return {
            "noise_rng": self.noise.get_state(),
            "drift_rng": self.drift_generator.get_state(),
            "drifting": None if self._drifting is None else self._drifting.cpu(),
            "frames": self.frames,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.noise.set_state(state["noise_rng"])
        self.drift_generator.set_state(state["drift_rng"])
        drifting = state.get("drifting")
        self._drifting = None if drifting is None else drifting.to(self.device)
        self.frames = int(state["frames"])
