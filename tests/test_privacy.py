"""Photonic DP: accountant against opacus and by hand, device noise, clipping, CLI."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from opacus.accountants import RDPAccountant

from optdfa.backends import FeedbackLayout, create_backend
from optdfa.cli.main import main
from optdfa.config import TrainConfig
from optdfa.errors import OptdfaError
from optdfa.models import build_model
from optdfa.privacy import (
    epsilon,
    epsilons_per_epoch,
    noise_multiplier_for,
    photonic_mechanism,
    privacy_report,
)
from optdfa.privacy.mechanism import characterised_noise, profile_noise_floor
from optdfa.rules import DirectFeedbackAlignment, cross_entropy
from optdfa.seeding import torch_generator
from optdfa.training import Trainer

LAYOUT = FeedbackLayout.from_shapes(6, [("h1", (24,)), ("h2", (16,))])


def sim_backend(**overrides):
    backend = create_backend(
        "sim-opu", profile="lighton-aurora", overrides={"encoder": "stochastic", **overrides}
    )
    backend.setup(LAYOUT, seed=1, device=torch.device("cpu"), dtype=torch.float32)
    return backend


# -- the accountant -----------------------------------------------------------------------------
def test_epsilon_falls_with_noise_and_grows_with_epochs():
    noises = [0.6, 0.8, 1.0, 2.0, 4.0]
    eps = [epsilon(z, 0.02, 900, 1e-5) for z in noises]
    assert all(a > b for a, b in zip(eps, eps[1:], strict=False))
    per_epoch = epsilons_per_epoch(1.0, 0.02, 45, 20, 1e-5)
    assert all(a < b for a, b in zip(per_epoch, per_epoch[1:], strict=False))
    assert epsilon(0.0, 0.02, 10, 1e-5) == math.inf and epsilon(1.0, 0.02, 0, 1e-5) == 0.0


def test_matches_opacus_for_the_gaussian_mechanism_with_the_same_sigma():
    acc = RDPAccountant()
    for _ in range(3 * 45):
        acc.step(noise_multiplier=1.3, sample_rate=32 / 1437)
    expected = acc.get_epsilon(1e-5)
    assert epsilons_per_epoch(1.3, 32 / 1437, 45, 3, 1e-5)[-1] == pytest.approx(expected, rel=1e-3)
    assert epsilon(1.3, 32 / 1437, 135, 1e-5) == pytest.approx(expected, rel=1e-3)


def test_full_batch_gaussian_mechanism_by_hand():
    # q = 1: RDP of the Gaussian mechanism is α/(2z²) per step; opacus converts with
    # ε = rdp − (log δ + log α)/(α − 1) + log((α − 1)/α), minimised over its orders.
    z, steps, delta = 2.0, 10, 1e-5
    alphas = np.array(RDPAccountant.DEFAULT_ALPHAS + [80, 128, 256, 512], dtype=float)
    rdp = steps * alphas / (2 * z**2)
    eps = rdp - (np.log(delta) + np.log(alphas)) / (alphas - 1) + np.log((alphas - 1) / alphas)
    assert epsilon(z, 1.0, steps, delta) == pytest.approx(float(eps.min()), rel=1e-6)


def test_noise_multiplier_for_inverts_epsilon():
    z = noise_multiplier_for(2.0, 0.05, 400, 1e-5)
    assert epsilon(z, 0.05, 400, 1e-5) <= 2.0 < epsilon(z * 0.99, 0.05, 400, 1e-5)


# -- the device's mechanism ---------------------------------------------------------------------
def test_more_device_noise_gives_a_larger_noise_multiplier_and_smaller_epsilon():
    z = [
        photonic_mechanism(sim_backend(read_noise_e=r)).noise_multiplier for r in (5.0, 50.0, 500.0)
    ]
    assert 0 < z[0] < z[1] < z[2]
    eps = [epsilon(v, 0.02, 900, 1e-5) for v in z]
    assert eps[0] > eps[1] > eps[2]
    dim = photonic_mechanism(sim_backend(photon_rate=0.1, adc=False)).noise_multiplier
    bright = photonic_mechanism(sim_backend(photon_rate=10.0, adc=False)).noise_multiplier
    assert dim > bright  # a shot-noise-limited device gets relatively noisier as light fades
    ideal = create_backend("sim-opu", profile="ideal", overrides={"encoder": "stochastic"})
    ideal.setup(LAYOUT, seed=1, device=torch.device("cpu"), dtype=torch.float32)
    assert photonic_mechanism(ideal).noise_multiplier == 0.0


def test_the_profile_floor_is_what_a_characterisation_measures_for_pure_read_noise():
    quiet = dict(shot_noise=False, adc=False, saturation=False, power_jitter=0.0, read_noise_e=40.0)
    backend = sim_backend(**quiet)
    floor = profile_noise_floor(backend)
    measured = characterised_noise(backend, repeats=400, frames=2)
    assert torch.allclose(measured, floor, rtol=0.15)
    # with shot noise the floor (half the reference's shot noise) lies below what is measured
    shot = sim_backend(adc=False, saturation=False, power_jitter=0.0)
    assert bool(
        (characterised_noise(shot, repeats=200, frames=2) > 0.9 * profile_noise_floor(shot)).all()
    )


def test_private_projection_noise_is_data_independent_and_as_predicted():
    backend = sim_backend(
        shot_noise=False, adc=False, saturation=False, power_jitter=0.0, read_noise_e=40.0
    )
    bound = 0.5
    backend.set_error_bound(bound)
    sigma = profile_noise_floor(backend)
    predicted = backend.block_std.double() * bound * math.sqrt(2.0) * sigma
    # errors whose stochastic encoding is certain (entries 0 or ±bound): the spread across
    # repeats is the device's alone, and it is the same for an empty and a full frame
    for error in (torch.zeros(1, 6), torch.tensor([[0.0, -bound, 0.0, 0.0, 0.0, 0.0]])):
        runs = torch.cat([backend.project(error.expand(50, 6).contiguous()) for _ in range(8)])
        std = runs.double().std(dim=0)
        assert torch.allclose(std, predicted, rtol=0.15), error
    mech = photonic_mechanism(backend)
    assert mech.sensitivity_method == "exact maximum over sign vectors"
    W = backend.decoder.matrix().double() / sigma[:, None]
    bound_norm = float(torch.linalg.matrix_norm(W, ord=2)) * math.sqrt(6 / 2)
    assert mech.sensitivity <= bound_norm + 1e-9
    assert mech.noise_multiplier == pytest.approx(1 / mech.sensitivity)


def test_report_uses_the_device_noise_multiplier_with_opacus():
    mech = photonic_mechanism(sim_backend())
    report = privacy_report(mech, batch_size=32, dataset_size=1437, epochs=3, delta=1e-5)
    acc = RDPAccountant()
    acc.history.append((mech.noise_multiplier, 32 / 1437, 3 * 45))
    assert report["epsilon"] == pytest.approx(acc.get_epsilon(1e-5), rel=1e-3)
    assert report["epsilon_per_epoch"][0] < report["epsilon_per_epoch"][-1]
    need = report["targets"]["1"]
    assert need["noise_scale_needed"] == pytest.approx(
        need["noise_multiplier"] / mech.noise_multiplier
    )


def test_ternary_and_digital_backends_are_refused_with_a_clear_error():
    for encoder in ("ternary:0.1", "ternary:0"):
        tern = create_backend("sim-opu", profile="lighton-aurora", overrides={"encoder": encoder})
        tern.setup(LAYOUT, seed=1, device=torch.device("cpu"), dtype=torch.float32)
        with pytest.raises(OptdfaError, match="stochastic or bitplane:K"):
            photonic_mechanism(tern)
    digital = create_backend("digital")
    digital.setup(LAYOUT, seed=1, device=torch.device("cpu"), dtype=torch.float32)
    with pytest.raises(OptdfaError, match="adds no noise"):
        photonic_mechanism(digital)


# -- clipping in the DFA rule -------------------------------------------------------------------
def _grads(rule, model, x, y):
    model.zero_grad(set_to_none=True)
    rule.compute_gradients(x, y, cross_entropy)
    return [p.grad.clone() for p in model.parameters()]


def test_clipped_batch_update_is_the_mean_of_clipped_per_sample_updates():
    gen = torch_generator(0, "test")
    x = 3 * torch.randn(8, 12, generator=gen)
    y = torch.randint(0, 5, (8,), generator=gen)
    model = build_model("mlp", (12,), 5, hidden=[16, 16], activation="tanh", generator=gen)
    rule = DirectFeedbackAlignment("digital", seed=0, clip_error=0.3, clip_activation=2.0)
    rule.attach(model, x[:2])
    batch = _grads(rule, model, x, y)
    singles = [_grads(rule, model, x[i : i + 1], y[i : i + 1]) for i in range(8)]
    for k, g in enumerate(batch):
        assert torch.allclose(g, sum(s[k] for s in singles) / 8, atol=1e-6)
    assert (torch.linalg.vector_norm(rule.last_error, dim=1) <= 0.3 + 1e-6).all()  # n = 1 here
    plain = DirectFeedbackAlignment("digital", seed=0)
    plain.attach(model, x[:2])
    unclipped = _grads(plain, model, x, y)
    assert not torch.allclose(unclipped[0], batch[0])  # the bounds were active
    loose = DirectFeedbackAlignment("digital", seed=0, clip_error=1e6, clip_activation=1e6)
    loose.attach(model, x[:2])
    for a, b in zip(_grads(loose, model, x, y), unclipped, strict=True):
        assert torch.allclose(a, b)


# -- configuration, training and the CLI --------------------------------------------------------
@pytest.mark.parametrize(
    "fields,needle",
    [
        ({"dp_delta": 1e-5}, "--dp-delta needs --dp-clip-error"),
        ({"dp_delta": 2.0, "dp_clip_error": 1.0}, "dp delta must be in (0, 1)"),
        ({"method": "bp", "dp_clip_error": 1.0}, "apply to --method dfa only"),
        ({"dp_clip_activation": -1.0}, "dp clip activation must be a positive number"),
    ],
)
def test_bad_privacy_settings_fail_with_one_clear_error(fields, needle):
    with pytest.raises(OptdfaError, match=needle.replace("(", r"\(").replace(")", r"\)")):
        TrainConfig.from_dict(fields).validate()


def test_a_private_run_on_the_digital_backend_is_refused_before_training():
    with pytest.raises(OptdfaError, match="adds no noise"):
        Trainer(TrainConfig(epochs=1, dp_delta=1e-5, dp_clip_error=1.0), progress=False)


def test_train_cli_prints_epsilon_per_epoch(tmp_path, capsys):
    argv = [
        "train", "--backend", "sim-opu", "--opu", "encoder=stochastic", "--epochs", "2",
        "--hidden", "32", "--batch-size", "64", "--train-subset", "256", "--quiet",
        "--dp-delta", "1e-5", "--dp-clip-error", "1.0", "--dp-clip-activation", "10",
        "--out", str(tmp_path / "run"),
    ]  # fmt: skip
    assert main(argv) == 0
    out = capsys.readouterr().out
    line = next(line for line in out.splitlines() if line.startswith("photonic DP"))
    per_epoch = [float(v) for v in line.split("ε per epoch ")[1].split(";")[0].split(", ")]
    assert len(per_epoch) == 2 and 0 < per_epoch[0] < per_epoch[1]
    import json

    metrics = [json.loads(s) for s in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [m["dp_epsilon"] for m in metrics] == pytest.approx(per_epoch, rel=1e-3)
