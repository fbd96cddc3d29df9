"""Photon transfer: drift-robust temporal variances and the quantisation-aware curve fit."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from scipy.optimize import least_squares

from optdfa.errors import OptdfaError


def lag_variances(y: np.ndarray, max_lag: int, chunk: int = 0) -> np.ndarray:
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
