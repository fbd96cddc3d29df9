"""Exposure-dependent views of a :class:`~optdfa.optics.camera.Camera`.

A characterisation (and lightonml's exposure override) changes the exposure of a camera built
for another: only the stages that integrate over time (photo-conversion, dark current) change.
"""

from __future__ import annotations

import dataclasses

from optdfa.optics.camera import ADC, Camera, DarkCurrent


def camera_at_exposure(camera: Camera, exposure_s: float) -> Camera:
    """A copy of ``camera`` whose exposure-dependent stages integrate for ``exposure_s`` seconds."""
    stages = [
        dataclasses.replace(s, exposure_s=exposure_s) if hasattr(s, "exposure_s") else s
        for s in camera.stages
    ]
    return Camera(stages)


def black_level(camera: Camera) -> float:
    """Mean output of a dark pixel (DN, or e⁻ without ADC): dark charge plus the ADC offset."""
    dark = camera.stage("dark_current")
    charge = dark.mean_e if isinstance(dark, DarkCurrent) and dark.enabled else 0.0
    adc = camera.stage("adc")
    if isinstance(adc, ADC) and adc.enabled:
        return charge / adc.gain_e_per_dn + adc.offset_dn
    return charge
