"""Shared fixtures: the real datasets in ../shared/datasets (skipped cleanly when absent)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
#: where the bit-exact MNIST / Fashion-MNIST copies live (override with OPTDFA_TEST_DATA)
SHARED_DATASETS = Path(os.environ.get("OPTDFA_TEST_DATA", REPO.parent / "shared" / "datasets"))


@pytest.fixture(scope="session")
def shared_datasets() -> Path:
    """Folder holding MNIST/raw and FashionMNIST/raw; skips the test if it is missing."""
    if not (SHARED_DATASETS / "MNIST" / "raw").is_dir():
        pytest.skip(f"real datasets not found at {SHARED_DATASETS} (set OPTDFA_TEST_DATA)")
    return SHARED_DATASETS


@pytest.fixture(autouse=True)
def _deterministic_threads():
    """Tests compare exact floats: keep torch's thread count fixed within a test."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)
