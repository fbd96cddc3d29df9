"""Encoders (error → binary frames) and decoders (intensities → linear projection)."""

from __future__ import annotations

import pytest
import torch

from optdfa.errors import OptdfaError
from optdfa.optics import (
    BitPlaneEncoder,
    SimulatedOPU,
    StochasticTernaryEncoder,
    TernaryEncoder,
    load_profile,
    make_decoder,
    parse_encoder,
    unique_frames,
)


def test_ternary_threshold_and_least_squares_scale():
    e = torch.tensor([[1.0, -0.5, 0.05, -0.09, 0.2], [0.0, 0.0, 0.0, 0.0, 0.0]])
    enc = TernaryEncoder(0.1).encode(e)
    assert enc.frames.shape == (2, 2, 5) and enc.frames.dtype == torch.bool
    t = torch.tensor([1.0, -1.0, 0.0, 0.0, 1.0])  # |e| > 0.1·max|e| = 0.1
    assert torch.equal(enc.frames[0, 0], t > 0) and torch.equal(enc.frames[0, 1], t < 0)
    assert enc.scale[0] == pytest.approx((1.0 + 0.5 + 0.2) / 3)  # ⟨e,t⟩/‖t‖²
    assert torch.allclose(enc.decode()[0], enc.scale[0] * t)
    assert enc.scale[1] == 0 and not enc.frames[1].any()


def test_lighton_ternarisation_gives_softmax_errors_a_sum_they_do_not_have():
    # softmax errors sum to zero; one least-squares amplitude for both signs does not: the 9
    # small positive entries become as large as the kept negative one (docs/physics-model.md)
    logits = torch.randn(512, 10, generator=torch.Generator().manual_seed(0))
    error = torch.softmax(logits, 1) - torch.eye(10)[torch.arange(512) % 10]
    assert float(error.sum(1).abs().max()) < 1e-5
    lighton = TernaryEncoder(0.1).encode(error).decode()
    assert float((lighton.sum(1) / error.norm(dim=1)).mean()) > 0.3
    persistent = ((lighton - error) / error.norm(dim=1, keepdim=True)).mean(0)
    assert float(persistent @ torch.ones(10)) / (10**0.5 * float(persistent.norm())) > 0.9
    gen = torch.Generator().manual_seed(1)
    dithered = StochasticTernaryEncoder().encode(error.repeat(20, 1), gen).decode()
    assert abs(float((dithered.sum(1) / error.norm(dim=1).repeat(20)).mean())) < 0.03


def test_stochastic_ternarisation_is_unbiased():
    e = torch.tensor([[0.8, -0.3, 0.1, 0.0, -1.0]]).expand(20_000, -1)
    gen = torch.Generator().manual_seed(0)
    enc = StochasticTernaryEncoder().encode(e, gen)
    mean = enc.decode().mean(0)
    assert torch.allclose(mean, e[0], atol=0.02)
    with pytest.raises(ValueError, match="needs a torch.Generator"):
        StochasticTernaryEncoder().encode(e)


def test_bitplanes_recombine_with_powers_of_two():
    e = torch.tensor([[0.7, -0.35, 0.0, 1.0, -0.01]])
    enc = BitPlaneEncoder(3, dither=False).encode(e)
    assert enc.frames.shape == (1, 6, 5)
    assert torch.equal(enc.coefficients, torch.tensor([1.0, 2, 4, -1, -2, -4]))
    step = 1.0 / 7
    assert enc.scale[0] == pytest.approx(step)
    assert torch.allclose(enc.decode()[0], torch.tensor([5, -2, 0, 7, 0]) * step)
    big = torch.randn(50, 30, generator=torch.Generator().manual_seed(1))
    enc = BitPlaneEncoder(5, dither=False).encode(big)
    err = (enc.decode() - big).abs().max(dim=1).values
    assert bool((err <= enc.scale / 2 + 1e-6).all())
    assert parse_encoder("bitplane-nearest:5").spec == "bitplane-nearest:5"


def test_dithered_bitplanes_are_unbiased_and_within_a_level():
    e = torch.tensor([[0.7, -0.35, 0.0, 1.0, -0.01]]).expand(40_000, -1)
    gen = torch.Generator().manual_seed(0)
    enc = parse_encoder("bitplane:3").encode(e, gen)
    assert enc.frames.shape == (40_000, 6, 5)
    step = 1.0 / 7
    decoded = enc.decode()
    assert float((decoded - e).abs().max()) < step  # below one level
    assert torch.allclose(decoded.mean(0), e[0], atol=3 * step / 40_000**0.5)
    assert float(decoded[:, 4].ne(0).float().mean()) == pytest.approx(0.07, abs=0.01)  # 0.01/step
    assert float(decoded[:, 3].std()) == 0 and float(decoded[:, 2].abs().max()) == 0  # exact ones
    # softmax errors: nearest rounding drops the small positive entries (a sum the error does
    # not have), dithering keeps the zero sum on average
    logits = torch.randn(4096, 10, generator=torch.Generator().manual_seed(1))
    error = torch.softmax(logits, 1) - torch.eye(10)[torch.arange(4096) % 10]
    nearest = BitPlaneEncoder(2, dither=False).encode(error).decode().sum(1)
    dithered = BitPlaneEncoder(2).encode(error, gen).decode().sum(1)
    assert float(nearest.mean()) < -0.05 and abs(float(dithered.mean())) < 0.01


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("ternary:abc", "ternary threshold must be a number"),
        ("ternary:1.5", "threshold must be in \\[0, 1\\)"),
        ("bitplane", "write bitplane:K"),
        ("bitplane:0", "1 to 16 bits"),
        ("bitplane:17", "1 to 16 bits"),
        ("stochastic:2", "stochastic takes no parameter"),
        ("sigma-delta", "valid encoders: stochastic, bitplane:K"),
    ],
)
def test_encoder_strings_that_do_not_parse(spec, message):
    with pytest.raises(OptdfaError, match=message):
        parse_encoder(spec)


