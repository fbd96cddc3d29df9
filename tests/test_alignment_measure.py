"""measure_alignment on real models: exact limits (1 for bp, 1 for DFA whose feedback is the true
backward path), FA's weight alignment, CNN layouts, and no side effects."""

from __future__ import annotations

import pytest
import torch

from optdfa.alignment import (
    SINGULAR_KAPPA,
    cosine,
    dfa_weight_target,
    measure_alignment,
)
from optdfa.errors import OptdfaError
from optdfa.models import build_model
from optdfa.rules import cross_entropy, half_squared_error, make_rule
from optdfa.seeding import torch_generator


def _setup(method, hidden=(16,), activation="tanh", n_in=20, n_out=3, seed=0, model="mlp"):
    gen = torch_generator(seed, "test-data")
    shape = (n_in,) if model == "mlp" else (1, 8, 8)
    x = torch.randn(32, *shape, generator=gen)
    y = torch.randint(0, n_out, (32,), generator=gen)
    net = build_model(
        model,
        shape,
        n_out,
        hidden=list(hidden),
        activation=activation,
        channels=[4, 6],
        kernel_size=3,
        generator=torch_generator(seed, "init"),
    )
    rule = make_rule(method, seed=seed)
    rule.attach(net, x[:2])
    return net, rule, x, y


def _step(net, rule, x, y, loss_fn=cross_entropy):
    net.zero_grad(set_to_none=True)
    rule.compute_gradients(x, y, loss_fn)
    return measure_alignment(net, rule, x, y, loss_fn)


def test_backprop_aligned_with_itself_is_one():
    net, rule, x, y = _setup("bp", hidden=(16, 12))
    m = _step(net, rule, x, y)
    assert [info.name for info in m.layers] == ["1", "4", "7"]
    assert m.values["signal"].layers[:2] == pytest.approx([1.0, 1.0], abs=1e-6)
    assert m.values["signal"].layers[2] is None  # the output layer feeds no feedback point
    assert m.values["update"].layers == pytest.approx([1.0, 1.0, 1.0], abs=1e-6)
    assert m.values["update"].total == pytest.approx(1.0, abs=1e-6)
    assert m.values["weight"].total is None  # bp has no feedback matrix unless given one


def test_dfa_whose_feedback_is_the_true_backward_path_is_perfectly_aligned():
    # one hidden layer: BP's signal is (e W_2) ⊙ f'(a_1), DFA's (e B_1) ⊙ f'(a_1): equal if B_1 = W_2
    net, rule, x, y = _setup("dfa", hidden=(16,), activation="tanh")
    rule.backend.B = net[-1].weight.detach().clone()
    m = _step(net, rule, x, y)
    assert m.values["signal"].layers[0] == pytest.approx(1.0, abs=1e-6)
    assert m.values["update"].layers == pytest.approx([1.0, 1.0], abs=1e-6)
    assert m.values["weight"].layers[1] == pytest.approx(1.0, abs=1e-6)  # W_2 vs B_1 = W_2


def test_deep_linear_dfa_with_products_of_weights_as_feedback_is_perfectly_aligned():
    # linear network: ∂L/∂h_1 = e W_3 W_2 and ∂L/∂h_2 = e W_3, so B = [W_3 W_2 | W_3] is exact
    net, rule, x, y = _setup("dfa", hidden=(10, 8), activation="linear")
    w2, w3 = net[4].weight.detach(), net[7].weight.detach()
    rule.backend.B = torch.cat([w3 @ w2, w3], dim=1).clone()
    m = _step(net, rule, x, y)
    assert m.values["signal"].layers[:2] == pytest.approx([1.0, 1.0], abs=1e-5)
    assert m.values["signal"].total == pytest.approx(1.0, abs=1e-5)
    assert m.values["update"].layers == pytest.approx([1.0, 1.0, 1.0], abs=1e-5)


