"""A drop-in noisy OPU for lightonml code: ``lightonml.OPU(opu_device=SimulatedOpuDevice(...))``.

lightonml's own simulated device returns the noiseless ``|xR|²`` (float32). This device keeps
lightonml's matrix ``R`` and everything lightonml expects of a simulated device, and adds
optdfa's physics on top, frame by frame:

- **medium drift** — after every frame, ``R ← ρR + √(1−ρ²)W`` with ``ρ = 1 − drift_per_frame``
  and ``W`` drawn with ``R``'s law (so ``R`` keeps its statistics while it decorrelates);
- **laser power jitter** — each frame's intensity times ``1 + power_jitter·N(0, 1)``;
- **the camera** — optdfa's :class:`~optdfa.optics.camera.Camera` (photo-conversion, dark
  current, shot noise, full well, read noise, ADC), from a profile or from explicit stages,
  with a seeded noise generator.

**Units.** lightonml draws ``R`` with real and imaginary parts ``N(0, 1/n_features)``, so one
feature switched on gives a mean intensity ``2/n_features``. On a LightOn OPU a feature is a
macro-pixel of ``dmd_mirrors // n_features`` mirrors (lightonml's "full" input ROI), so the
camera sees ``u = n_features · mirrors_per_feature / 2`` per-mirror intensity units per unit of
lightonml intensity: the light level, and hence every noise figure, is the physical one of the
profile's OPU. ``output="intensity"`` (default) converts the camera output back to lightonml's
units — ``(output − black level)/(κ·u)``, κ the camera's output per unit intensity at the
profile's exposure — so unchanged lightonml code sees numbers of the usual scale, now noisy,
saturating and quantised (an ADC of ``b`` bits gives at most ``2^b`` distinct levels);
``output="dn"`` returns the raw camera codes as a real OPU does (``uint8`` for ≤ 8 bits).
With every noise source off (profile ``ideal``) the output equals ``|xR|²``.

**Exposure.** The camera follows ``exposure_us``, which lightonml sets on the device
(``opu.fit1d(..., exposure_us=…)`` overrides it): the photo-charge and the dark charge scale
with it, as on the hardware.

**linear_transform.** LightOn's hardware recovers ``Re(xR)`` with closed code; here it is
modelled by in-line holography with a plane-wave anchor of uniform amplitude ``A`` (intensity
``A² = 2·anchor_fraction``, the light of that fraction of the features): each frame is exposed
with and without the anchor, and ``Re(xR) = [I(x+A) − I(x) − (Ī(A) − Ī(0))] / (2κ̂A)`` with
``Ī(A) − Ī(0) = κ̂A²`` calibrated once per exposure from ``calibration_frames`` frames of each.
Noise off, it returns ``Re(xR)`` exactly as lightonml's simulator does.

**Why the class is called SimulatedOpuDevice.** ``lightonml.OPU`` accepts a device only if
``type(device).__name__`` is ``"SimulatedOpuDevice"`` or ``"OpuDevice"``, and treats it as
simulated (random matrix, no driver calls) only if ``isinstance(device,
lightonml.internal.simulated_device.SimulatedOpuDevice)``. Subclassing lightonml's class under
the same name satisfies both checks without patching lightonml, and inherits every other
behaviour (open/close, acquisition contexts, pickling of the matrix seed).
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import numpy as np
import torch

from optdfa.errors import OptdfaError
from optdfa.integrations.lightonml_compat import import_lightonml
from optdfa.optics.camera import ADC, Camera
from optdfa.optics.exposure import black_level, camera_at_exposure
from optdfa.optics.noise import NoiseSource
from optdfa.optics.profile import OpuProfile, load_profile
from optdfa.seeding import derive_seed

import_lightonml()
from lightonml.internal.simulated_device import (  # noqa: E402
    SimulatedOpuDevice as _LightonmlSimulatedDevice,
)

OUTPUTS = ("intensity", "dn")


class SimulatedOpuDevice(_LightonmlSimulatedDevice):
    """lightonml's simulated OPU with optdfa's camera, laser jitter and medium drift.

    Args:
        profile: profile name, TOML path or :class:`OpuProfile` (camera, drift, jitter, DMD size,
            exposure and frame time); default ``lighton-aurora``.
        overrides: profile fields to change (e.g. ``{"adc_bits": 6}``).
        camera: explicit camera stages instead of the profile's (the profile still gives drift,
            jitter, DMD size and timing).
        seed: defines ``R`` (lightonml's generator, seeded ``derive_seed(seed) mod 2³²``).
        noise_seed: seed of the camera/laser noise and of the drift (default from ``seed``).
        noise_generator: ``"quantile"`` (default) or ``"torch"`` (the generator of optdfa
            before 2026-11-27; see :mod:`optdfa.optics.noise`).
        output: ``"intensity"`` (lightonml's units, float32) or ``"dn"`` (raw camera codes).
        mirrors_per_feature: DMD mirrors per feature (default ``dmd_mirrors // n_features``).
        anchor_fraction: anchor intensity of ``linear_transform`` as a fraction of the features'
            light (default the profile's ``reference_fraction``).
    """

    def __init__(
        self,
        profile: str | OpuProfile = "lighton-aurora",
        *,
        overrides: dict[str, Any] | None = None,
        camera: Camera | None = None,
        seed: int = 0,
        noise_seed: int | None = None,
        noise_generator: str = "quantile",
        output: str = "intensity",
        mirrors_per_feature: int | None = None,
        anchor_fraction: float | None = None,
        verbose: bool = False,
    ) -> None:
        self.profile = load_profile(profile, overrides)
        if output not in OUTPUTS:
            raise OptdfaError(f"output must be one of {', '.join(OUTPUTS)}, got {output!r}")
        if mirrors_per_feature is not None and mirrors_per_feature < 1:
            raise OptdfaError(f"mirrors_per_feature must be ≥ 1, got {mirrors_per_feature}")
        anchor = self.profile.reference_fraction if anchor_fraction is None else anchor_fraction
        if not (math.isfinite(anchor) and anchor > 0):
            raise OptdfaError(f"anchor_fraction must be positive, got {anchor_fraction}")
        super().__init__(verbose=verbose)
        # exact (float) timings; lightonml's __init__ rounded them to whole microseconds
        self.frametime_us = self.profile.frame_time_s * 1e6
        self.exposure_us = self.profile.exposure_s * 1e6
        self.seed = int(seed)
        self.matrix_seed = derive_seed(self.seed, "lightonml-matrix") % 2**32
        self.noise_seed = derive_seed(self.seed, "opu-noise") if noise_seed is None else noise_seed
        self.output = output
        self.mirrors_per_feature = mirrors_per_feature
        self.anchor_fraction = float(anchor)
        self.base_camera = camera if camera is not None else Camera.from_profile(self.profile)
        self.noise_generator = noise_generator
        self.noise = NoiseSource(int(self.noise_seed), "cpu", streams=1, method=noise_generator)
        self.drift_generator = torch.Generator()
        self.drift_generator.manual_seed(derive_seed(int(self.noise_seed), "opu-drift"))
        self._drift_buffer: torch.Tensor | None = None
        #: camera exposures taken (a linear_transform frame takes two) and their modelled time
        self.frames = 0
        self.device_seconds = 0.0
        self._cameras: dict[float, Camera] = {}
        self._anchor_calibration: dict[float, np.ndarray] = {}

    # -- geometry and units ------------------------------------------------------------------
    @property
    def input_shape(self) -> tuple[int, int]:
        """DMD shape in lightonml's cartesian order (width, height)."""
        return self.profile.dmd_cols, self.profile.dmd_rows

    @property
    def output_shape_max(self) -> tuple[int, int]:
        """Camera shape in lightonml's cartesian order (width, height)."""
        return self.profile.camera_cols, self.profile.camera_rows

    @property
    def output_dtype(self) -> type:
        """Raw codes (``dn`` output): uint8/uint16 like a real OPU; else, and for the signed
        output of ``linear_transform``, float32."""
        adc = self.base_camera.stage("adc")
        if self.output == "dn" and not self._linear and isinstance(adc, ADC) and adc.enabled:
            return np.uint8 if adc.bits <= 8 else np.uint16
        return np.float32

    @property
    def exposure_s(self) -> float:
        return float(self.exposure_us) * 1e-6

    def units_per_intensity(self) -> float:
        """``u``: per-mirror intensity units per unit of lightonml intensity (module docstring)."""
        if self._random_matrix is None:
            raise RuntimeError("build_random_matrix() must run before a transform")
        n_features = self._random_matrix.shape[0]
        per_feature = self.mirrors_per_feature or max(1, self.profile.dmd_mirrors // n_features)
        return n_features * per_feature / 2.0

    def camera(self, exposure_s: float | None = None) -> Camera:
        """The camera integrating for ``exposure_s`` (default: the current ``exposure_us``)."""
        t = self.exposure_s if exposure_s is None else float(exposure_s)
        if t <= 0:
            raise OptdfaError(f"exposure must be positive, got {t * 1e6:g} µs")
        if t not in self._cameras:
            self._cameras[t] = camera_at_exposure(self.base_camera, t)
        return self._cameras[t]

    # -- the random matrix -------------------------------------------------------------------
    def build_random_matrix(self, n_features: int, n_components: int, seed: int | None = None):
        """lightonml's matrix (same generator and law), seeded by this device's ``seed``."""
        super().build_random_matrix(
            n_features, n_components, self.matrix_seed if seed is None else seed
        )
        self._random_matrix = np.ascontiguousarray(self._random_matrix, dtype=np.complex64)
        self._anchor_calibration.clear()

    def _matrix_for(self, n_features: int) -> np.ndarray:
        matrix = self._random_matrix
        if matrix is None:
            raise RuntimeError("build_random_matrix() must run before a transform")
        rows = matrix.shape[0]
        if n_features > rows:
            raise ValueError(f"X must have {rows} columns")
        if n_features < rows:
            warnings.warn(
                f"The number of rows of random matrix ({rows}) are bigger than X number of "
                f"features ({n_features}), consider reducing it for performance",
                stacklevel=3,
            )
            return matrix[:n_features]
        return matrix

    def _drift_step(self) -> None:
        """One frame of drift: ``R ← ρR + √(1−ρ²)W`` (``W`` with ``R``'s law), in place."""
        parts = torch.from_numpy(self._random_matrix.view(np.float32))  # shares the memory
        rho = 1.0 - self.profile.drift_per_frame
        std = math.sqrt(max(0.0, 1.0 - rho * rho)) / math.sqrt(self._random_matrix.shape[0])
        if self._drift_buffer is None or self._drift_buffer.shape != parts.shape:
            self._drift_buffer = torch.empty_like(parts)
        self._drift_buffer.normal_(generator=self.drift_generator)
        parts.mul_(rho).add_(self._drift_buffer, alpha=std)

    def _fields(self, x: np.ndarray) -> np.ndarray:
        """Complex fields ``(n, n_components)`` of frames ``x``; the medium drifts after each."""
        matrix = torch.from_numpy(self._matrix_for(x.shape[1]))
        xs = torch.from_numpy(np.asarray(x, dtype=np.complex64))
        if self.profile.drift_per_frame <= 0:
            return (xs @ matrix).numpy()
        out = torch.empty(xs.shape[0], matrix.shape[1], dtype=torch.complex64)
        for t in range(xs.shape[0]):
            torch.mm(xs[t : t + 1], matrix, out=out[t : t + 1])
            self._drift_step()
        return out.numpy()

    # -- exposure ------------------------------------------------------------------------------
    def expose(self, intensity: np.ndarray) -> torch.Tensor:
        """Camera output ``(n, pixels)`` float32 (DN or e⁻) for lightonml intensities ``(n,
        pixels)``; charges one frame time per row. ``intensity`` may be overwritten."""
        x = torch.from_numpy(np.ascontiguousarray(intensity, dtype=np.float32))
        n = x.shape[0]
        if self.profile.power_jitter > 0 and n:
            z = self.noise.normal_(torch.empty(n))
            x.mul_(z.mul_(self.profile.power_jitter).add_(1).clamp_(min=0)[:, None])
        out = self.camera().expose(x, self.noise, scale=self.units_per_intensity())
        self.frames += n
        self.device_seconds += n * float(self.frametime_us) * 1e-6
        return out

    def _to_output(self, out: torch.Tensor) -> np.ndarray:
        if self.output == "dn":
            return out.numpy().astype(self.output_dtype)
        kappa = self.camera(self.profile.exposure_s).output_per_intensity
        scale = kappa * self.units_per_intensity()
        y = (out - black_level(self.camera())) / scale
        return y.numpy().astype(np.float32)

    def transform1(self, X: np.ndarray) -> np.ndarray:
        """lightonml's device call: frames ``(n, n_features)`` → output ``(n, n_components)``."""
        assert X.ndim == 2
        if self._linear:
            return self._linear_transform(X)
        intensity = np.abs(self._fields(X)) ** 2
        return self._to_output(self.expose(intensity))

    # -- linear transform (in-line holography model, see the module docstring) --------------------
    @property
    def anchor_amplitude(self) -> float:
        return math.sqrt(2.0 * self.anchor_fraction)

    def _anchor_reference(self, n_components: int) -> np.ndarray:
        """``Ī(A) − Ī(0)`` per pixel at the current exposure (camera output units)."""
        t = self.exposure_s
        if t not in self._anchor_calibration:
            k = self.profile.calibration_frames
            a2 = self.anchor_amplitude**2
            frames = np.zeros((2 * k, n_components), dtype=np.float32)
            frames[:k] = a2
            out = self.expose(frames).double()
            if self.profile.drift_per_frame > 0:
                for _ in range(2 * k):
                    self._drift_step()
            self._anchor_calibration[t] = (out[:k].mean(0) - out[k:].mean(0)).numpy()
        return self._anchor_calibration[t]

    def _linear_transform(self, X: np.ndarray) -> np.ndarray:
        n = X.shape[0]
        fields = self._fields(np.repeat(X, 2, axis=0))  # each frame: with, then without anchor
        a = self.anchor_amplitude
        reference = self._anchor_reference(fields.shape[1])
        with_anchor = np.abs(fields[0::2] + a) ** 2
        without = np.abs(fields[1::2]) ** 2
        inter = np.empty((2 * n, fields.shape[1]), dtype=np.float32)
        inter[0::2], inter[1::2] = with_anchor, without
        out = self.expose(inter).double().numpy()
        y = out[0::2] - out[1::2] - reference
        kappa_a2 = float(np.mean(reference))
        if not kappa_a2 > 0:
            raise OptdfaError(
                "the linear_transform anchor gives no signal on the camera; raise the exposure "
                "or anchor_fraction"
            )
        return (y * (a / (2.0 * kappa_a2))).astype(np.float32)

    # -- state -------------------------------------------------------------------------------------
    def counters(self) -> dict[str, float]:
        """``frames`` (camera exposures) and ``device_seconds`` (frames × frame time, modelled)."""
        return {"frames": float(self.frames), "device_seconds": self.device_seconds}

    def state_dict(self) -> dict[str, Any]:
        """Noise and drift generators, the (drifted) matrix and the counters: a bit-exact resume."""
        return {
            "noise_rng": self.noise.get_state(),
            "drift_rng": self.drift_generator.get_state(),
            # a tensor, so that checkpoints load with torch.load(weights_only=True)
            "matrix": None
            if self._random_matrix is None
            else torch.from_numpy(self._random_matrix.copy()),
            "frames": self.frames,
            "device_seconds": self.device_seconds,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.noise.set_state(state["noise_rng"])
        self.drift_generator.set_state(state["drift_rng"])
        if state["matrix"] is not None:
            matrix = state["matrix"]
            if isinstance(matrix, torch.Tensor):
                matrix = matrix.numpy()
            self._random_matrix = np.array(matrix, dtype=np.complex64)
        self.frames = int(state["frames"])
        self.device_seconds = float(state["device_seconds"])
        self._anchor_calibration.clear()

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        own = self.state_dict()
        for key in (
            "noise",
            "drift_generator",
            "_drift_buffer",
            "_random_matrix",
            "_cameras",
            "_anchor_calibration",
        ):
            state.pop(key, None)
        state["optdfa_state"] = own
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        own = state.pop("optdfa_state")
        self.__dict__.update(state)
        # devices pickled before the quantile generator existed drew with torch's
        self.noise_generator = state.get("noise_generator", "torch")
        self.noise = NoiseSource(
            int(self.noise_seed), "cpu", streams=1, method=self.noise_generator
        )
        self.drift_generator = torch.Generator()
        self._drift_buffer = None
        self._random_matrix = None
        self._cameras = {}
        self._anchor_calibration = {}
        self.load_state_dict(own)
