"""Alignment metrics against hand computations and statistical bounds."""

from __future__ import annotations

import math

import pytest
import torch

from optdfa.alignment import (
    SINGULAR_KAPPA,
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


def test_cosine_matches_hand_value_and_rejects_zero():
    a, b = torch.tensor([1.0, 2.0, 3.0]), torch.tensor([4.0, 5.0, 6.0])
    assert cosine(a, b) == pytest.approx(32 / math.sqrt(14 * 77), abs=1e-12)
    assert cosine(a, torch.zeros(3)) is None
    with pytest.raises(ValueError):
        cosine(a, torch.ones(4))


def test_per_sample_cosine_marks_zero_samples_and_signal_mean_skips_them():
    a = torch.tensor([[1.0, 0.0], [0.0, 0.0], [1.0, 1.0]])
    b = torch.tensor([[1.0, 1.0], [1.0, 0.0], [-1.0, -1.0]])
    cos = per_sample_cosine(a, b)
    assert cos[0] == pytest.approx(1 / math.sqrt(2))
    assert math.isnan(cos[1])
    assert cos[2] == pytest.approx(-1.0)
    values = signal_alignment([a], [b])
    assert values.layers[0] == pytest.approx((1 / math.sqrt(2) - 1) / 2)


def test_signal_alignment_of_a_signal_with_itself_is_one_and_total_concatenates():
    gen = torch.Generator().manual_seed(0)
    s1, s2 = torch.randn(8, 5, generator=gen), torch.randn(8, 3, 2, generator=gen)
    same = signal_alignment([s1, s2, None], [s1, s2, None])
    assert same.layers[:2] == pytest.approx([1.0, 1.0], abs=1e-12)
    assert same.layers[2] is None and same.total == pytest.approx(1.0, abs=1e-12)
    # total: cosine of the per-sample concatenation (here: layer 1 agrees, layer 2 is negated)
    mixed = signal_alignment([s1, s2], [s1, -s2])
    cat_a = torch.cat([s1, s2.reshape(8, -1)], 1)
    cat_b = torch.cat([s1, -s2.reshape(8, -1)], 1)
    expected = float(torch.nn.functional.cosine_similarity(cat_a, cat_b, dim=1).mean())
    assert mixed.layers == pytest.approx([1.0, -1.0], abs=1e-12)
    assert mixed.total == pytest.approx(expected, abs=1e-6)


def test_unrelated_random_signals_have_alignment_near_zero():
    """Independent isotropic vectors in d dims: cos has mean 0 and variance 1/d, so the mean of
    n per-sample cosines has standard deviation 1/sqrt(n·d); we allow 5 of them."""
    gen = torch.Generator().manual_seed(1)
    n, d = 256, 400
    a, b = torch.randn(n, d, generator=gen), torch.randn(n, d, generator=gen)
    value = signal_alignment([a], [b]).layers[0]
    assert abs(value) < 5 / math.sqrt(n * d)
    # and the per-sample spread matches 1/sqrt(d)
    spread = float(per_sample_cosine(a, b).std())
    assert spread == pytest.approx(1 / math.sqrt(d), rel=0.2)
    # whole-update cosine of two unrelated gradients: |cos| < 5/sqrt(d)
    w1, w2 = torch.randn(50, 40, generator=gen), torch.randn(50, 40, generator=gen)
    update = update_alignment([[w1]], [[w2]])
    assert abs(update.layers[0]) < 5 / math.sqrt(2000)


def test_update_alignment_concatenates_parameters_and_total_over_chosen_layers():
    w, bias = torch.tensor([[1.0, 0.0]]), torch.tensor([1.0])
    values = update_alignment(
        [[w, bias], [torch.tensor([2.0])]],
        [[w, -bias], [torch.tensor([-1.0])]],
        total_over=[0],
    )
    assert values.layers == pytest.approx([0.0, -1.0])
    assert values.total == pytest.approx(0.0)


def test_weight_alignment_matches_hand_computation():
    # B_l is (n_out, width_l): n_out = 2, hidden widths 3 (out) and 2 (in)
    b_out = torch.tensor([[1.0, 0.0, 2.0], [0.0, 1.0, 1.0]])
    b_in = torch.tensor([[1.0, 1.0], [0.0, 2.0]])
    target = dfa_weight_target(b_out, b_in)
    assert torch.equal(
        target, torch.tensor([[1.0, 1.0], [0.0, 2.0], [2.0, 4.0]], dtype=torch.float64)
    )
    w_hidden = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    w_output = torch.tensor([[1.0, 0.0], [0.0, 1.0]])  # (n_out, width_in) vs B_in itself
    assert torch.equal(dfa_weight_target(None, b_in), b_in)
    assert dfa_weight_target(b_out, None) is None
    values = weight_alignment(
        [None, w_hidden, w_output], [None, target, dfa_weight_target(None, b_in)]
    )
    # <W,T> = 1+0+0+2+2+4 = 9, |W| = 2, |T| = sqrt(26); output: 3 / (sqrt2 * sqrt6)
    assert values.layers[0] is None
    assert values.layers[1] == pytest.approx(9 / (2 * math.sqrt(26)), abs=1e-12)
    assert values.layers[2] == pytest.approx(math.sqrt(3) / 2, abs=1e-12)
    assert values.total == pytest.approx(12 / math.sqrt(6 * 32), abs=1e-12)
    with pytest.raises(ValueError):
        weight_alignment([torch.ones(2, 2)], [torch.ones(3, 2)])


def test_alignment_matrix_recovers_a_constructed_matrix_and_its_condition_number():
    gen = torch.Generator().manual_seed(2)
    b_out = torch.randn(3, 40, generator=gen, dtype=torch.float64)
    b_in = torch.randn(3, 30, generator=gen, dtype=torch.float64)
    q, _ = torch.linalg.qr(torch.randn(3, 3, generator=gen, dtype=torch.float64))
    a = q @ torch.diag(torch.tensor([1.0, 2.0, 4.0], dtype=torch.float64)) @ q.T
    w = b_out.T @ a @ b_in
    assert torch.allclose(alignment_matrix(w, b_out, b_in), a, atol=1e-10)
    assert condition_number(alignment_matrix(w, b_out, b_in)) == pytest.approx(4.0, rel=1e-9)
    w_out = a @ b_in  # output layer: W_L = A B_{L-1}
    assert torch.allclose(alignment_matrix(w_out, None, b_in), a, atol=1e-10)
    # A ∝ I gives perfect weight alignment and κ = 1
    w_aligned = 0.3 * b_out.T @ b_in
    assert cosine(w_aligned, dfa_weight_target(b_out, b_in)) == pytest.approx(1.0, abs=1e-12)
    assert condition_number(alignment_matrix(w_aligned, b_out, b_in)) == pytest.approx(1.0)


def test_condition_number_of_singular_and_rectangular_matrices():
    assert condition_number(torch.tensor([[1.0, 0.0], [0.0, 0.0]])) == SINGULAR_KAPPA
    assert condition_number(torch.zeros(2, 2)) == SINGULAR_KAPPA
    assert condition_number(torch.tensor([[3.0, 0.0, 0.0], [0.0, 1.0, 0.0]])) == pytest.approx(3)


def test_effective_feedback_of_conv_blocks_sums_positions_per_channel():
    # n_out = 2, a conv point of shape (C=3, H=2, W=2): 12 columns, channel-major
    block = torch.arange(24, dtype=torch.float64).reshape(2, 12)
    eff = effective_feedback(block, (3, 2, 2))
    assert eff.shape == (2, 3)
    assert eff[0, 0] == 0 + 1 + 2 + 3 and eff[1, 2] == 20 + 21 + 22 + 23
    dense = torch.randn(2, 7, generator=torch.Generator().manual_seed(3))
    assert effective_feedback(dense, (7,)) is dense
    # a constructed block whose position sums are diag(1, 2) and a zero third channel
    conv = torch.zeros(2, 3, 1, 2, dtype=torch.float64)
    conv[0, 0, 0, :] = 0.5
    conv[1, 1, 0, :] = 1.0
    assert feedback_conditioning(conv.reshape(2, 6), (3, 1, 2)) == pytest.approx(2.0)


def test_feedback_with_fewer_channels_than_outputs_is_singular():
    # 3 error directions cannot all reach 2 channels: some errors give no feedback at all
    block = torch.randn(3, 2 * 4 * 4, generator=torch.Generator().manual_seed(4))
    assert feedback_conditioning(block, (2, 4, 4)) == SINGULAR_KAPPA
    assert feedback_conditioning(block[:, :2], (2,)) == SINGULAR_KAPPA
