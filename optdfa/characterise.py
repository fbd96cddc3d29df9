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

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy.optimize import least_squares, minimize
from scipy.special import ndtr

from optdfa.errors import OptdfaError
from optdfa.optics.camera import Camera
from optdfa.optics.decoders import make_decoder
from optdfa.optics.device import SimulatedOPU
from optdfa.optics.exposure import camera_at_exposure
from optdfa.optics.profile import FIELDS, SECTIONS, OpuProfile, profile_from_dict

#: the ladder goes down until the predicted mean signal is at most this (DN)
LOW_SIGNAL_DN = 1.0
#: series whose mean signal is at most this (DN) feed the read-noise likelihood
LIKELIHOOD_MAX_SIGNAL_DN = 4.0
#: the dark and the series up to the nominal exposure take this many times ``repeats`` frames
LOW_SERIES_REPEAT_FACTOR = 2
#: frames shown in a row when the low series are interleaved
CHUNK = 16
#: the ladder goes up until this share of the pixels saturates
SATURATED_STOP = 0.30
#: at least this share of the pixels must saturate to measure the full well
SATURATED_MIN = 0.01
#: a pixel is saturated when its signal grows by less than this share of the exposure step
GROWTH_SATURATED = 0.25
#: pixels used by the read-noise likelihood (the first ones of the region of interest)
LIKELIHOOD_PIXELS = 2048
#: lags of the drift-robust variance
MAX_LAG = 8
#: Newton iterations of the per-pixel rates in the read-noise likelihood
NEWTON_ITERATIONS = 25
#: output files
OUTPUT_FILES = ("profile.toml", "report.md", "characterisation.json", "characterisation.png")


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
    from optdfa.backends.lightonml_backend import (
        LightonmlDevice,
        SimulatedLightonmlDevice,
        make_opu,
        reference_features,
    )
    from optdfa.integrations.lightonml_compat import import_lightonml

    lightonml = import_lightonml()
    n_ref = reference_features(inputs, profile.reference_fraction)
    n_features = inputs + n_ref
    opu = make_opu(
        lightonml,
        profile,
        n_features=n_features,
        n_components=pixels,
        seed=seed,
        simulated=simulated,
        noise=simulated,
        config_file=config_file,
        retries=retries,
        retry_delay_s=retry_delay_s,
    )
    kind = SimulatedLightonmlDevice if simulated else LightonmlDevice
    device = kind(
        opu,
        n_signal=inputs,
        n_reference=n_ref,
        n_out=pixels,
        simulated=simulated,
        retries=retries,
        retry_delay_s=retry_delay_s,
    )
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


# -- acquisition ------------------------------------------------------------------------------------
@dataclass
class Series:
    """``repeats`` frames ``(R, pixels)`` of one input at one exposure (raw output, float64)."""

    exposure_s: float
    lit: bool
    frames: np.ndarray
    #: frames shown in a row (0: all); chunks of interleaved series are shown in turn
    chunk: int = 0
    #: frames the device showed from the first to the last frame of the series
    span_frames: int = 0

    @property
    def span(self) -> int:
        return self.span_frames or self.frames.shape[0]

    @property
    def mean(self) -> np.ndarray:
        return self.frames.mean(axis=0)


def _show(target: Target, lit: bool, n: int) -> np.ndarray:
    x = torch.full((n, target.device.n_in), lit, dtype=torch.bool)
    return target.device.transform(x).to(torch.float64).numpy()


def saturated_pixels(
    previous: np.ndarray, current: np.ndarray, ratio: float, floor: float
) -> np.ndarray:
    """Pixels whose signal (above black) grew by less than ``GROWTH_SATURATED`` of the exposure
    step ``ratio`` although it was measurably bright (above ``floor``)."""
    bright = previous > floor
    return bright & (current < previous * (1.0 + GROWTH_SATURATED * (ratio - 1.0)))


