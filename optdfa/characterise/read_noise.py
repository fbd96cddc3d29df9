"""Read noise and black level by maximum likelihood on the raw integer codes (quantised model)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.optimize import minimize
from scipy.special import ndtr

from optdfa.characterise.acquisition import Series
from optdfa.errors import OptdfaError

#: pixels used by the read-noise likelihood (the first ones of the region of interest)
LIKELIHOOD_PIXELS = 2048
#: Newton iterations of the per-pixel rates in the read-noise likelihood
NEWTON_ITERATIONS = 25


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
