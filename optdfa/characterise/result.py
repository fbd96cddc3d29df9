"""The result of a characterisation and the profile built from it."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from optdfa.characterise.targets import Target
from optdfa.errors import OptdfaError
from optdfa.optics.profile import FIELDS, SECTIONS, OpuProfile, profile_from_dict


# -- analysis ---------------------------------------------------------------------------------------
@dataclass
class Characterisation:
    """Every measured number, the data behind the plots, and the measured profile."""

    target: str
    simulated: bool
    base_profile: OpuProfile
    measured: dict[str, Any]
    ladder: list[dict[str, float]]
    ptc: dict[str, list[float]]
    linearity: dict[str, Any]
    projection: dict[str, Any]
    profile: OpuProfile
    provenance: dict[str, str]
    seconds: float

    def to_json(self) -> dict[str, Any]:
        return {
            "target": self.target,
            "simulated": self.simulated,
            "base_profile": self.base_profile.name,
            "measured": self.measured,
            "ladder": self.ladder,
            "linearity": self.linearity,
            "projection": self.projection,
            "profile": self.profile.fields(),
            "provenance": self.provenance,
            "seconds": self.seconds,
        }


# -- the profile ------------------------------------------------------------------------------------
def measured_profile(
    target: Target, analysis: dict[str, Any], projection: dict[str, Any]
) -> tuple[OpuProfile, dict[str, str]]:
    """The characterised profile and, per field, where its value comes from."""
    base = target.base_profile
    values = base.fields()
    how: dict[str, str] = {f.name: f"copied from base profile {base.name}" for f in FIELDS}

    def put(name: str, value: Any, note: str) -> None:
        if isinstance(value, float) and math.isfinite(value):
            value = float(f"{value:.6g}")  # what the TOML file holds
        values[name] = value
        how[name] = note

    for name, value in target.geometry.items():
        put(name, int(value), "device geometry")
    put("exposure_s", float(target.nominal_exposure_s), "device setting (nominal exposure)")
    put("gain_e_per_dn", float(analysis["gain_e_per_dn"]), "measured: photon-transfer slope")
    put("read_noise_e", float(analysis["read_noise_e"]), "measured: likelihood of the codes")
    put("full_well_e", float(analysis["full_well_e"]), "measured: saturation level")
    put("saturation", True, "measured: saturation observed")
    put("shot_noise", True, "measured: variance rises with the signal")
    qe = base.quantum_efficiency
    rate_e = analysis["signal_rate_dn_per_s"] * analysis["gain_e_per_dn"]
    photon_rate = rate_e / (qe * target.mirrors_all_on)
    put(
        "photon_rate",
        float(photon_rate),
        f"measured as photon_rate x QE, divided by the base QE {qe:g}",
    )
    put("power_jitter", float(analysis["power_jitter"]), "measured: frame power fluctuation")
    drift, se = analysis["drift_per_frame"], analysis["drift_se"]
    if math.isfinite(se) and drift > 3 * se:
        put("drift_per_frame", float(drift), "measured: random walk of the pixel levels")
    else:
        put("drift_per_frame", 0.0, "measured: no drift detected")
    if analysis["dark_current_detected"]:
        put("dark_current_e_per_s", float(analysis["dark_current_e_per_s"]), "measured")
    else:
        how["dark_current_e_per_s"] += " (dark charge below the resolution of this run)"
    if analysis["integer_output"]:
        put("adc", True, "measured: integer output codes")
        bits = max(1, int(analysis["max_code"]).bit_length())
        put("adc_bits", bits, "measured: largest code")
        put("offset_dn", max(0.0, float(analysis["offset_dn"])), "measured: black level")
    else:
        put("adc", False, "measured: non-integer output")
    if not target.simulated and math.isfinite(projection["frame_rate_hz"]):
        frame_time = max(1.0 / projection["frame_rate_hz"], values["exposure_s"])
        put("frame_time_s", float(frame_time), "measured: achieved frame rate")
    else:
        how["frame_time_s"] += " (a simulator's speed is not the device's)"
    data: dict[str, dict[str, Any]] = {s: {} for s in SECTIONS}
    for f in FIELDS:
        data[f.section][f.name] = values[f.name]
    name = f"characterised-{base.name}"
    try:
        profile = profile_from_dict(data, name=name, source="characterisation")
    except OptdfaError as exc:
        raise OptdfaError(f"the measured values do not form a valid profile: {exc}") from None
    return profile, how
