"""Alignment diagnostics: how well a feedback-alignment update agrees with backprop.

* :mod:`optdfa.alignment.metrics`: pure functions of tensors (cosines, weight alignment,
  alignment matrices, condition numbers);
* :func:`measure_alignment`: one measurement of a model's current update on a batch;
* :class:`AlignmentHook`: the same, every N steps inside :class:`optdfa.Trainer`
  (``TrainConfig.align_every`` / ``optdfa train --align-every N``).

Definitions and the log schema: ``docs/alignment.md``.
"""

from optdfa.alignment.hook import AlignmentHook, average_lines
from optdfa.alignment.measure import (
    QUANTITIES,
    REFERENCE_QUANTITIES,
    LayerInfo,
    Measurement,
    measure_alignment,
    reference_feedback,
    reference_layout,
)
from optdfa.alignment.metrics import (
    SINGULAR_KAPPA,
    LayerValues,
    alignment_matrix,
    condition_number,
    cosine,
    dfa_weight_target,
    effective_feedback,
    feedback_conditioning,
    per_sample_cosine,
    signal_alignment,
    update_alignment,
    weight_alignment,
)

__all__ = [
    "QUANTITIES",
    "REFERENCE_QUANTITIES",
    "SINGULAR_KAPPA",
    "AlignmentHook",
    "LayerInfo",
    "LayerValues",
    "Measurement",
    "alignment_matrix",
    "average_lines",
    "condition_number",
    "cosine",
    "dfa_weight_target",
    "effective_feedback",
    "feedback_conditioning",
    "measure_alignment",
    "per_sample_cosine",
    "reference_feedback",
    "reference_layout",
    "signal_alignment",
    "update_alignment",
    "weight_alignment",
]
