"""``optdfa characterise``: the procedure recovers the simulator's own camera, on sim-opu, through
lightonml's simulator, and through lightonml's real-device path (fake driver); bad runs write
nothing."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
import fake_lightonopu  # noqa: E402

from optdfa.backends import FeedbackLayout, create_backend  # noqa: E402
from optdfa.characterise import (  # noqa: E402
    OUTPUT_FILES,
    characterise,
    lightonml_target,
    quantised_variance,
    sim_opu_target,
    write_characterisation,
)
from optdfa.cli.main import main  # noqa: E402
from optdfa.errors import OptdfaError  # noqa: E402
from optdfa.optics import load_profile  # noqa: E402


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)  # restored by conftest


def _errors(result, truth):
    m = result.measured
    return {
        "gain": m["gain_e_per_dn"] / truth.gain_e_per_dn - 1,
        "read_noise": m["read_noise_e"] / truth.read_noise_e - 1,
        "full_well": m["full_well_e"] / truth.full_well_e - 1,
    }


def test_quantised_variance_matches_rounded_gaussians():
    rng = np.random.default_rng(1)
    for sigma in (0.15, 0.3, 0.6):
        level = rng.uniform(0, 1, 20_000)  # a spread of mean levels, as in a bin of pixels
        y = np.round(level + sigma * rng.standard_normal((200, level.size)))
        measured = y.var(axis=0, ddof=1).mean()
        assert measured == pytest.approx(float(quantised_variance(sigma**2)), rel=0.01)
    # Sheppard's correction alone would be 20 % off at σ = 0.15 DN
    assert abs(float(quantised_variance(0.15**2)) / (0.15**2 + 1 / 12) - 1) > 0.15


@pytest.mark.parametrize("name", ["lighton-aurora", "noisy-lab"])
def test_sim_opu_characterisation_recovers_the_simulated_camera(name, tmp_path):
    truth = load_profile(name)
    result = characterise(sim_opu_target(truth, seed=0))
    errors = _errors(result, truth)
    assert all(abs(e) < 0.10 for e in errors.values()), errors
    m = result.measured
    assert m["offset_dn"] == pytest.approx(truth.offset_dn, abs=0.05)
    assert m["linearity_error"] < 0.02
    assert m["power_jitter"] == pytest.approx(truth.power_jitter, rel=0.25)
    assert result.profile.adc_bits == truth.adc_bits and m["adc_limited"]
    assert result.profile.photon_rate == pytest.approx(truth.photon_rate, rel=0.05)
    if truth.drift_per_frame:
        assert result.profile.drift_per_frame == pytest.approx(truth.drift_per_frame, rel=0.25)
    else:
        assert result.profile.drift_per_frame == 0.0
    assert result.projection["correlation_vs_exact"] > (0.99 if name == "lighton-aurora" else 0.5)
    # the written profile loads and drives the sim-opu backend
    out = write_characterisation(result, tmp_path / "char")
    assert sorted(p.name for p in out.iterdir()) == sorted(OUTPUT_FILES)
    measured = load_profile(out / "profile.toml")
    assert measured == result.profile
    assert measured.gain_e_per_dn == pytest.approx(m["gain_e_per_dn"], rel=1e-5)
    text = (out / "profile.toml").read_text()
    assert "quantum_efficiency = " in text and f"copied from base profile {name}" in text
    assert "| gain (e⁻/DN) |" in (out / "report.md").read_text()
    backend = create_backend("sim-opu", profile=str(out / "profile.toml"))
    backend.setup(
        FeedbackLayout.from_shapes(10, [("h", (64,))]),
        seed=0,
        device=torch.device("cpu"),
        dtype=torch.float32,
    )
    assert backend.project(torch.randn(4, 10)).shape == (4, 64)
    with pytest.raises(OptdfaError, match="--overwrite"):
        write_characterisation(result, out)


def test_lightonml_simulated_characterisation_recovers_the_drop_in_camera():
    truth = load_profile("lighton-aurora")
    target = lightonml_target(truth, simulated=True, pixels=2048, seed=1)
    try:
        result = characterise(target)
    finally:
        target.close()
    errors = _errors(result, truth)
    assert all(abs(e) < 0.10 for e in errors.values()), errors
    assert result.profile.exposure_s == pytest.approx(400e-6)
    assert result.profile.dmd_cols == 1140 and result.profile.camera_cols == 1920


def test_real_device_path_characterisation(monkeypatch, tmp_path):
    """The hardware path (exposure through lightonml's runner, measured frame time), fake driver."""
    config = fake_lightonopu.install(monkeypatch, tmp_path)
    base = load_profile("lighton-aurora")
    target = lightonml_target(
        base, simulated=False, pixels=2048, inputs=16, config_file=str(config), retry_delay_s=0
    )
    try:
        result = characterise(target, repeats=32)
    finally:
        target.close()
    truth = fake_lightonopu.fake_profile()
    errors = _errors(result, truth)
    assert all(abs(e) < 0.15 for e in errors.values()), errors
    p = result.profile
    assert (p.dmd_cols, p.dmd_rows) == fake_lightonopu.DMD_XY
    assert "measured: achieved frame rate" in result.provenance["frame_time_s"]
    assert p.frame_time_s >= p.exposure_s > 0
    assert "error_vs_exact" not in result.projection  # a real OPU cannot report its fields
    assert result.projection["superposition_error"] < 0.5


@pytest.mark.parametrize(
    ("overrides", "factor", "message"),
    [
        ({"photon_rate": 1e8}, 64.0, "saturates even at the shortest exposure"),
        ({"photon_rate": 1e-7}, 64.0, "no signal"),
        ({}, 2.0, "no saturation reached"),
    ],
)
def test_bad_characterisations_explain_and_write_nothing(
    tmp_path, capsys, overrides, factor, message
):
    out = tmp_path / "out"
    args = ["characterise", "--backend", "sim-opu", "--out", str(out), "--pixels", "1024"]
    args += ["--repeats", "16", "--max-exposure-factor", str(factor), "--quiet"]
    for key, value in overrides.items():
        args += ["--opu", f"{key}={value}"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
    assert not out.exists()


def test_cli_characterise_and_missing_opu(tmp_path, capsys, monkeypatch):
    out = tmp_path / "char"
    args = ["characterise", "--backend", "sim-opu", "--profile", "lighton-aurora", "--quiet"]
    assert main([*args, "--pixels", "1024", "--repeats", "32", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "gain" in printed and "profile.toml" in printed
    assert load_profile(out / "profile.toml").adc_bits == 8
    assert main([*args, "--out", str(out)]) == 2  # no --overwrite
    assert "--overwrite" in capsys.readouterr().err
    monkeypatch.setitem(sys.modules, "lightonopu", None)
    real = ["characterise", "--backend", "lightonml", "--out", str(tmp_path / "real")]
    assert main(real) == 2
    err = capsys.readouterr().err
    assert "no LightOn OPU found" in err and err.count("\n") == 1
    assert not (tmp_path / "real").exists()
