"""From the series to the camera's numbers: gain, read noise, black level, full well, jitter,
drift, dark current and linearity (see the package docstring)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from optdfa.characterise.acquisition import (
    Series,
    is_integer_output,
    saturated_pixels,
    signal_floor,
)
from optdfa.characterise.photon_transfer import fit_photon_transfer, lag_variances
from optdfa.characterise.read_noise import fit_read_noise
from optdfa.errors import OptdfaError

#: series whose mean signal is at most this (DN) feed the read-noise likelihood
LIKELIHOOD_MAX_SIGNAL_DN = 4.0
#: at least this share of the pixels must saturate to measure the full well
SATURATED_MIN = 0.01
#: lags of the drift-robust variance
MAX_LAG = 8


def analyse(
    darks: list[Series], ladder: list[Series], *, integer: bool | None = None
) -> dict[str, Any]:
    """Gain, read noise, black level, full well, jitter, drift and linearity from the series."""
    if integer is None:
        integer = is_integer_output([*darks, *ladder])
    quant = 1 / 12 if integer else 0.0
    dark = darks[0]
    black = float(dark.frames.mean())
    floor = signal_floor(dark)
    signals = [s.mean - black for s in ladder]
    top_signal = float(np.mean(signals[-1]))
    if top_signal < floor:
        raise OptdfaError(
            f"no signal: at the longest exposure ({ladder[-1].exposure_s * 1e6:.4g} µs) the mean "
            f"output is only {top_signal:.3g} DN above the dark level; check that the light "
            f"source is on and reaches the camera, or allow longer exposures "
            f"(--max-exposure-factor)"
        )
    # saturation, pixel by pixel (monotone in exposure)
    saturated = [np.zeros(signals[0].shape, dtype=bool)]
    for i in range(1, len(ladder)):
        ratio = ladder[i].exposure_s / ladder[i - 1].exposure_s
        sat = saturated_pixels(signals[i - 1], signals[i], ratio, floor)
        saturated.append(saturated[-1] | sat)
    if len(ladder) >= 2 and saturated[1].mean() >= 0.5:
        raise OptdfaError(
            f"the camera saturates even at the shortest exposure "
            f"({ladder[0].exposure_s * 1e6:.4g} µs): lower the light — fewer mirrors on or a "
            f"weaker laser — or allow shorter exposures"
        )
    sat_fraction = float(saturated[-1].mean())
    if sat_fraction < SATURATED_MIN:
        raise OptdfaError(
            f"no saturation reached: {100 * sat_fraction:.2g} % of the pixels saturate at the "
            f"longest exposure ({ladder[-1].exposure_s * 1e6:.4g} µs, mean signal "
            f"{top_signal:.3g} DN), so the full well cannot be measured; allow longer exposures "
            f"(--max-exposure-factor) or more light"
        )
    sat_pixels = saturated[-1]
    y_sat = float(np.median(ladder[-1].mean[sat_pixels]))
    observed_top = float(max(s.frames.max() for s in ladder))
    adc_limited = bool(integer and abs(y_sat - observed_top) < 0.5)
    usable_max = 0.9 * (y_sat - black)

    # per-series photon transfer: jitter-normalised, drift-robust, quantisation-corrected
    means, variances, drift_d, rows = [], [], [], []
    jitters = []
    for s, sig, sat in zip(ladder, signals, saturated, strict=True):
        hits_top = (s.frames >= observed_top).any(axis=0) if integer else np.zeros_like(sat)
        use = ~sat & ~hits_top & (sig <= usable_max)
        y = s.frames[:, use] - black
        level = float(y.mean()) if use.any() else 0.0
        ratio = np.ones(s.frames.shape[0])
        if use.sum() >= 16 and level >= 1.0:
            ratio = y.mean(axis=1) / level
            sampling = float(y.var(axis=0, ddof=1).mean()) / (y.shape[1] * level**2)
            if level >= 5.0:
                jitters.append(float(ratio.var(ddof=1)) - sampling)  # jitter² of this series
        yc = y / ratio[:, None]
        lags = min(MAX_LAG, (s.chunk or s.frames.shape[0]) // 2)
        v = lag_variances(yc, lags, s.chunk) if use.any() else np.zeros((lags, 0))
        white = 2 * v[0] - v[1] if lags >= 2 else v[0]
        means.append(yc.mean(axis=0))
        variances.append(white)
        if use.any() and level >= 5.0 and lags >= 3:
            k = np.arange(1, lags + 1, dtype=np.float64)
            kc = k - k.mean()
            slope = (kc[:, None] * (v - v.mean(axis=0))).sum(axis=0) / (kc**2).sum()
            drift_d.append((2 * slope, yc.mean(axis=0), s.exposure_s))
        rows.append(
            {
                "exposure_s": s.exposure_s,
                "mean_signal_dn": float(sig.mean()),
                "saturated_fraction": float(sat.mean()),
                "pixels_used": int(use.sum()),
                "frame_power_rms": float(ratio.std()),
            }
        )
    m = np.concatenate(means)
    v = np.concatenate(variances)

    if not np.any(v > quant):
        raise OptdfaError(
            "the output shows no temporal noise (noiseless device?): there is nothing to "
            "characterise; use a profile with shot noise and a camera"
        )
    ptc = fit_photon_transfer(m, v, integer=integer, lo=0.1 * usable_max, hi=usable_max)
    lo = max(0.02 * usable_max, ptc["gain"] / 16) if integer else 0.02 * usable_max
    ptc = fit_photon_transfer(m, v, integer=integer, lo=lo, hi=usable_max)
    gain = ptc["gain"]
    jitter = math.sqrt(max(0.0, float(np.median(jitters)))) if jitters else 0.0
    jitter_se = (
        float(np.std(jitters, ddof=1)) / math.sqrt(len(jitters)) / (2 * max(jitter, 1e-12))
        if len(jitters) > 1
        else math.inf
    )

    # linearity: pixels that stay well below saturation at every exposure, signal against
    # exposure, fitted with equal relative weight per series
    never = signals[-1] <= usable_max
    lin_t = np.array([s.exposure_s for s in ladder])
    lin_s = np.array([float(sig[never].mean()) if never.any() else 0.0 for sig in signals])
    # EMVA 1288 range: from 5 % of the saturation signal (rounding biases dimmer means)
    fit_sel = lin_s >= max(0.05 * (y_sat - black), floor)
    if not fit_sel.any():
        fit_sel = lin_s > 0
    k_lin = float(np.exp(np.mean(np.log(lin_s[fit_sel] / lin_t[fit_sel]))))
    deviation = lin_s[fit_sel] / (k_lin * lin_t[fit_sel]) - 1
    # all-pixel mean signal per second (speckle mean over every pixel), from unsaturated series
    clean = [i for i in range(len(ladder)) if saturated[i].mean() == 0 and signals[i].mean() >= 1]
    i_ref = max(clean) if clean else 0
    rate_dn = float(signals[i_ref].mean()) / ladder[i_ref].exposure_s

    drift = 0.0
    drift_se = math.inf
    if drift_d:
        per_series = []
        for d, mp, exposure in drift_d:
            xs = 4 * mp * rate_dn * exposure
            per_series.append(float((xs * d).sum() / (xs**2).sum()))
        drift = float(np.mean(per_series))
        drift_se = (
            float(np.std(per_series, ddof=1) / math.sqrt(len(per_series)))
            if len(per_series) > 1
            else math.inf
        )

    dark_rate = 0.0
    dark_detected = False
    if len(darks) == 2 and darks[1].exposure_s > darks[0].exposure_s:
        diff = float(darks[1].frames.mean() - darks[0].frames.mean())
        se = math.sqrt(
            sum(float(d.frames.var()) / d.frames.size for d in darks)
            + (quant / darks[0].frames.shape[1])
        )
        if diff > 3 * se and diff > 0:
            dark_detected = True
            dark_rate = diff * gain / (darks[1].exposure_s - darks[0].exposure_s)

    result: dict[str, Any] = {
        "integer_output": integer,
        "gain_e_per_dn": gain,
        "gain_se_e_per_dn": ptc["gain_se"],
        "ptc_intercept_dn2": ptc["intercept"],
        "ptc_points": ptc["points"],
        "ptc_lower_dn": lo,
        "black_level_dn": black,
        "saturation_dn": y_sat,
        "adc_limited": adc_limited,
        "max_code": observed_top,
        "saturated_fraction": sat_fraction,
        "power_jitter": jitter,
        "power_jitter_se": jitter_se,
        "drift_per_frame": drift,
        "drift_se": drift_se,
        "dark_current_detected": dark_detected,
        "dark_current_e_per_s": dark_rate,
        "signal_rate_dn_per_s": rate_dn,
        "linearity_slope_dn_per_s": k_lin,
        "linearity_error": float(np.abs(deviation).max()) if deviation.size else math.nan,
    }
    # read noise and black level
    if integer:
        low = [s for s in ladder if float(np.mean(s.mean - black)) <= LIKELIHOOD_MAX_SIGNAL_DN]
        if len(low) < 2:
            low = ladder[:2]
        start_sigma = gain * math.sqrt(max(ptc["intercept"], 1e-4))
        fit = fit_read_noise(
            [dark, *low],
            gain=gain,
            jitter=jitter,
            top=observed_top,
            start_sigma=start_sigma,
            start_offset=black,
            drift=max(drift, 0.0) if drift > 3 * drift_se else 0.0,
            mean_rate_e=rate_dn * gain,
        )
        result.update(fit)
        result["likelihood_exposures_s"] = [s.exposure_s for s in low]
    else:
        sigma2 = float(dark.frames.var(axis=0, ddof=1).mean())
        result.update(
            read_noise_e=math.sqrt(sigma2) * gain,
            read_noise_se_e=math.sqrt(sigma2) * gain * math.sqrt(0.5 / dark.frames.size),
            offset_dn=black,
        )
    result["full_well_e"] = gain * (y_sat - result["offset_dn"])
    # data for the report's plots
    result["_ptc"] = {
        "mean": m,
        "variance": v - quant,
        "fit_from": lo,
        "fit_to": usable_max,
        "bins": ptc["bins"],
    }
    result["_linearity"] = {"exposure_s": lin_t, "signal_dn": lin_s, "used": fit_sel}
    result["_ladder"] = rows
    return result
