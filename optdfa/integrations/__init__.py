"""Bridges to other software: :mod:`~optdfa.integrations.lightonml` (LightOn's OPU library).

- :mod:`~optdfa.integrations.lightonml_compat` — which lightonml versions work, importing it with
  one clear error (and the install command) when it is missing, and the mapping of LightOn
  driver errors (device not found, busy, too old) to :class:`~optdfa.errors.OptdfaError`;
- :mod:`~optdfa.integrations.lightonml` — :class:`SimulatedOpuDevice`, a drop-in replacement
  for lightonml's simulated device that adds optdfa's camera model and medium drift.
"""
