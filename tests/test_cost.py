"""Cost model: frame counts and times against hand computation and against the simulated OPU."""

from __future__ import annotations

import math

import pytest
import torch

from optdfa import cost
from optdfa.backends import FeedbackLayout, create_backend
from optdfa.cli.main import main
from optdfa.errors import OptdfaError
from optdfa.optics.profile import load_profile

AURORA = load_profile("lighton-aurora")


@pytest.mark.parametrize(
    "encoder,decoder,frames",
    [
        ("ternary:0.1", "reference", 32 * 2 * 2),
        ("stochastic", "reference", 32 * 2 * 2),
        ("bitplane:3", "reference", 32 * 6 * 2),
        ("bitplane:4", "ideal-linear", 32 * 8 * 1),
    ],
)
def test_frames_seconds_and_joules_match_hand_computation(encoder, decoder, frames):
    c = cost.optical_step_cost(
        AURORA, 10, 512, 32, encoder=encoder, decoder=decoder, steps_per_run=900
    )
    calibration = 2 * 64 if decoder == "reference" else 0
    assert c.frames_per_step == frames and c.passes == 1
    assert c.calibration_frames == calibration
    assert c.frames_per_step_amortised == pytest.approx(frames + calibration / 900)
    assert c.device_seconds_per_step == pytest.approx((frames + calibration / 900) * 500e-6)
    assert c.joules_per_step == pytest.approx(c.device_seconds_per_step * 30.0)
    assert "frame_time_s" in c.sources and "lighton-aurora" in c.sources["power_w"]


def test_projections_larger_than_the_device_take_several_passes():
    inputs = AURORA.dmd_mirrors - AURORA.dmd_mirrors // 2  # reference takes half the mirrors
    assert cost.error_inputs(AURORA) == inputs
    assert cost.optical_step_cost(AURORA, inputs, 10, 1).passes == 1
    assert cost.optical_step_cost(AURORA, inputs + 1, 10, 1).passes == 2
    big = cost.optical_step_cost(AURORA, 10, 3 * AURORA.camera_pixels, 4)
    assert big.passes == 3 and big.frames_per_step == 4 * 2 * 2 * 3
    with pytest.raises(OptdfaError, match="batch size must be a positive integer"):
        cost.optical_step_cost(AURORA, 10, 10, 0)
    with pytest.raises(OptdfaError, match="unknown decoder"):
        cost.optical_step_cost(AURORA, 10, 10, 1, decoder="holography")


def test_the_bound_is_what_the_simulated_opu_charges_without_deduplication():
    layout = FeedbackLayout.from_shapes(10, [("h1", (40,)), ("h2", (24,))])
    backend = create_backend(
        "sim-opu",
        profile="lighton-aurora",
        overrides={"encoder": "bitplane:2", "deduplicate_frames": False, "calibration_frames": 8},
    )
    backend.setup(layout, seed=0, device=torch.device("cpu"), dtype=torch.float32)
    after_setup = backend.counters()["frames"]
    # every entry of magnitude 3/3 of the peak, both signs present: no plane is empty
    error = torch.tensor([[1.0, -1.0] * 5] * 6)
    backend.project(error)
    c = cost.optical_step_cost(backend.profile, 10, 64, 6, steps_per_run=1)
    assert after_setup == c.calibration_frames == 16
    assert backend.counters()["frames"] - after_setup == c.frames_per_step == 6 * 4 * 2
    assert backend.counters()["device_seconds"] == pytest.approx(
        c.device_seconds_per_step, rel=1e-12
    )


def test_crossover_products_follow_from_the_step_time():
    fit = cost.CpuGemmModel(t0=1e-6, flop_rate=50e9, threads=1, measurements=[])
    out = cost.crossover_products(AURORA, 32, cpu=fit)
    t = 128 * 500e-6
    assert out["opu_seconds_per_step"] == pytest.approx(t)
    assert out["cpu_time_product"] == pytest.approx((t - 1e-6) * 50e9 / 64)
    # at the crossover the fitted CPU time equals the OPU time
    side = math.sqrt(out["cpu_time_product"])
    assert float(fit.seconds(32, side, side)) == pytest.approx(t)
    gpu = cost.REFERENCE_GPU
    assert out["gpu_time_product"] == pytest.approx(t * gpu.fp32_flops / 64)
    assert float(cost.gpu_gemm_seconds(gpu, 32, side * 0 + 1e5, out["gpu_time_product"] / 1e5)) == (
        pytest.approx(t)
    )
    assert out["gpu_energy_product"] == pytest.approx(out["gpu_time_product"] * 30 / 400)


def test_cost_cli_reports_frames_time_energy_and_the_measured_gemm(capsys):
    code = main(["cost", "--batch-size", "32", "--encoder", "bitplane:2", "--threads", "1"])
    out = capsys.readouterr().out
    assert code == 0
    assert "n_out 10, n_feedback 512 (blocks 256+256)" in out
    assert "frames per step    256 = 32 samples x 4 planes x 2 frames per plane x 1 pass" in out
    assert "device time/step   128.071 ms" in out  # (256 + 128/900) x 0.5 ms
    assert "measured" in out and "NOT measured" in out
    code = main(["cost", "--dataset", "cifar"])
    assert code != 0 and "unknown dataset 'cifar'" in capsys.readouterr().err
