"""DFA, FA and BP weight updates against hand-computed numpy references (float64, exact)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.signal import convolve2d, correlate2d
from scipy.special import softmax
from torch import nn

from optdfa import (
    Backprop,
    DirectFeedbackAlignment,
    FeedbackAlignment,
    FeedbackPoint,
    cross_entropy,
)

RTOL, ATOL = 1e-10, 1e-12


def _seeded(model: nn.Module, seed: int) -> nn.Module:
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=gen, dtype=p.dtype) * 0.7)
    return model


def _tiny_mlp() -> nn.Sequential:
    return _seeded(
        nn.Sequential(
            nn.Linear(5, 4),
            nn.Tanh(),
            FeedbackPoint(),
            nn.Linear(4, 3),
            nn.Tanh(),
            FeedbackPoint(),
            nn.Linear(3, 2),
        ).double(),
        1,
    )


def _batch(shape, n_classes=2, seed=2):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(*shape, generator=gen, dtype=torch.float64)
    y = torch.randint(0, n_classes, (shape[0],), generator=gen)
    return x, y


def _error(logits: np.ndarray, y: np.ndarray) -> np.ndarray:
    """e = ∂(mean CE)/∂logits = (softmax − onehot)/batch."""
    onehot = np.eye(logits.shape[1])[y]
    return (softmax(logits, axis=1) - onehot) / len(y)


def _mlp_forward(model, x):
    W = [m.weight.detach().numpy() for m in model if isinstance(m, nn.Linear)]
    b = [m.bias.detach().numpy() for m in model if isinstance(m, nn.Linear)]
    h0 = x.numpy()
    h1 = np.tanh(h0 @ W[0].T + b[0])
    h2 = np.tanh(h1 @ W[1].T + b[1])
    out = h2 @ W[2].T + b[2]
    return W, (h0, h1, h2), out


def _grads(model):
    return [
        (m.weight.grad.numpy(), m.bias.grad.numpy())
        for m in model
        if isinstance(m, (nn.Linear, nn.Conv2d))
    ]


def test_dfa_mlp_matches_hand_computation():
    model = _tiny_mlp()
    x, y = _batch((3, 5))
    rule = DirectFeedbackAlignment("digital", seed=7)
    rule.attach(model, x)
    W, (h0, h1, h2), out = _mlp_forward(model, x)
    rule.compute_gradients(x, y, cross_entropy)
    B = rule.backend.feedback_matrix().numpy()
    assert B.shape == (2, 4 + 3)
    e = _error(out, y.numpy())
    d1 = (e @ B[:, :4]) * (1 - h1**2)
    d2 = (e @ B[:, 4:]) * (1 - h2**2)
    expected = [(d1.T @ h0, d1.sum(0)), (d2.T @ h1, d2.sum(0)), (e.T @ h2, e.sum(0))]
    for (gw, gb), (ew, eb) in zip(_grads(model), expected, strict=True):
        np.testing.assert_allclose(gw, ew, rtol=RTOL, atol=ATOL)
        np.testing.assert_allclose(gb, eb, rtol=RTOL, atol=ATOL)


def test_fa_mlp_matches_hand_computation():
    model = _tiny_mlp()
    x, y = _batch((3, 5))
    rule = FeedbackAlignment(seed=3)
    rule.attach(model, x)
    W, (h0, h1, h2), out = _mlp_forward(model, x)
    F = [m.feedback_weight.numpy() for m in model if isinstance(m, nn.Linear)]
    assert all(f.shape == w.shape for f, w in zip(F, W, strict=True))
    rule.compute_gradients(x, y, cross_entropy)
    e = _error(out, y.numpy())
    d2 = (e @ F[2]) * (1 - h2**2)
    d1 = (d2 @ F[1]) * (1 - h1**2)
    expected = [(d1.T @ h0, d1.sum(0)), (d2.T @ h1, d2.sum(0)), (e.T @ h2, e.sum(0))]
    for (gw, gb), (ew, eb) in zip(_grads(model), expected, strict=True):
        np.testing.assert_allclose(gw, ew, rtol=RTOL, atol=ATOL)
        np.testing.assert_allclose(gb, eb, rtol=RTOL, atol=ATOL)


def _conv_same(x: np.ndarray, w: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Cross-correlation with 'same' zero padding: x (N, C, H, W), w (O, C, k, k) → (N, O, H, W)."""
    return np.stack(
        [
            np.stack(
                [
                    sum(correlate2d(xn[c], w[o, c], mode="same") for c in range(x.shape[1])) + b[o]
                    for o in range(w.shape[0])
                ]
            )
            for xn in x
        ]
    )


def _conv_weight_grad(x: np.ndarray, delta: np.ndarray, k: int) -> np.ndarray:
    pad = k // 2
    xp = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    return np.stack(
        [
            np.stack(
                [
                    sum(correlate2d(xp[n, c], delta[n, o], mode="valid") for n in range(x.shape[0]))
                    for c in range(x.shape[1])
                ]
            )
            for o in range(delta.shape[1])
        ]
    )