def test_dfa_weight_alignment_and_conditioning_use_the_layout_blocks():
    net, rule, x, y = _setup("dfa", hidden=(16, 12))
    m = _step(net, rule, x, y)
    B = rule.backend.feedback_matrix()
    b1, b2 = B[:, :16], B[:, 16:]
    w2, w3 = net[4].weight, net[7].weight
    weight = m.values["weight"]
    assert weight.layers[0] is None  # the first layer is fed by the input
    assert weight.layers[1] == pytest.approx(cosine(w2, dfa_weight_target(b2, b1)), abs=1e-12)
    assert weight.layers[2] == pytest.approx(cosine(w3, b2), abs=1e-12)
    cond = m.values["cond"].layers
    assert cond[0] is None and 1.0 <= cond[1] < SINGULAR_KAPPA and cond[2] >= 1.0
    fb = m.values["feedback_cond"].layers
    assert fb[2] is None and fb[0] >= 1.0 and fb[1] >= 1.0


def test_fa_weight_alignment_is_the_angle_between_w_and_its_feedback_weight():
    net, rule, x, y = _setup("fa", hidden=(16, 12))
    m = _step(net, rule, x, y)
    weight = m.values["weight"]
    assert weight.layers[0] is None  # the first layer's feedback weight never carries a signal
    for i, idx in ((1, 4), (2, 7)):
        expected = cosine(net[idx].weight, net[idx].feedback_weight)
        assert weight.layers[i] == pytest.approx(expected, abs=1e-12)
    # FA's output layer is trained by the true error: its update equals backprop's
    assert m.values["update"].layers[2] == pytest.approx(1.0, abs=1e-6)
    assert -1.0 <= m.values["signal"].layers[1] <= 1.0


def test_fa_with_feedback_equal_to_the_weights_is_backprop():
    net, rule, x, y = _setup("fa", hidden=(16, 12))
    for idx in (1, 4, 7):
        net[idx].feedback_weight.copy_(net[idx].weight.detach())
    m = _step(net, rule, x, y)
    assert m.values["signal"].layers[:2] == pytest.approx([1.0, 1.0], abs=1e-6)
    assert m.values["update"].layers == pytest.approx([1.0, 1.0, 1.0], abs=1e-6)
    assert m.values["weight"].total == pytest.approx(1.0, abs=1e-6)


def test_cnn_measurement_has_conv_feedback_conditioning_and_no_conv_weight_alignment():
    net, rule, x, y = _setup("dfa", hidden=(12,), model="cnn", activation="relu")
    m = _step(net, rule, x, y)
    kinds = [info.kind for info in m.layers]
    assert kinds == ["Conv2d", "Conv2d", "Linear", "Linear"]
    assert m.values["weight"].layers[:3] == [None, None, None]  # pooled inputs: no W ~ BᵀB
    assert m.values["weight"].layers[3] is not None  # output layer fed by the dense point
    fb = m.values["feedback_cond"].layers
    # conv point 2 has 6 channels for 3 outputs; conv point 1 has 4 channels
    assert all(v is not None and v >= 1.0 for v in fb[:3]) and fb[3] is None
    assert all(v is not None for v in m.values["signal"].layers[:3])


def test_measurement_changes_no_gradient_no_weight_and_no_random_state():
    net, rule, x, y = _setup("dfa", hidden=(16, 12))
    net.zero_grad(set_to_none=True)
    rule.compute_gradients(x, y, half_squared_error_one_hot := _one_hot_loss())
    grads = [p.grad.clone() for p in net.parameters()]
    weights = [p.detach().clone() for p in net.parameters()]
    rng = torch.get_rng_state()
    measure_alignment(net, rule, x, y, half_squared_error_one_hot)
    assert all(torch.equal(g, p.grad) for g, p in zip(grads, net.parameters(), strict=True))
    assert all(torch.equal(w, p) for w, p in zip(weights, net.parameters(), strict=True))
    assert torch.equal(rng, torch.get_rng_state())


def _one_hot_loss():
    def loss(out, y):
        return half_squared_error(out, torch.nn.functional.one_hot(y, out.shape[1]).float())

    return loss


def test_measurement_errors_are_clear():
    net, rule, x, y = _setup("dfa")
    with pytest.raises(OptdfaError, match="after rule.compute_gradients"):
        measure_alignment(net, rule, x, y, cross_entropy)
    other, _, _, _ = _setup("dfa")
    with pytest.raises(OptdfaError, match="not attached"):
        measure_alignment(other, rule, x, y, cross_entropy)
