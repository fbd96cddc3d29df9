"""Characterise an OPU the way one calibrates a camera, and write a profile ``sim-opu`` can load.

The same procedure runs on the simulator (``sim-opu``), on lightonml's simulator with optdfa's
noisy drop-in device, and on a real LightOn OPU: it only shows binary frames and reads the raw
camera output, changing the exposure between series (``lightonml``'s ``exposure_us`` override
on hardware). Run on the simulator it must recover the simulator's own gain, read noise and
full well — the check that it can calibrate a real device.

**Acquisition** (:func:`acquire`). The brightest frame (every input on) is shown ``repeats``
times at a ladder of exposures ``t_nom·2^k``: downwards until the mean signal is about 1 DN
(read-noise regime), upwards until 30 % of the pixels saturate (full-well regime), plus dark
frames (every input off) at the shortest and longest exposure. Each camera pixel is a sample
of the exponential speckle law, so one series spans a wide range of mean levels.

**Photon transfer** (:func:`analyse`), per series, per pixel ``p`` and frame ``f`` (output
``y`` in DN, black level ``o``):

1. *Laser jitter* multiplies a whole frame: ``r_f = mean_p(y_fp − o)/mean_fp(y − o)`` over the
   unsaturated pixels, and ``ỹ_fp = (y_fp − o)/r_f``; ``power_jitter² = var(r) − (its sampling
   variance)``.
2. *Drift* of the medium adds a random walk to each pixel: with ``V_k = ½·mean_f(ỹ_{f+k} −
   ỹ_f)² = σ² + k·D/2``, the white temporal variance is ``σ² = 2V₁ − V₂`` (any random walk
   cancels) and ``D`` (the slope of ``V_k`` in ``k``) gives ``drift_per_frame = D/(4 m_p m̄)``.
3. *Quantisation* adds ``1/12`` DN² (Sheppard's correction, exact once σ ≳ 0.5 DN).
4. The photon-transfer curve ``σ² − 1/12 = m/g + σ_r²/g²`` (``m`` the mean signal in DN),
   fitted on the pixels whose noise exceeds 0.5 DN and which stay below 90 % of saturation,
   gives the conversion gain ``g`` (e⁻/DN) from its slope.

**Read noise and black level** (:func:`fit_read_noise`). With an 8-bit ADC the read noise
(7 e⁻ = 0.05 DN on an Aurora-class camera) is far below one DN: the intercept of the curve
cannot show it. It is fitted instead by maximum likelihood on the raw integer codes of the dark
and low-signal series: pixel ``p`` at exposure ``t`` collects ``μ = a_p t`` electrons, reads
``DN = round((μ + ε)/g + o)`` clipped to the ADC range with ``ε ~ N(0, μ + σ_r² + (jμ)²)``, so
``P(DN = k) = Φ((k + ½ − m)/s) − Φ((k − ½ − m)/s)``; the per-pixel rates ``a_p`` are profiled
out (Newton's method) and ``(σ_r, o)`` maximise the likelihood (Nelder–Mead). The codes at
which pixels start flickering between two levels, as the exposure grows, pin both.

**Full well.** A pixel whose signal grows by less than 25 % of the exposure step is saturated;
the median output of the saturated pixels is the saturation level ``y_sat`` and
``full_well_e = g·(y_sat − o)``. When that level is the ADC's top code, the camera saturates in
the ADC (the profile then reproduces it exactly: charge clipped at that full well).

**Linearity and the recovered projection.** The mean signal of never-saturated pixels against
exposure is fitted by ``S = k·t`` (linearity error: the largest relative residual); ``k``
gives ``photon_rate × quantum_efficiency``. At the nominal exposure the reference decoder
(the one the backends use) recovers ``M̃x`` for random frames: its error against the exact map
(where the device can report its fields), the superposition error ``M̃(a + b)`` vs
``M̃a + M̃b`` and the repeatability of two measurements (both measurable on hardware). The
achieved frame rate is measured over the same frames.

:func:`write_characterisation` writes ``profile.toml`` (measured fields, the others copied from
the base profile and marked so), ``report.md``, ``characterisation.json`` and
``characterisation.png``, only once every number exists (nothing partial on disk).
"""

from __future__ import annotations

import time
from collections.abc import Callable

from optdfa.characterise.acquisition import Series, acquire
from optdfa.characterise.analysis import analyse
from optdfa.characterise.photon_transfer import fit_photon_transfer, quantised_variance
from optdfa.characterise.projection import measure_projection
from optdfa.characterise.read_noise import fit_read_noise
from optdfa.characterise.report import (
    OUTPUT_FILES,
    plot_characterisation,
    profile_toml,
    report_markdown,
    write_characterisation,
)
from optdfa.characterise.result import Characterisation, measured_profile
from optdfa.characterise.targets import Target, lightonml_target, sim_opu_target
from optdfa.errors import OptdfaError

__all__ = [
    "OUTPUT_FILES",
    "Characterisation",
    "Series",
    "Target",
    "acquire",
    "analyse",
    "characterise",
    "fit_photon_transfer",
    "fit_read_noise",
    "lightonml_target",
    "measure_projection",
    "measured_profile",
    "plot_characterisation",
    "profile_toml",
    "quantised_variance",
    "report_markdown",
    "sim_opu_target",
    "write_characterisation",
]


# -- the whole procedure ------------------------------------------------------------------------------
def characterise(
    target: Target,
    *,
    repeats: int = 64,
    max_exposure_factor: float = 64.0,
    projection_frames: int = 64,
    seed: int = 0,
    progress: Callable[[str], None] | None = None,
) -> Characterisation:
    """Acquire, analyse and measure the projection (see the module docstring); writes nothing."""
    if repeats < 16:
        raise OptdfaError(f"--repeats must be at least 16 (frames per series), got {repeats}")
    if not max_exposure_factor >= 1:
        raise OptdfaError(f"--max-exposure-factor must be ≥ 1, got {max_exposure_factor}")
    start = time.perf_counter()
    darks, ladder = acquire(
        target, repeats=repeats, max_exposure_factor=max_exposure_factor, progress=progress
    )
    analysis = analyse(darks, ladder)
    if progress:
        progress("recovered projection")
    projection = measure_projection(target, frames=projection_frames, seed=seed)
    profile, how = measured_profile(target, analysis, projection)
    measured = {k: v for k, v in analysis.items() if not k.startswith("_")}
    ptc = analysis["_ptc"]
    lin = analysis["_linearity"]
    return Characterisation(
        target=target.name,
        simulated=target.simulated,
        base_profile=target.base_profile,
        measured=measured,
        ladder=analysis["_ladder"],
        ptc={
            "mean": ptc["mean"].tolist(),
            "variance": ptc["variance"].tolist(),
            "fit_from": ptc["fit_from"],
            "fit_to": ptc["fit_to"],
        },
        linearity={
            "exposure_s": lin["exposure_s"].tolist(),
            "signal_dn": lin["signal_dn"].tolist(),
            "used": lin["used"].tolist(),
        },
        projection=projection,
        profile=profile,
        provenance=how,
        seconds=time.perf_counter() - start,
    )
