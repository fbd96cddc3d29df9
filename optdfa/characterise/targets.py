"""Devices under test: frames in, raw camera output out, a settable exposure.

``sim_opu_target`` builds the simulated OPU of a profile; ``lightonml_target`` a LightOn OPU (or
lightonml's simulator with optdfa's noisy camera) through lightonml.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from optdfa.errors import OptdfaError
from optdfa.optics.camera import Camera
from optdfa.optics.device import SimulatedOPU
from optdfa.optics.exposure import camera_at_exposure
from optdfa.optics.profile import OpuProfile


# -- what is characterised ------------------------------------------------------------------------
@dataclass
class Target:
    """A device under test: binary frames in, raw camera output out, settable exposure.

    ``device.transform`` takes ``(n, n_in)`` frames whose last input is the reference block
    (the decoders' convention) and returns ``(n, pixels)`` raw output (DN). ``set_exposure``
    returns the exposure really set (a real OPU rounds to whole microseconds).
    """

    name: str
    device: Any
    set_exposure: Callable[[float], float]
    frames_shown: Callable[[], int]
    nominal_exposure_s: float
    reference_mirrors: int
    signal_mirrors: int
    mirrors_all_on: int
    geometry: dict[str, int]
    simulated: bool
    base_profile: OpuProfile
    close: Callable[[], None] = lambda: None
    #: the nominal exposure to restore and the exposure bounds of the device
    min_exposure_s: float = 1e-6
    notes: list[str] = field(default_factory=list)

    @property
    def pixels(self) -> int:
        return int(self.device.n_out)


def sim_opu_target(
    profile: OpuProfile, *, pixels: int = 4096, inputs: int = 32, seed: int = 0
) -> Target:
    """The ``sim-opu`` device of ``profile``: ``inputs`` signal macro-pixels and the reference
    block sharing the DMD as in the backend, ``pixels`` camera pixels."""
    p = profile
    if not 1 <= pixels <= p.camera_pixels:
        raise OptdfaError(f"--pixels must be between 1 and {p.camera_pixels}, got {pixels}")
    reference = max(1, int(p.reference_fraction * p.dmd_mirrors))
    signal = (p.dmd_mirrors - reference) // inputs
    if signal < 1:
        raise OptdfaError(f"{inputs} inputs do not fit on the {p.dmd_rows}×{p.dmd_cols} DMD")
    opu = SimulatedOPU(p, inputs + 1, pixels, seed=seed, mirrors=[signal] * inputs + [reference])
    base_camera = Camera.from_profile(p)

    def set_exposure(seconds: float) -> float:
        opu.camera = camera_at_exposure(base_camera, seconds)
        return seconds

    return Target(
        name=f"sim-opu, profile {p.name}",
        device=opu,
        set_exposure=set_exposure,
        frames_shown=lambda: opu.frames,
        nominal_exposure_s=p.exposure_s,
        reference_mirrors=reference,
        signal_mirrors=signal,
        mirrors_all_on=reference + signal * inputs,
        geometry={
            "dmd_rows": p.dmd_rows,
            "dmd_cols": p.dmd_cols,
            "camera_rows": p.camera_rows,
            "camera_cols": p.camera_cols,
        },
        simulated=True,
        base_profile=p,
        min_exposure_s=1e-9,
    )


def lightonml_target(
    profile: OpuProfile,
    *,
    simulated: bool,
    pixels: int = 4096,
    inputs: int = 32,
    seed: int = 0,
    config_file: str = "",
    retries: int = 3,
    retry_delay_s: float = 1.0,
) -> Target:
    """A LightOn OPU through lightonml (``simulated``: optdfa's noisy drop-in device with the
    profile's camera — lightonml's own simulator has no camera to characterise)."""
    from optdfa.backends.lightonml_backend import make_device, reference_features
    from optdfa.integrations.lightonml_compat import import_lightonml

    n_ref = reference_features(inputs, profile.reference_fraction)
    device = make_device(
        import_lightonml(),
        profile,
        n_signal=inputs,
        n_reference=n_ref,
        n_out=pixels,
        seed=seed,
        simulated=simulated,
        noise=simulated,
        config_file=config_file,
        retries=retries,
        retry_delay_s=retry_delay_s,
    )
    opu, n_features = device.opu, device.n_features
    device.open()

    def set_exposure(seconds: float) -> float:
        us = max(1, round(seconds * 1e6))
        device._retry(
            lambda: opu.fit1d(n_features=n_features, exposure_us=us), "setting the exposure"
        )
        return float(opu.device.exposure_us) * 1e-6

    width, height = (int(v) for v in opu.device.input_shape)
    cam_w, cam_h = (int(v) for v in opu.device.output_shape_max)
    per_feature = (width * height) // n_features
    return Target(
        name="lightonml, " + ("optdfa noisy simulated device" if simulated else "real OPU"),
        device=device,
        set_exposure=set_exposure,
        frames_shown=lambda: device.frames_shown,
        nominal_exposure_s=float(opu.device.exposure_us) * 1e-6,
        reference_mirrors=n_ref * per_feature,
        signal_mirrors=per_feature,
        mirrors_all_on=n_features * per_feature,
        geometry={
            "dmd_rows": height,
            "dmd_cols": width,
            "camera_rows": cam_h,
            "camera_cols": cam_w,
        },
        simulated=simulated,
        base_profile=profile,
        close=device.close,
    )
