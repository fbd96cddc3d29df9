"""The transmission matrix: element-wise seeded, circular Gaussian, identical whatever the tiling."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from optdfa.optics import FIELD_PER_LSB, ROW_BLOCK, TransmissionMatrix
from optdfa.optics.medium import LEVEL_MAX, LEVELS, QUANT_STD


def test_entries_are_unit_circular_gaussian():
    h = TransmissionMatrix(4000, 64, seed=3).entries()
    assert h.shape == (4000, 64) and h.dtype == torch.complex64
    power = h.abs().square().mean()
    assert abs(float(power) - 1.0) < 0.01  # E|H|² = 1 (256 000 entries: 0.2 % sd)
    assert abs(complex(h.mean())) < 0.01
    assert abs(complex((h * h).mean())) < 0.01  # circular: E[H²] = 0
    assert abs(float((h.real * h.imag).mean())) < 0.01
    assert abs(float(h.real.var()) - 0.5) < 0.01


def test_levels_are_quantised_gaussians():
    # the level table is the quantile function of round(20 z) at resolution 2^-16
    levels = torch.from_numpy(LEVELS.astype(np.int64))
    values, counts = torch.unique(levels, return_counts=True)
    z = torch.distributions.Normal(0.0, 1.0)
    exact = z.cdf((values.double() + 0.5) / QUANT_STD) - z.cdf((values.double() - 0.5) / QUANT_STD)
    assert float((counts.double() / 2**16 - exact).abs().max()) <= 2**-16
    assert torch.equal(levels, -levels.flip(0))  # exactly symmetric
    assert FIELD_PER_LSB**2 * 2 * float(levels.double().square().mean()) == pytest.approx(
        1, abs=1e-12
    )
    q = TransmissionMatrix(2000, 50, seed=1).dense_levels()
    assert q.dtype == torch.int8 and int(q.abs().max()) <= LEVEL_MAX == 86
    assert abs(float(q.float().std()) - QUANT_STD) < 0.2


def test_any_tiling_gives_the_same_matrix():
    tm = TransmissionMatrix(3000, 40, seed=7)
    dense = tm.dense_levels()  # (n_in, 2, n_out)
    # arbitrary, overlapping and out-of-order tiles cut from the fixed grid
    for rows, cols in [((0, 3000), range(40)), ((17, 1234), [39, 3, 5]), ((2999, 3000), [0])]:
        tile = tm.levels(rows, cols)
        assert torch.equal(tile, dense[list(cols), :, rows[0] : rows[1]].permute(1, 2, 0))
    # one element, defined by (seed, row, col) alone
    assert torch.equal(tm.levels((1500, 1501), [12])[:, 0, 0], dense[12, :, 1500])


def test_streamed_product_equals_dense_bit_for_bit_across_row_blocks():
    n_out = ROW_BLOCK + 3000  # crosses a row block of the generation grid
    frames = torch.rand(5, 12, generator=torch.Generator().manual_seed(0)) < 0.5
    frames[2] = False  # a dark frame
    dense = TransmissionMatrix(n_out, 12, seed=11).product(frames)
    streamed_tm = TransmissionMatrix(n_out, 12, seed=11, dense_budget_bytes=0, workers=2)
    streamed = streamed_tm.product(frames)
    assert not streamed_tm.fits_dense
    assert torch.equal(dense, streamed)
    assert torch.equal(streamed[2], torch.zeros_like(streamed[2]))
    # a single frame (the full-scale case) is summed by another code path: same numbers
    assert torch.equal(streamed_tm.product(frames[3:4]), dense[3:4])
    # and it is the exact integer sum of the selected columns
    q = streamed_tm.levels((n_out - 50, n_out), range(12)).to(torch.int64)  # (2, 50, 12)
    exact = torch.einsum("rjk,nk->nrj", q, frames.to(torch.int64)).float()
    assert torch.equal(streamed[:, :, -50:], exact)


def test_seed_defines_the_matrix():
    a = TransmissionMatrix(500, 8, seed=5).dense_levels()
    b = TransmissionMatrix(500, 8, seed=5).dense_levels()
    c = TransmissionMatrix(500, 8, seed=6).dense_levels()
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