def _tiny_cnn(pool: bool) -> nn.Sequential:
    layers = [nn.Conv2d(1, 2, 3, padding=1), nn.ReLU(), FeedbackPoint()]
    if pool:
        layers += [nn.MaxPool2d(2), nn.Flatten(), nn.Linear(2 * 2 * 2, 3)]
    else:
        layers += [
            nn.Conv2d(2, 2, 3, padding=1),
            nn.ReLU(),
            FeedbackPoint(),
            nn.Flatten(),
            nn.Linear(2 * 4 * 4, 3),
        ]
    return _seeded(nn.Sequential(*layers).double(), 4)


def test_dfa_cnn_matches_hand_computation():
    model = _tiny_cnn(pool=True)
    x, y = _batch((3, 1, 4, 4), n_classes=3)
    rule = DirectFeedbackAlignment("digital", seed=5)
    rule.attach(model, x)
    assert rule.layout.blocks[0].shape == (2, 4, 4)  # the conv block is shaped like the conv output
    conv, lin = model[0], model[5]
    a1 = _conv_same(x.numpy(), conv.weight.detach().numpy(), conv.bias.detach().numpy())
    h1 = np.maximum(a1, 0)
    pooled = h1.reshape(3, 2, 2, 2, 2, 2).max(axis=(3, 5))
    out = pooled.reshape(3, -1) @ lin.weight.detach().numpy().T + lin.bias.detach().numpy()
    rule.compute_gradients(x, y, cross_entropy)
    B = rule.backend.feedback_matrix().numpy()
    e = _error(out, y.numpy())
    d1 = (e @ B).reshape(3, 2, 4, 4) * (a1 > 0)
    (gw_conv, gb_conv), (gw_lin, gb_lin) = _grads(model)
    np.testing.assert_allclose(gw_conv, _conv_weight_grad(x.numpy(), d1, 3), rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(gb_conv, d1.sum((0, 2, 3)), rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(gw_lin, e.T @ pooled.reshape(3, -1), rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(gb_lin, e.sum(0), rtol=RTOL, atol=ATOL)


def test_fa_cnn_matches_hand_computation():
    model = _tiny_cnn(pool=False)
    x, y = _batch((2, 1, 4, 4), n_classes=3)
    rule = FeedbackAlignment(seed=9)
    rule.attach(model, x)
    c1, c2, lin = model[0], model[3], model[7]
    w = lambda m: m.weight.detach().numpy()  # noqa: E731
    b = lambda m: m.bias.detach().numpy()  # noqa: E731
    a1 = _conv_same(x.numpy(), w(c1), b(c1))
    h1 = np.maximum(a1, 0)
    a2 = _conv_same(h1, w(c2), b(c2))
    h2 = np.maximum(a2, 0)
    out = h2.reshape(2, -1) @ w(lin).T + b(lin)
    rule.compute_gradients(x, y, cross_entropy)
    e = _error(out, y.numpy())
    d2 = (e @ lin.feedback_weight.numpy()).reshape(h2.shape) * (a2 > 0)
    F2 = c2.feedback_weight.numpy()
    grad_h1 = np.stack(
        [
            np.stack(
                [
                    sum(convolve2d(d2[n, o], F2[o, i], mode="same") for o in range(2))
                    for i in range(2)
                ]
            )
            for n in range(2)
        ]
    )
    d1 = grad_h1 * (a1 > 0)
    (g1w, g1b), (g2w, g2b), (glw, glb) = _grads(model)
    np.testing.assert_allclose(glw, e.T @ h2.reshape(2, -1), rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(g2w, _conv_weight_grad(h1, d2, 3), rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(g2b, d2.sum((0, 2, 3)), rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(g1w, _conv_weight_grad(x.numpy(), d1, 3), rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(g1b, d1.sum((0, 2, 3)), rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("make", [_tiny_mlp, lambda: _tiny_cnn(True)])
def test_bp_equals_plain_autograd(make):
    model, reference = make(), make()
    x, y = _batch(
        (3, 5) if isinstance(model[0], nn.Linear) else (3, 1, 4, 4),
        n_classes=2 if isinstance(model[0], nn.Linear) else 3,
    )
    rule = Backprop()
    rule.attach(model, x)
    rule.compute_gradients(x, y, cross_entropy)
    cross_entropy(reference(x), y).backward()
    for p, q in zip(model.parameters(), reference.parameters(), strict=True):
        assert torch.equal(p.grad, q.grad)


@pytest.mark.filterwarnings("ignore:Full backward hook")
def test_dfa_computes_no_input_gradient():
    """No backward pass through the network: no layer ever receives a gradient for its input."""
    model = _tiny_mlp()
    x, y = _batch((3, 5))
    seen = []
    for m in model:
        if isinstance(m, nn.Linear):
            m.register_full_backward_hook(lambda mod, gin, gout: seen.append(gin[0]))
    rule = DirectFeedbackAlignment("digital", seed=0)
    rule.attach(model, x)
    rule.compute_gradients(x, y, cross_entropy)
    assert len(seen) == 3 and all(g is None for g in seen)
    seen.clear()
    bp = Backprop()  # for contrast: BP does send gradients to the hidden layers' inputs
    bp.attach(model, x)
    bp.compute_gradients(x, y, cross_entropy)
    assert sum(g is not None for g in seen) == 2


def test_feedback_blocks_do_not_share_columns_and_have_documented_scale():
    from optdfa.backends import FeedbackLayout, create_backend

    layout = FeedbackLayout.from_shapes(10, [("a", (400,)), ("b", (8, 5, 5)), ("c", (50,))])
    assert [b.offset for b in layout.blocks] == [0, 400, 600]
    assert layout.n_feedback == 650
    backend = create_backend("digital")
    backend.setup(layout, seed=1, device=torch.device("cpu"), dtype=torch.float64)
    B = backend.feedback_matrix()
    for block in layout.blocks:
        cols = B[:, block.offset : block.offset + block.size]
        expected = 1 / np.sqrt(3 * block.size)
        # sample std of 10·size Gaussian entries: relative sd 1/sqrt(2·10·size) ≤ 2 %, bound 5 sd
        assert abs(cols.std().item() / expected - 1) < 5 / np.sqrt(2 * cols.numel())


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("batch", [1, 7, 100, 128])
def test_output_error_equals_autograd_bit_for_bit(dtype, batch):
    """DFA's graph-free ``e = ∂L/∂ŷ`` for cross-entropy is autograd's, to the last bit."""
    from optdfa.rules.base import half_squared_error, loss_and_error

    gen = torch.Generator().manual_seed(batch)
    for scale in (0.1, 1.0, 30.0):
        out = (torch.randn(batch, 10, generator=gen, dtype=dtype) * scale).requires_grad_()
        labels = torch.randint(0, 10, (batch,), generator=gen)
        values = torch.randn(batch, 10, generator=gen, dtype=dtype)
        for loss_fn, target in ((cross_entropy, labels), (half_squared_error, values)):
            loss = loss_fn(out, target)
            (expected,) = torch.autograd.grad(loss, out)
            got_loss, got_error = loss_and_error(loss_fn, out, target)
            assert torch.equal(got_loss, loss.detach()) and torch.equal(got_error, expected)
            assert not got_error.requires_grad and out.grad is None


def _generic_and_chain_grads(model_fn, x, y, *, prepare=None, steps=1):
    """Gradients of ``steps`` DFA gradient computations (no zeroing in between) through the
    generic autograd path and through the dense chain, on two copies of one model."""
    grads = []
    for use_chain in (False, True):
        model = model_fn()
        if prepare is not None:
            prepare(model)
        rule = DirectFeedbackAlignment("digital", seed=3)
        rule.attach(model, x)
        assert rule._chain is not None
        if not use_chain:
            rule._chain = None
        for _ in range(steps):
            rule.compute_gradients(x, y, cross_entropy)
        grads.append([None if p.grad is None else p.grad.clone() for p in model.parameters()])
    return grads


@pytest.mark.parametrize("activation", ["tanh", "relu"])
def test_dense_chain_gradients_equal_the_autograd_path_bit_for_bit(activation):
    from optdfa.models import build_model
    from optdfa.seeding import torch_generator

    def make():
        return build_model(
            "mlp",
            (1, 8, 8),
            10,
            hidden=[300, 200, 100],
            activation=activation,
            generator=torch_generator(4, "init"),
        )

    gen = torch.Generator().manual_seed(5)
    x, y = torch.randn(64, 1, 8, 8, generator=gen), torch.randint(0, 10, (64,), generator=gen)
    generic, chain = _generic_and_chain_grads(make, x, y, steps=2)  # 2: accumulation too
    assert all(torch.equal(a, b) for a, b in zip(generic, chain, strict=True))

    def freeze_first(model):
        model[1].weight.requires_grad_(False)

    generic, chain = _generic_and_chain_grads(make, x, y, prepare=freeze_first)
    assert generic[0] is None and chain[0] is None
    assert all(torch.equal(a, b) for a, b in zip(generic[1:], chain[1:], strict=True))


def test_dense_chain_only_for_plain_mlps_without_hooks():
    from optdfa.rules.dense_chain import DenseChain

    assert DenseChain.match(_tiny_mlp()) is not None
    assert DenseChain.match(_tiny_cnn(True)) is None
    odd = nn.Sequential(nn.Linear(5, 4), nn.Sigmoid(), FeedbackPoint(), nn.Linear(4, 2))
    assert DenseChain.match(odd) is None  # an activation it does not know: generic path
    model = _tiny_mlp()
    x, y = _batch((3, 5))
    rule = DirectFeedbackAlignment("digital", seed=0)
    rule.attach(model, x)
    assert rule._chain.applies()
    seen = []
    handle = model[3].register_forward_hook(lambda m, a, out: seen.append(out.shape))
    assert not rule._chain.applies()
    rule.compute_gradients(x, y, cross_entropy)
    assert seen == [(3, 3)]  # the generic path ran the module, so its hook saw it
    handle.remove()
    assert rule._chain.applies()
