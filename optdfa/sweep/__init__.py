"""Sweeps: grids of training runs over training and hardware-profile fields × seeds.

- :mod:`~optdfa.sweep.spec` — the sweep file (TOML), validated before anything runs;
- :mod:`~optdfa.sweep.runner` — parallel worker processes, atomic result lines, resume;
- :mod:`~optdfa.sweep.results` — ``results.jsonl`` / ``results.csv``;
- :mod:`~optdfa.sweep.projection` — fidelity and SNR of the feedback projection;
- :mod:`~optdfa.sweep.report` — plots and the markdown summary.
"""

from optdfa.sweep.runner import SweepOutcome, run_sweep
from optdfa.sweep.spec import Point, SweepSpec, load_sweep, sweep_from_dict

__all__ = ["Point", "SweepOutcome", "SweepSpec", "load_sweep", "run_sweep", "sweep_from_dict"]
