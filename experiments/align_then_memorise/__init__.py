"""The "align, then memorise" study (Refinetti et al., ICML 2021) with optdfa's diagnostics.

One command per experiment, from the repository root::

    python -m experiments.align_then_memorise.two_phases      [--quick]
    python -m experiments.align_then_memorise.degeneracy      [--quick]
    python -m experiments.align_then_memorise.layer_order     [--quick] --data-dir DIR
    python -m experiments.align_then_memorise.cnn_failure     [--quick] --data-dir DIR

Results (figures + JSON) go to ``docs/results/`` (``--quick``: ``runs/align-then-memorise-quick``);
``docs/results/align-then-memorise.md`` discusses them.
"""
