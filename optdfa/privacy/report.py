"""(ε, δ) of a private DFA run: the photonic mechanism, the run's sampling, opacus's accountant."""

from __future__ import annotations

import math
from typing import Any

from optdfa.privacy.accountant import epsilons_per_epoch, noise_multiplier_for
from optdfa.privacy.mechanism import PhotonicMechanism

#: target ε values for which the report gives the noise multiplier that would be needed
TARGETS = (1.0, 8.0)


def privacy_report(
    mechanism: PhotonicMechanism,
    *,
    batch_size: int,
    dataset_size: int,
    epochs: int,
    delta: float,
    clip_error: float | None = None,
    clip_activation: float | None = None,
) -> dict[str, Any]:
    """ε per epoch for the run, and what noise would reach the :data:`TARGETS`.

    ``noise_scale_needed[ε]`` is the factor by which the device noise std would have to grow
    (e.g. through a ``factor²`` smaller photon budget in the shot-noise limit, or added read
    noise) for the run to reach that ε; clipping does not change it (the bound cancels, see
    :mod:`optdfa.privacy.mechanism`).
    """
    q = min(1.0, batch_size / dataset_size)
    steps_per_epoch = math.ceil(dataset_size / batch_size)
    eps = epsilons_per_epoch(mechanism.noise_multiplier, q, steps_per_epoch, epochs, delta)
    needed = {}
    for target in TARGETS:
        z = noise_multiplier_for(target, q, steps_per_epoch * epochs, delta)
        scale = z / mechanism.noise_multiplier if mechanism.noise_multiplier > 0 else math.inf
        needed[f"{target:g}"] = {"noise_multiplier": z, "noise_scale_needed": scale}
    return {
        "delta": delta,
        "sample_rate": q,
        "steps_per_epoch": steps_per_epoch,
        "epochs": epochs,
        "steps": steps_per_epoch * epochs,
        "clip_error": clip_error,
        "clip_activation": clip_activation,
        "epsilon_per_epoch": [None if math.isinf(e) else e for e in eps],
        "epsilon": None if math.isinf(eps[-1]) else eps[-1],
        "mechanism": mechanism.to_dict(),
        "targets": needed,
        "accountant": "opacus.accountants.RDPAccountant (sampled Gaussian mechanism, RDP)",
    }


def format_epsilon(value: float | None) -> str:
    if value is None or math.isinf(value):
        return "inf"
    return f"{value:.4g}"
