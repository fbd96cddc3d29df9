"""Photonic differential privacy of DFA (Ohana et al., NeurIPS 2021): ε from the device's noise.

- :mod:`~optdfa.privacy.mechanism` — the Gaussian mechanism a private DFA step runs on the OPU:
  noise multiplier from the profile's noise floor or a characterisation, and the sensitivity of
  the clipped, fixed-scale encoded error;
- :mod:`~optdfa.privacy.accountant` — (ε, δ) from opacus's Rényi-DP accountant;
- :mod:`~optdfa.privacy.report` — ε per epoch of a run, and the noise needed for target ε;
- :mod:`~optdfa.privacy.hook` — ε in every epoch's metrics line (``optdfa train --dp-delta``).

Derivation and assumptions: ``docs/privacy.md``.
"""

from optdfa.privacy.accountant import epsilon, epsilons_per_epoch, noise_multiplier_for
from optdfa.privacy.mechanism import ASSUMPTIONS, PhotonicMechanism, photonic_mechanism
from optdfa.privacy.report import privacy_report

__all__ = [
    "ASSUMPTIONS",
    "PhotonicMechanism",
    "epsilon",
    "epsilons_per_epoch",
    "noise_multiplier_for",
    "photonic_mechanism",
    "privacy_report",
]
