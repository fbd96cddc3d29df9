"""The training hook that reports ε after every epoch of a private DFA run."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from optdfa.privacy.accountant import epsilon
from optdfa.privacy.mechanism import PhotonicMechanism, photonic_mechanism
from optdfa.training import TrainingHook

if TYPE_CHECKING:
    from optdfa.training import Trainer


class PrivacyHook(TrainingHook):
    """Adds ``dp_epsilon`` (null when infinite) and ``dp_noise_multiplier`` to each epoch's line.

    The mechanism is derived from the backend once (profile noise floor: no device frames are
    spent, so training is unchanged); ε counts the optimizer steps taken so far at sample rate
    ``batch / training samples`` (opacus's RDP accountant).
    """

    def __init__(self, delta: float) -> None:
        self.delta = delta
        self.mechanism: PhotonicMechanism | None = None

    def ensure_mechanism(self, trainer: Trainer) -> PhotonicMechanism:
        if self.mechanism is None:
            self.mechanism = photonic_mechanism(trainer.rule.backend)
        return self.mechanism

    def on_epoch_end(self, trainer: Trainer, metrics: dict[str, Any]) -> None:
        mech = self.ensure_mechanism(trainer)
        q = min(1.0, trainer.config.batch_size / len(trainer.data.x_train))
        eps = epsilon(mech.noise_multiplier, q, trainer.step, self.delta)
        metrics["dp_epsilon"] = None if math.isinf(eps) else eps
        metrics["dp_delta"] = self.delta
        metrics["dp_noise_multiplier"] = mech.noise_multiplier
