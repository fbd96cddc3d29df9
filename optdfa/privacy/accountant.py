"""(ε, δ) of a subsampled Gaussian mechanism, from opacus's Rényi-DP accountant.

A DFA training run under the photonic-DP model (``docs/privacy.md``) is ``steps`` compositions of
the sampled Gaussian mechanism with noise multiplier ``z`` (noise std / sensitivity) and sample
rate ``q = batch / dataset size``. The accounting is opacus's (:class:`opacus.accountants.
RDPAccountant`: RDP of the sampled Gaussian mechanism, Mironov et al. 2019, converted to (ε, δ)
at the best order), not ours.
"""

from __future__ import annotations

import math
import warnings

from opacus.accountants import RDPAccountant
from opacus.accountants.analysis import rdp as opacus_rdp

from optdfa.errors import OptdfaError

#: Rényi orders searched: opacus's defaults plus larger ones (for small ε)
ORDERS = list(RDPAccountant.DEFAULT_ALPHAS) + [80, 128, 256, 512]


def _check(noise_multiplier: float, sample_rate: float, steps: int, delta: float) -> None:
    if not (math.isfinite(noise_multiplier) and noise_multiplier >= 0):
        raise OptdfaError(
            f"the noise multiplier must be a non-negative number, got {noise_multiplier}"
        )
    if not 0 < sample_rate <= 1:
        raise OptdfaError(f"the sample rate must be in (0, 1], got {sample_rate}")
    if not (isinstance(steps, int) and steps >= 0):
        raise OptdfaError(f"steps must be a non-negative integer, got {steps}")
    if not 0 < delta < 1:
        raise OptdfaError(f"delta must be in (0, 1), got {delta}")


def epsilon(noise_multiplier: float, sample_rate: float, steps: int, delta: float) -> float:
    """ε after ``steps`` sampled Gaussian steps (``inf`` when there is no noise)."""
    _check(noise_multiplier, sample_rate, steps, delta)
    if steps == 0:
        return 0.0
    if noise_multiplier == 0:
        return math.inf
    accountant = RDPAccountant()
    accountant.history.append((float(noise_multiplier), float(sample_rate), int(steps)))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "optimal order is the smallest/largest alpha"
        return float(accountant.get_epsilon(delta, alphas=ORDERS))


def _epsilon_from_rdp(rdp_one_step: list[float], steps: int, delta: float) -> float:
    if steps == 0:
        return 0.0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        eps, _ = opacus_rdp.get_privacy_spent(
            orders=ORDERS, rdp=[r * steps for r in rdp_one_step], delta=delta
        )
    return float(eps)


def _rdp_one_step(noise_multiplier: float, sample_rate: float) -> list[float]:
    return list(
        opacus_rdp.compute_rdp(
            q=sample_rate, noise_multiplier=noise_multiplier, steps=1, orders=ORDERS
        )
    )


def epsilons_per_epoch(
    noise_multiplier: float, sample_rate: float, steps_per_epoch: int, epochs: int, delta: float
) -> list[float]:
    """ε after each of ``epochs`` epochs (RDP composes linearly: one RDP curve, scaled per epoch)."""
    _check(noise_multiplier, sample_rate, steps_per_epoch, delta)
    if noise_multiplier == 0:
        return [math.inf] * epochs
    one = _rdp_one_step(noise_multiplier, sample_rate)
    return [_epsilon_from_rdp(one, steps_per_epoch * k, delta) for k in range(1, epochs + 1)]


def noise_multiplier_for(
    target_epsilon: float, sample_rate: float, steps: int, delta: float, *, rtol: float = 3e-3
) -> float:
    """The smallest noise multiplier giving ``ε ≤ target_epsilon`` (to ``rtol``; log bisection)."""
    if not target_epsilon > 0:
        raise OptdfaError(f"the target ε must be positive, got {target_epsilon}")
    _check(1.0, sample_rate, steps, delta)

    def eps(z: float) -> float:
        return _epsilon_from_rdp(_rdp_one_step(z, sample_rate), steps, delta)

    lo, hi = 1e-3, 1.0
    while eps(hi) > target_epsilon:
        lo, hi = hi, 4 * hi
        if hi > 1e6:
            raise OptdfaError(f"no noise multiplier below 1e6 reaches ε = {target_epsilon}")
    while hi / lo > 1 + rtol:
        mid = math.sqrt(lo * hi)
        if eps(mid) > target_epsilon:
            lo = mid
        else:
            hi = mid
    return hi
