"""The sim-opu feedback backend: scale, errors, CLI flags, resume, and real learning on digits."""

from __future__ import annotations

import json

import pytest
import torch

import optdfa
from optdfa.backends import BUILTIN_BACKENDS, FeedbackLayout, create_backend, reference_block_std
from optdfa.cli.main import main
from optdfa.errors import OptdfaError
from optdfa.optics import TernaryEncoder

LAYOUT = FeedbackLayout.from_shapes(10, [("h1", (300,)), ("h2", (120,))])


def _backend(profile="ideal", **overrides):
    b = create_backend("sim-opu", profile=profile, overrides=overrides)
    b.setup(LAYOUT, seed=4, device=torch.device("cpu"), dtype=torch.float32)
    return b


def _errors(n=64, seed=0):
    return torch.randn(n, 10, generator=torch.Generator().manual_seed(seed))


def _corr(a, b):
    return float(torch.corrcoef(torch.stack([a.flatten(), b.flatten()]))[0, 1])


def test_registered_and_rescaled_to_the_digital_magnitude():
    assert "sim-opu" in BUILTIN_BACKENDS and "sim-opu" in optdfa.available_backends()
    b = _backend("ideal", encoder="ternary:0.1")  # deterministic: the expectation is known
    B = b.feedback_matrix()
    assert B.shape == (10, 420)
    ref = reference_block_std(LAYOUT)
    for block, s in ((B[:, :300], ref[0]), (B[:, 300:], ref[-1])):
        assert abs(float(block.std()) / float(s) - 1) < 0.06
        assert abs(float(block.mean())) < 0.1 * float(s)
    # noiseless device: the feedback is exactly the ternarised error through B_eff
    e = _errors()
    enc = TernaryEncoder(0.1).encode(e)
    expected = enc.decode() @ B
    got = b.project(e)
    assert got.shape == (64, 420) and got.dtype == torch.float32
    assert torch.allclose(got, expected, atol=2e-3 * float(expected.abs().max()))
    c = b.counters()
    assert c["projections"] == 1 and c["samples"] == 64 and c["frames"] > 0
    assert c["device_seconds"] == pytest.approx(c["frames"] * 500e-6)
    assert c["energy_joules"] == pytest.approx(c["device_seconds"] * 30.0)


def test_aurora_projection_tracks_the_noiseless_map():
    b = _backend("lighton-aurora", encoder="ternary:0.1")
    e = _errors(256, seed=1)
    enc = TernaryEncoder(0.1).encode(e)
    assert _corr(b.project(e), enc.decode() @ b.feedback_matrix()) > 0.97
    d = b.describe()
    assert d["profile"] == "lighton-aurora" and d["encoder"] == "ternary:0.1"
    assert _backend("lighton-aurora").describe()["encoder"] == "stochastic"  # the default
    assert d["max_frames_per_sample"] == 4
    json.dumps(d)  # saved with every run


def test_bitplane_and_stochastic_encoders_run_through_the_device():
    e = _errors(32, seed=2)
    for encoder in ("bitplane:3", "stochastic"):
        b = _backend("ideal", encoder=encoder)
        fb = b.project(e)
        assert _corr(fb, e @ b.feedback_matrix()) > (0.97 if encoder != "stochastic" else 0.6)


def test_bad_options_and_inputs():
    with pytest.raises(OptdfaError, match="has no option\\(s\\) adc_bits"):
        create_backend("sim-opu", adc_bits=6)
    with pytest.raises(OptdfaError, match="unknown profile 'nope'; available profiles"):
        create_backend("sim-opu", profile="nope")
    with pytest.raises(OptdfaError, match="overrides must be a table"):
        create_backend("sim-opu", overrides="adc_bits=6")
    b = _backend("ideal")
    with pytest.raises(OptdfaError, match="non-finite error"):
        b.project(torch.tensor([[float("nan")] * 10]))
    with pytest.raises(OptdfaError, match="expects errors of shape"):
        b.project(torch.zeros(3, 9))
    small = create_backend(
        "sim-opu", profile="ideal", overrides={"camera_rows": 10, "camera_cols": 10}
    )
    with pytest.raises(
        OptdfaError, match="420 feedback units but the ideal camera reads at most 10×10"
    ):
        small.setup(LAYOUT, seed=0, device=torch.device("cpu"), dtype=torch.float32)


TRAIN = {
    "dataset": "digits",
    "method": "dfa",
    "optimizer": "sgd",
    "lr": 0.1,
    "batch_size": 32,
    "lr_schedule": "cosine",
    "seed": 0,
}