def acquire(
    target: Target,
    *,
    repeats: int = 64,
    max_exposure_factor: float = 64.0,
    progress: Callable[[str], None] | None = None,
) -> tuple[list[Series], list[Series]]:
    """Dark series (shortest and longest exposure) and the lit exposure ladder (module doc)."""
    say = progress or (lambda _msg: None)
    t0 = target.nominal_exposure_s
    t0 = target.set_exposure(t0)
    probe_dark = _show(target, False, 8).mean()
    probe = _show(target, True, 8).mean() - probe_dark
    lows: list[float] = []
    t = t0 / 2
    while t >= target.min_exposure_s:
        lows.append(t)
        if probe * t / t0 <= LOW_SIGNAL_DN:
            break
        t /= 2
    exposures = sorted(lows)
    # The dark, the below-nominal and the nominal series feed the read-noise likelihood, which
    # shares one rate per pixel between them: they are shown interleaved, CHUNK frames at a
    # time, so a drifting medium moves every series alike; and with twice the frames (the
    # per-pixel rates bias σ_r by about 1/frames).
    low_repeats = LOW_SERIES_REPEAT_FACTOR * repeats
    exposures = [*exposures, t0]
    block = [(exposures[0], False), *((t, True) for t in exposures)]
    chunks: list[list[np.ndarray]] = [[] for _ in block]
    real_t = [0.0] * len(block)
    say(f"dark and {len(exposures)} exposures up to the nominal one, interleaved")
    for _ in range(max(1, low_repeats // CHUNK)):
        for i, (t, lit) in enumerate(block):
            real_t[i] = target.set_exposure(t)
            chunks[i].append(_show(target, lit, CHUNK))
    span = sum(sum(c.shape[0] for c in ch) for ch in chunks)
    low_series = [
        Series(real_t[i], lit, np.concatenate(chunks[i]), chunk=CHUNK, span_frames=span)
        for i, (_, lit) in enumerate(block)
    ]
    darks = [low_series[0]]
    black = float(darks[0].frames.mean())
    ladder: list[Series] = low_series[1:]
    floor = _signal_floor(darks[0])
    while True:
        if len(ladder) >= 2:
            prev, cur = ladder[-2], ladder[-1]
            sat = saturated_pixels(
                prev.mean - black, cur.mean - black, cur.exposure_s / prev.exposure_s, floor
            )
            if sat.mean() >= SATURATED_STOP:
                break
        nxt = ladder[-1].exposure_s * 2
        if nxt > t0 * max_exposure_factor * (1 + 1e-9):
            break
        real = target.set_exposure(nxt)
        say(f"exposure {real * 1e6:.4g} µs")
        ladder.append(Series(real, True, _show(target, True, repeats)))
    t_high = ladder[-1].exposure_s
    target.set_exposure(t_high)
    say(f"dark frames at {t_high * 1e6:.4g} µs")
    darks.append(Series(t_high, False, _show(target, False, repeats)))
    target.set_exposure(t0)
    return darks, ladder


def _is_integer(series: list[Series]) -> bool:
    return all(np.array_equal(s.frames, np.round(s.frames)) for s in series)


def _signal_floor(dark: Series) -> float:
    """Smallest signal told apart from the dark level (DN): 3σ of a dark pixel, at least 1 DN
    for integer output."""
    sigma = float(dark.frames.std(axis=0).mean())
    integer = np.array_equal(dark.frames, np.round(dark.frames))
    return max(3 * sigma, 1.0 if integer else 0.0, 1e-12)


# -- read noise: maximum likelihood on the raw codes --------------------------------------------
@dataclass
class _Counts:
    """Sparse histogram: for each (pixel, series, code) seen, how often."""

    pixel: np.ndarray
    exposure: np.ndarray
    level: np.ndarray
    count: np.ndarray
    frames: np.ndarray  # frames spanned by the term's series (its drift window)
    n_pixels: int


def _counts(series: list[Series], pixels: int) -> _Counts:
    parts: list[tuple[np.ndarray, ...]] = []
    for s in series:
        y = s.frames[:, :pixels].astype(np.int64)
        exposure = s.exposure_s if s.lit else 0.0
        for k in np.unique(y):
            c = (y == k).sum(axis=0)
            nz = np.nonzero(c)[0]
            size = nz.size
            parts.append(
                (nz, np.full(size, exposure), np.full(size, k), c[nz], np.full(size, s.span))
            )
    cat = [np.concatenate([p[i] for p in parts]) for i in range(5)]
    return _Counts(
        cat[0], cat[1], cat[2].astype(np.float64), cat[3].astype(np.float64), cat[4], pixels
    )


def _log_prob(
    mu: np.ndarray,
    level: np.ndarray,
    sigma_r: float,
    offset: float,
    gain: float,
    jitter: float,
    top: float,
    deriv: bool = False,
    wander: np.ndarray | float = 0.0,
) -> tuple[np.ndarray, np.ndarray | None]:
    """``log P(DN = level | μ)`` (and its derivative in ``μ``) of the quantised-Gaussian model;
    ``wander·μ`` is the variance a drifting medium adds within a series."""
    mu = np.maximum(mu, 0.0)
    var = mu * (1.0 + wander) + sigma_r**2 + (jitter * mu) ** 2
    s = np.sqrt(var) / gain
    m = offset + mu / gain
    hi = np.where(level >= top, np.inf, (level + 0.5 - m) / s)
    lo = np.where(level <= 0, -np.inf, (level - 0.5 - m) / s)
    upper = lo > 0  # both bounds above the mean: difference of upper tails is accurate
    prob = np.where(upper, ndtr(-lo) - ndtr(-hi), ndtr(hi) - ndtr(lo))
    prob = np.maximum(prob, 1e-300)
    if not deriv:
        return np.log(prob), None
    ds = (1 + wander + 2 * jitter**2 * mu) / (2 * gain**2 * s)

    def part(z: np.ndarray) -> np.ndarray:
        finite = np.isfinite(z)
        zf = np.where(finite, z, 0.0)
        pdf = np.exp(-0.5 * zf * zf) / math.sqrt(2 * math.pi)
        return np.where(finite, pdf * (-(1 / gain) / s - zf * ds / s), 0.0)

    return np.log(prob), (part(hi) - part(lo)) / prob


def fit_read_noise(
    series: list[Series],
    *,
    gain: float,
    jitter: float,
    top: float,
    start_sigma: float,
    start_offset: float,
    drift: float = 0.0,
    mean_rate_e: float = 0.0,
    pixels: int = LIKELIHOOD_PIXELS,
) -> dict[str, float]:
    """Maximum-likelihood read noise (e⁻) and black level (DN) from integer codes (module doc).

    ``series``: dark (``lit=False``, μ = 0) and lit low-signal series of the same input.
    ``drift`` (per frame) and ``mean_rate_e`` (mean photo-electrons per second over all pixels)
    model the random walk of a pixel within a series of ``R`` frames as an extra variance
    ``4·drift·μ·μ̄·(R + 1)/6``.
    """
    lit = [s for s in series if s.lit]
    if not lit:
        raise OptdfaError("the read-noise fit needs at least one lit low-signal series")
    n_pix = min(pixels, series[0].frames.shape[1])
    c = _counts(series, n_pix)
    wander = 4.0 * max(drift, 0.0) * mean_rate_e * c.exposure * (c.frames + 1) / 6.0
    brightest = max(lit, key=lambda s: s.exposure_s)
    dark = np.mean([s.frames[:, :n_pix].mean() for s in series if not s.lit] or [start_offset])
    rate0 = np.maximum((brightest.frames[:, :n_pix].mean(axis=0) - dark) * gain, 0.05 * gain)
    state = {"log_rate": np.log(rate0 / brightest.exposure_s)}
    floor = math.log(1e-6 * gain / brightest.exposure_s)

    def terms(la: np.ndarray, sigma_r: float, offset: float, deriv: bool):
        mu = np.exp(la)[c.pixel] * c.exposure
        ll, d = _log_prob(mu, c.level, sigma_r, offset, gain, jitter, top, deriv, wander)
        return mu, ll, d

    def profile_nll(params: np.ndarray) -> float:
        sigma_r, offset = math.exp(params[0]), params[1]
        la = state["log_rate"].copy()
        for _ in range(NEWTON_ITERATIONS):
            mu, _, d = terms(la, sigma_r, offset, True)
            grad = np.bincount(c.pixel, c.count * d * mu, minlength=n_pix)
            h = 1e-4
            mu2, _, d2 = terms(la + h, sigma_r, offset, True)
            grad2 = np.bincount(c.pixel, c.count * d2 * mu2, minlength=n_pix)
            hess = (grad2 - grad) / h
            concave = hess < 0
            step = np.where(concave, -grad / np.where(concave, hess, -1.0), np.sign(grad) * 0.2)
            step = np.clip(step, -0.5, 0.5)
            la = np.maximum(la + step, floor)
            if float(np.abs(step).max()) < 1e-5:
                break
        state["log_rate"] = la
        _, ll, _ = terms(la, sigma_r, offset, False)
        return -float((c.count * ll).sum())

    start = np.array([math.log(max(start_sigma, 0.02 * gain)), start_offset])
    res = minimize(
        profile_nll,
        start,
        method="Nelder-Mead",
        options={
            "xatol": 2e-3,
            "fatol": 0.05,
            "maxfev": 200,
            "initial_simplex": [start, start + [0.4, 0.0], start + [0.0, 0.15]],
        },
    )
    best = float(res.fun)
    # statistical error of log σ_r from the curvature of the profile likelihood
    h = 0.05
    up = profile_nll(res.x + [h, 0.0])
    down = profile_nll(res.x - [h, 0.0])
    curvature = (up + down - 2 * best) / h**2
    se_log = 1 / math.sqrt(curvature) if curvature > 0 else math.inf
    sigma = math.exp(float(res.x[0]))
    return {
        "read_noise_e": sigma,
        "read_noise_se_e": sigma * se_log,
        "offset_dn": float(res.x[1]),
        "likelihood_pixels": n_pix,
        "likelihood_evaluations": int(res.nfev),
    }


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


def _lag_variances(y: np.ndarray, max_lag: int, chunk: int = 0) -> np.ndarray:
    """``V_k = ½ mean_f (y_{f+k} − y_f)²`` for ``k = 1..max_lag``: ``(max_lag, pixels)``; with
    ``chunk``, only pairs of frames shown in the same run of ``chunk`` frames."""
    if chunk and chunk < y.shape[0]:
        runs = y[: y.shape[0] // chunk * chunk].reshape(-1, chunk, y.shape[1])
        return np.stack(
            [
                0.5 * np.mean((runs[:, k:] - runs[:, :-k]) ** 2, axis=(0, 1))
                for k in range(1, max_lag + 1)
            ]
        )
    return np.stack([0.5 * np.mean((y[k:] - y[:-k]) ** 2, axis=0) for k in range(1, max_lag + 1)])


def analyse(
    darks: list[Series], ladder: list[Series], *, integer: bool | None = None
) -> dict[str, Any]:
    """Gain, read noise, black level, full well, jitter, drift and linearity from the series."""
    if integer is None:
        integer = _is_integer([*darks, *ladder])
    quant = 1 / 12 if integer else 0.0
    dark = darks[0]
    black = float(dark.frames.mean())
    floor = _signal_floor(dark)
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
        v = _lag_variances(yc, lags, s.chunk) if use.any() else np.zeros((lags, 0))
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
    fit_sel = lin_s >= max(1.0, floor) if integer else lin_s > floor
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


def quantised_variance(x: np.ndarray | float, integer: bool = True) -> np.ndarray:
    """Mean temporal variance (DN²) of rounded Gaussian samples of variance ``x`` (DN²), averaged
    over a uniform spread of mean levels: ``x + 1/12 − Σ_k e^{−4π²k²x}/(2π²k²)`` (exact; → 0 as
    ``x`` → 0, → ``x + 1/12`` — Sheppard's correction — once ``x`` ≳ 0.1)."""
    x = np.asarray(x, dtype=np.float64)
    if not integer:
        return x
    k = np.arange(1, 6, dtype=np.float64)[:, None]
    bias = (np.exp(-4 * math.pi**2 * k**2 * np.ravel(x)[None, :]) / (2 * math.pi**2 * k**2)).sum(0)
    return x + 1 / 12 - bias.reshape(x.shape)


def fit_photon_transfer(
    mean: np.ndarray, variance: np.ndarray, *, integer: bool, lo: float, hi: float
) -> dict[str, Any]:
    """Fit ``variance = Q(mean/g + c)`` on pixel points binned by mean (``Q``:
    :func:`quantised_variance`; ``c = σ_r²/g²``): gain ``g`` (e⁻/DN), its standard error, ``c``."""
    sel = (mean >= lo) & (mean <= hi)
    if sel.sum() < 50:
        raise OptdfaError(
            f"too few unsaturated pixels between {lo:.3g} and {hi:.3g} DN for the photon-transfer "
            f"fit ({int(sel.sum())}); use more pixels (--pixels) or repeats (--repeats)"
        )
    width = max(1.0 if integer else 0.0, (hi - lo) / 30)
    edges = np.arange(lo, hi + width, width) if width > 0 else np.linspace(lo, hi, 31)
    idx = np.digitize(mean[sel], edges)
    bins = []
    for b in np.unique(idx):
        inside = idx == b
        if inside.sum() >= 5:
            bins.append((mean[sel][inside].mean(), variance[sel][inside].mean(), inside.sum()))
    if len(bins) < 3:
        raise OptdfaError(
            f"the photon-transfer curve has too few populated levels between {lo:.3g} and "
            f"{hi:.3g} DN; use more pixels (--pixels)"
        )
    bm, bv, bn = (np.array(c, dtype=np.float64) for c in zip(*bins, strict=True))
    slope0, intercept0 = np.polyfit(bm, bv - (1 / 12 if integer else 0.0), 1)
    if not slope0 > 0:
        raise OptdfaError(
            "the photon-transfer curve does not rise with the signal: no shot noise is visible "
            "(check the light source and the exposure range)"
        )
    weight = np.sqrt(bn) / np.maximum(bv, 1e-12)

    def residual(theta: np.ndarray) -> np.ndarray:
        return (bv - quantised_variance(bm * theta[0] + theta[1], integer)) * weight

    fit = least_squares(
        residual,
        [float(slope0), max(float(intercept0), 0.0)],
        bounds=([1e-12, 0.0], [np.inf, np.inf]),
        x_scale="jac",
    )
    dof = max(1, len(bm) - 2)
    scale = float((fit.fun**2).sum()) / dof
    try:
        cov = np.linalg.inv(fit.jac.T @ fit.jac) * scale
        slope_se = math.sqrt(max(cov[0, 0], 0.0))
    except np.linalg.LinAlgError:
        slope_se = math.inf
    slope, intercept = (float(t) for t in fit.x)
    return {
        "gain": 1.0 / slope,
        "gain_se": slope_se / slope**2,
        "intercept": intercept,
        "points": int(sel.sum()),
        "bins": {"mean": bm.tolist(), "variance": (bv - (1 / 12 if integer else 0)).tolist()},
    }


# -- the recovered projection ---------------------------------------------------------------------
def measure_projection(target: Target, *, frames: int = 64, seed: int = 0) -> dict[str, Any]:
    """Reference-decoder recovery at the nominal exposure: error vs the exact map (if known),
    superposition and repeatability errors, achieved frame rate."""
    p = target.base_profile
    target.set_exposure(target.nominal_exposure_s)
    decoder = make_decoder(
        "reference",
        target.device,
        reference_mirrors=target.reference_mirrors,
        signal_mirrors=target.signal_mirrors,
        normalisation=p.reference_normalisation,
        deduplicate=True,
        calibration_frames=max(p.calibration_frames, 16),
    )
    decoder.calibrate()
    n = decoder.n_signal
    gen = torch.Generator().manual_seed(seed)
    x = torch.rand(frames, n, generator=gen) < 0.5
    x[x.sum(dim=1) == 0, 0] = True
    split = torch.rand(frames, n, generator=gen) < 0.5
    a, b = x & split, x & ~split
    shown0, start = target.frames_shown(), time.perf_counter()
    first = decoder.measure(x).double()
    wall = time.perf_counter() - start
    shown = target.frames_shown() - shown0
    second = decoder.measure(x).double()
    parts = decoder.measure(a).double() + decoder.measure(b).double()

    def rel(u: torch.Tensor, w: torch.Tensor) -> float:
        return float((u - w).norm() / w.norm())

    out: dict[str, Any] = {
        "frames_tested": frames,
        "superposition_error": rel(parts, first),
        "repeatability_error": rel(first, second) / math.sqrt(2),
        "frames_shown": shown,
        "wall_seconds": wall,
        "frame_rate_hz": shown / wall if wall > 0 else math.inf,
    }
    if hasattr(target.device, "field"):
        exact = (decoder.matrix().double() @ x.double().T).T
        out["error_vs_exact"] = rel(first, exact)
        out["correlation_vs_exact"] = float(
            torch.corrcoef(torch.stack([first.flatten(), exact.flatten()]))[0, 1]
        )
        out["_scatter"] = (exact.flatten()[:4000].numpy(), first.flatten()[:4000].numpy())
    else:
        out["_scatter"] = (first.flatten()[:4000].numpy(), parts.flatten()[:4000].numpy())
    return out


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


# -- outputs -------------------------------------------------------------------------------------------
def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        text = f"{value:.6g}"
        return text if any(c in text for c in ".einf") else text + ".0"
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'


def profile_toml(result: Characterisation) -> str:
    """The measured profile as commented TOML (each field says where its value comes from)."""
    p = result.profile
    lines = [
        f"# Profile measured by 'optdfa characterise' on: {result.target}",
        f"# {datetime.now(timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}; base profile "
        f"{result.base_profile.name} ({result.base_profile.source or 'built in'}).",
        "# Fields marked 'copied' cannot be measured by this procedure.",
        f'description = "measured: {result.target}"',
    ]
    for section in SECTIONS:
        lines += ["", f"[{section}]"]
        for f in FIELDS:
            if f.section == section:
                line = f"{f.name} = {_toml_value(getattr(p, f.name))}"
                lines.append(f"{line:<36} # {f.unit}; {result.provenance[f.name]}")
    return "\n".join(lines) + "\n"


def _fmt(v: float) -> str:
    return f"{v:.4g}"


def report_markdown(result: Characterisation) -> str:
    """The human-readable report (tables and equations)."""
    m, base, pj = result.measured, result.base_profile, result.projection
    truth = "base profile (the simulator's truth)" if result.simulated else "base profile"
    lines = [
        "# OPU characterisation",
        "",
        f"Device: **{result.target}** — {len(result.ladder)} exposures, "
        f"{result.seconds:.1f} s. Figures: `characterisation.png`; profile: `profile.toml`.",
        "",
        "## Camera",
        "",
        f"| quantity | measured | {truth} | difference |",
        "|---|---|---|---|",
    ]

    def row(label: str, value: float, ref: float | None, se: float | None = None) -> None:
        val = _fmt(value) + (f" ± {_fmt(se)}" if se is not None and math.isfinite(se) else "")
        if ref is None:
            lines.append(f"| {label} | {val} | — | — |")
        else:
            diff = f"{100 * (value / ref - 1):+.2f} %" if ref else "—"
            lines.append(f"| {label} | {val} | {_fmt(ref)} | {diff} |")

    row("gain (e⁻/DN)", m["gain_e_per_dn"], base.gain_e_per_dn, m["gain_se_e_per_dn"])
    row("read noise (e⁻ rms)", m["read_noise_e"], base.read_noise_e, m["read_noise_se_e"])
    row("full well (e⁻)", m["full_well_e"], base.full_well_e)
    row("black level (DN)", m["offset_dn"], base.offset_dn)
    row(
        "photon rate × QE (e⁻/s per pixel per mirror)",
        result.profile.photon_rate * result.profile.quantum_efficiency,
        base.photon_rate * base.quantum_efficiency,
    )
    row("laser power jitter (rms)", m["power_jitter"], base.power_jitter, m["power_jitter_se"])
    row("drift per frame", m["drift_per_frame"], base.drift_per_frame, m["drift_se"])
    lines += [
        "",
        f"Saturation at {_fmt(m['saturation_dn'])} DN"
        + (
            " — the ADC's top code: the full well is where the ADC clips"
            if m["adc_limited"]
            else ""
        )
        + f"; {100 * m['saturated_fraction']:.1f} % of the pixels saturated at the longest "
        f"exposure. Largest code {int(m['max_code'])} → {result.profile.adc_bits}-bit ADC. "
        f"Linearity error {100 * m['linearity_error']:.2f} % (largest relative deviation of the "
        f"mean signal from S = k·t). Dark current "
        + (
            f"{_fmt(m['dark_current_e_per_s'])} e⁻/s."
            if m["dark_current_detected"]
            else "below the resolution of this run (copied)."
        ),
        "",
        "## Exposure ladder",
        "",
        "| exposure (µs) | mean signal (DN) | saturated | pixels in PTC | frame power rms |",
        "|---|---|---|---|---|",
    ]
    for r in result.ladder:
        lines.append(
            f"| {r['exposure_s'] * 1e6:.4g} | {r['mean_signal_dn']:.4g} | "
            f"{100 * r['saturated_fraction']:.1f} % | {r['pixels_used']} | "
            f"{r['frame_power_rms']:.4f} |"
        )
    lines += [
        "",
        "## Recovered projection (reference decoder, nominal exposure)",
        "",
        f"- superposition error ‖M̃(a+b) − M̃a − M̃b‖/‖M̃(a+b)‖: {pj['superposition_error']:.4f}",
        f"- repeatability (noise) ‖M̃x − M̃'x‖/(√2‖M̃x‖): {pj['repeatability_error']:.4f}",
    ]
    if "error_vs_exact" in pj:
        lines.append(
            f"- error vs the exact map ‖M̃x − M̃_exact x‖/‖M̃_exact x‖: {pj['error_vs_exact']:.4f} "
            f"(correlation {pj['correlation_vs_exact']:.4f})"
        )
    rate = f"{pj['frame_rate_hz']:.4g} frames/s over {pj['frames_shown']} frames"
    if result.simulated:
        rate += (
            f" of simulation (a property of this computer; the profile models "
            f"{1 / base.frame_time_s:.4g} frames/s)"
        )
    lines += [
        f"- achieved frame rate: {rate}",
        "",
        "## Method",
        "",
        "Photon transfer per pixel over repeated frames: frame power normalised (jitter), white "
        "variance σ² = 2V₁ − V₂ from the lag variances V_k = ½⟨(y_{f+k} − y_f)²⟩ (drift cancels); "
        "binned by mean signal m and fitted with Q(m/g + σ_r²/g²), Q(x) = x + 1/12 − "
        "Σ_k e^{−4π²k²x}/(2π²k²) the variance of rounded Gaussian samples "
        f"({m['ptc_points']} pixel points from {_fmt(m['ptc_lower_dn'])} DN). Read noise and "
        "black level: maximum likelihood of the raw codes of the dark and low-signal series "
        "(μ = a_p·t, DN = round((μ + ε)/g + o), ε ~ N(0, μ + σ_r² + (jμ)²)). Full well: "
        "g·(saturation level − o). Details: docs/lightonml.md.",
        "",
        "## Where each profile field comes from",
        "",
        "| field | value | source |",
        "|---|---|---|",
    ]
    for f in FIELDS:
        lines.append(
            f"| `{f.name}` | {_toml_value(getattr(result.profile, f.name))} | "
            f"{result.provenance[f.name]} |"
        )
    return "\n".join(lines) + "\n"


def plot_characterisation(result: Characterisation, path: Path) -> None:
    """Photon-transfer curve, linearity and projection scatter in one PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from optdfa.outputs import atomic_savefig

    m = result.measured
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.4))
    ax = axes[0]
    mean = np.asarray(result.ptc["mean"])
    var = np.asarray(result.ptc["variance"])
    edges = np.linspace(0, max(float(mean.max()), 1e-9), 41)
    idx = np.digitize(mean, edges)
    bx = [mean[idx == i].mean() for i in range(1, len(edges)) if (idx == i).sum() >= 5]
    by = [var[idx == i].mean() for i in range(1, len(edges)) if (idx == i).sum() >= 5]
    ax.plot(
        mean[:: max(1, mean.size // 3000)],
        var[:: max(1, mean.size // 3000)],
        ".",
        ms=1,
        alpha=0.3,
        color="0.6",
        label="pixels",
    )
    ax.plot(bx, by, "o", ms=4, label="binned")
    xs = np.linspace(0, result.ptc["fit_to"], 50)
    ax.plot(
        xs,
        xs / m["gain_e_per_dn"] + m["ptc_intercept_dn2"],
        "-",
        label=(f"fit: g = {m['gain_e_per_dn']:.4g} e⁻/DN"),
    )
    ax.axvline(result.ptc["fit_from"], ls=":", color="k", lw=0.8)
    ax.axvline(
        m["saturation_dn"] - m["offset_dn"],
        ls="--",
        color="r",
        lw=0.8,
        label=f"saturation ({m['full_well_e']:.4g} e⁻)",
    )
    ax.set(
        xlabel="mean signal (DN above black)",
        ylabel="temporal variance − 1/12 (DN²)",
        title="photon transfer",
    )
    ax.legend(fontsize=8)
    ax = axes[1]
    t = np.asarray(result.linearity["exposure_s"]) * 1e6
    s = np.asarray(result.linearity["signal_dn"])
    used = np.asarray(result.linearity["used"], dtype=bool)
    ax.loglog(t[used], s[used], "o", label="never-saturated pixels (fitted)")
    ax.loglog(
        t[~used], np.maximum(s[~used], 1e-3), "o", mfc="none", label="below 1 DN (not fitted)"
    )
    ax.loglog(t, m["linearity_slope_dn_per_s"] * t * 1e-6, "-", label="S = k·t")
    ax.set(
        xlabel="exposure (µs)",
        ylabel="mean signal (DN)",
        title=f"linearity (error {100 * m['linearity_error']:.2f} %)",
    )
    ax.legend(fontsize=8)
    ax = axes[2]
    u, w = result.projection["_scatter"]
    ax.plot(u, w, ".", ms=2, alpha=0.4)
    lim = float(np.abs(u).max()) if len(u) else 1.0
    ax.plot([-lim, lim], [-lim, lim], "k-", lw=0.8)
    if "error_vs_exact" in result.projection:
        ax.set(
            xlabel="exact M̃x",
            ylabel="recovered M̃x",
            title=f"projection (error {result.projection['error_vs_exact']:.3f})",
        )
    else:
        ax.set(
            xlabel="M̃x",
            ylabel="M̃a + M̃b",
            title=f"superposition (error {result.projection['superposition_error']:.3f})",
        )
    fig.suptitle(result.target)
    fig.tight_layout()
    atomic_savefig(path, fig, dpi=110)
    plt.close(fig)


def _json_ready(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _json_ready(v) for k, v in obj.items() if not str(k).startswith("_")}
    if isinstance(obj, (list, tuple)):
        return [_json_ready(v) for v in obj]
    if isinstance(obj, (np.floating, np.integer, np.bool_)):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def write_characterisation(
    result: Characterisation, out_dir: str | Path, *, overwrite: bool = False
) -> Path:
    """Write the four output files (atomically, after checking the profile loads back)."""
    import tomllib

    from optdfa.outputs import atomic_write_json, atomic_write_text, ensure_writable_dir

    out = Path(out_dir).expanduser()
    existing = [f for f in OUTPUT_FILES if (out / f).exists()]
    if existing and not overwrite:
        raise OptdfaError(
            f"{out} already holds a characterisation ({', '.join(existing)}); pass --overwrite "
            f"or choose another --out"
        )
    text = profile_toml(result)
    reloaded = profile_from_dict(tomllib.loads(text), name=result.profile.name)
    if reloaded != result.profile:
        raise OptdfaError("internal error: the written profile does not load back identically")
    report = report_markdown(result)
    payload = _json_ready(result.to_json())
    out, _ = ensure_writable_dir(out)
    plot_characterisation(result, out / "characterisation.png")
    atomic_write_json(out / "characterisation.json", payload)
    atomic_write_text(out / "report.md", report)
    atomic_write_text(out / "profile.toml", text)
    return out
