"""Datasets and the IDX reader."""

from optdfa.data.datasets import (
    DATA_DIR_ENV,
    DATASETS,
    Dataset,
    TeacherSpec,
    load_dataset,
)
from optdfa.data.idx import read_idx

__all__ = ["DATASETS", "DATA_DIR_ENV", "Dataset", "TeacherSpec", "load_dataset", "read_idx"]