def test_resume_is_bit_identical(tmp_path):
    torch.set_num_threads(1)
    cfg = {
        **TRAIN,
        "lr_schedule": "constant",  # a cosine schedule depends on the epochs asked for
        "backend": "sim-opu",
        "backend_options": {"profile": "lighton-aurora"},
        "epochs": 2,
        "train_subset": 400,
        "hidden": [64],
    }
    whole = optdfa.train(cfg, tmp_path / "whole")
    optdfa.train({**cfg, "epochs": 1}, tmp_path / "part")
    resumed = optdfa.train(cfg, tmp_path / "part", resume=True)
    for k in ("train_loss", "test_loss", "frames", "device_seconds"):
        assert whole.summary[k] == resumed.summary[k], k
    for p, q in zip(whole.model.parameters(), resumed.model.parameters(), strict=True):
        assert torch.equal(p, q)


@pytest.mark.slow
def test_digits_learning_ideal_matches_digital_and_aurora_reaches_95():
    torch.set_num_threads(1)  # fast and deterministic on a shared machine (restored by conftest)
    runs = {
        "digital": {},
        "ideal": {"backend": "sim-opu", "backend_options": {"profile": "ideal"}},
        "aurora": {"backend": "sim-opu", "backend_options": {"profile": "lighton-aurora"}},
    }
    acc = {}
    for name, extra in runs.items():
        results = [optdfa.train({**TRAIN, **extra, "epochs": 40, "seed": s}) for s in range(3)]
        acc[name] = sum(r.summary["test_accuracy"] for r in results) / 3
        if name == "aurora":
            assert all(r.summary["frames"] > 0 and r.summary["energy_joules"] > 0 for r in results)
    assert abs(acc["ideal"] - acc["digital"]) <= 0.01, acc  # mean of 3 seeds
    assert acc["aurora"] >= 0.95, acc


def test_cli_flags(tmp_path, capsys):
    out = tmp_path / "run"
    rc = main(
        [
            "train",
            "--backend",
            "sim-opu",
            "--profile",
            "ideal",
            "--opu",
            "adc=true",
            "--opu",
            "adc_bits=6",
            "--epochs",
            "1",
            "--train-subset",
            "200",
            "--hidden",
            "32",
            "--out",
            str(out),
            "--quiet",
        ]
    )
    assert rc == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["frames"] > 0 and summary["device_seconds"] > 0 and summary["energy_joules"] > 0
    assert summary["rule"]["backend"]["profile_fields"]["adc_bits"] == 6
    line = json.loads((out / "metrics.jsonl").read_text().splitlines()[0])
    assert {"frames", "device_seconds", "energy_joules"} <= set(line)
    capsys.readouterr()
    assert main(["train", "--profile", "ideal", "--epochs", "1", "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert "do not apply to --backend digital" in err and err.count("\n") == 1
    assert not (tmp_path / "x").exists()
    assert (
        main(
            ["train", "--backend", "sim-opu", "--opu", "adc_bits=40", "--out", str(tmp_path / "y")]
        )
        == 2
    )
    assert "'adc_bits' must be between 1 and 16" in capsys.readouterr().err
    assert not (tmp_path / "y").exists()


def test_infinite_profile_values_survive_the_run_files(tmp_path):
    out = tmp_path / "inf"
    args = ["train", "--backend", "sim-opu", "--opu", "poisson_exact_below_e=inf", "--epochs", "1"]
    args += ["--train-subset", "100", "--hidden", "16", "--out", str(out), "--quiet"]
    assert main(args) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["rule"]["backend"]["profile_fields"]["poisson_exact_below_e"] == "inf"
    assert "poisson_exact_below_e = inf" in (out / "config.toml").read_text()


def test_recalibration_tracks_a_drifting_medium():
    def run(every):
        b = _backend("ideal", drift_per_frame=0.003, recalibrate_every_frames=every)
        for i in range(30):
            b.project(_errors(8, seed=i))
        e = _errors(8, seed=99)
        expected = TernaryEncoder(0.1).encode(e).decode() @ b.feedback_matrix()
        fb = b.project(e)
        return b, _corr(fb, expected), float(fb.std() / expected.std())

    once, corr_once, scale_once = run(0)
    often, corr_often, scale_often = run(20)
    assert once.calibration_frames == 2  # the reference and dark frame, once
    assert often.calibration_frames > 20 * 2
    assert corr_often > corr_once + 0.1
    assert abs(scale_often - 1) < abs(scale_once - 1)
    state = often.state_dict()
    assert state["calibration_frames"] == often.calibration_frames