def test_encoders_parse_and_reject_non_finite_errors():
    assert parse_encoder("ternary").threshold == 0.1
    assert parse_encoder(" Ternary:0.15 ").spec == "ternary:0.15"
    assert parse_encoder("bitplane:4").planes == 8
    for bad in (float("nan"), float("inf")):
        with pytest.raises(OptdfaError, match="non-finite error"):
            TernaryEncoder().encode(torch.tensor([[1.0, bad]]))


def _setup(profile, overrides=None, n_err=10, n_pix=3000, decoder=None, **kw):
    p = load_profile(profile, overrides)
    m_ref = int(p.reference_fraction * p.dmd_mirrors)
    m_sig = (p.dmd_mirrors - m_ref) // n_err
    dev = SimulatedOPU(p, n_err + 1, n_pix, seed=3, mirrors=[m_sig] * n_err + [m_ref])
    dec = make_decoder(
        decoder or p.decoder,
        dev,
        reference_mirrors=m_ref,
        signal_mirrors=m_sig,
        normalisation=kw.get("normalisation", p.reference_normalisation),
        deduplicate=kw.get("deduplicate", True),
        calibration_frames=p.calibration_frames,
    )
    dec.calibrate()
    return dev, dec


def _corr(a, b):
    return float(torch.corrcoef(torch.stack([a.flatten(), b.flatten()]))[0, 1])


def test_noiseless_reference_recovery_is_the_exact_linear_map():
    dev, dec = _setup("ideal")
    m = dec.matrix()  # exact M̃ from the fields, (n_pix, n_err)
    x = torch.rand(300, 10, generator=torch.Generator().manual_seed(2)) < 0.5
    exact = x.float() @ m.T
    recovered = dec.measure(x)
    assert _corr(recovered, exact) >= 0.999
    assert torch.allclose(recovered, exact, atol=2e-3 * float(exact.abs().max()))
    # M̃ has unit-variance Gaussian entries (pixel normalisation)
    assert abs(float(m.mean())) < 0.03 and abs(float(m.std()) - 1) < 0.03
    # ideal-linear gives the same map without a camera
    _, ideal = _setup("ideal", decoder="ideal-linear")
    assert torch.allclose(ideal.measure(x), exact, atol=1e-4 * float(exact.abs().max()))


def test_recovery_through_the_aurora_camera():
    dev, dec = _setup("lighton-aurora")
    x = torch.rand(300, 10, generator=torch.Generator().manual_seed(2)) < 0.5
    exact = x.float() @ dec.matrix().T
    assert _corr(dec.measure(x), exact) > 0.98
    _, glob = _setup("lighton-aurora", normalisation="global")
    m = glob.matrix()
    assert abs(float(m.square().mean()) - 1) < 0.05  # unit mean square, not per pixel
    assert _corr(glob.measure(x), x.float() @ m.T) > 0.98


def test_each_distinct_frame_is_shown_once():
    dev, dec = _setup("lighton-aurora")
    before = dev.frames
    x = torch.zeros(12, 10, dtype=torch.bool)
    x[:6, 0] = True  # one pattern 6 times
    x[6:9, 3] = True  # another 3 times; three zero frames
    out = dec.measure(x)
    assert dev.frames - before == 2 * 2  # two distinct nonzero frames, with and without r
    assert torch.equal(out[0], out[5]) and not torch.equal(out[0], out[6])
    assert torch.equal(out[9:], torch.zeros_like(out[9:]))
    dev2, every = _setup("lighton-aurora", deduplicate=False)
    start = dev2.frames
    every.measure(x)
    assert dev2.frames - start == 2 * 9


def test_unique_frames_round_trip():
    x = torch.rand(200, 70, generator=torch.Generator().manual_seed(3)) < 0.02
    for frames in (x[:, :20], x):  # packed keys and the generic path
        distinct, inverse = unique_frames(frames)
        assert torch.equal(distinct[inverse], frames)
        assert len(distinct) == len(torch.unique(frames, dim=0))
