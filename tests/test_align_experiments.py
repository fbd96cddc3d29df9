"""The align-then-memorise experiments in their --quick modes (small, seeded, deterministic)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from experiments.align_then_memorise import (
    cnn_failure,
    common,
    degeneracy,
    layer_order,
    optics_compare,
    two_phases,
)
from optdfa.alignment import SINGULAR_KAPPA
from optdfa.errors import OptdfaError
from optdfa.optics import load_profile


def _files(out, name):
    payload = json.loads((out / f"{name}.json").read_text())
    assert (out / f"{name}.png").stat().st_size > 20_000
    return payload


def test_two_phases_quick_aligns_before_it_memorises(tmp_path):
    payload = two_phases.main(["--quick", "--seeds", "2", "--out", str(tmp_path)])
    assert _files(tmp_path, "atm-two-phases")["reproduced"] == payload["reproduced"]
    dfa, bp = payload["summary"]["dfa"], payload["summary"]["bp"]
    assert payload["alignment_first_per_seed"] == [True, True]
    assert dfa["t_signal"]["mean"] < dfa["t_loss"]["mean"]
    # DFA aligns with its feedback vector; BP's weights do not turn towards it
    assert dfa["plateau_signal"]["mean"] > 0.7 and abs(bp["final_signal"]["mean"]) < 0.4
    assert payload["command"].startswith("python -m experiments.align_then_memorise.two_phases")


def test_two_phases_quick_with_the_optics_on(tmp_path):
    """Experiment 5: experiment 1 with DFA's projection on the simulated noisy-lab OPU."""
    argv = ["--quick", "--seeds", "1", "--out", str(tmp_path)]
    noisy = two_phases.main([*argv, "--backend", "sim-opu", "--profile", "noisy-lab"])
    assert _files(tmp_path, "atm-two-phases-sim-opu-noisy-lab")["settings"]["backend_options"] == {
        "profile": "noisy-lab",
        "noise_generator": "torch",  # the documented results' generator
    }
    digital = two_phases.main(argv)
    run = noisy["runs"]["dfa"][0]
    # one output: every step shows its single distinct frame with and without the reference,
    # and measures the reference again first (k reference-only and k dark frames; the first step
    # uses the set-up calibration); 1 ms per frame
    steps = noisy["settings"]["n_train"] // noisy["settings"]["batch_size"]
    k = load_profile("noisy-lab").calibration_frames
    assert load_profile("noisy-lab").recalibrate_every_frames == 1
    assert run["frames"] == 2 * steps + 2 * k * steps
    assert run["device_seconds"] == pytest.approx(run["frames"] * 1e-3)
    assert noisy["runs"]["bp"][0]["frames"] == 0  # BP runs stay digital
    assert noisy["runs"]["bp"][0]["final_test_loss"] == digital["runs"]["bp"][0]["final_test_loss"]
    # still aligns first and learns, but the camera noise in the delivered feedback lowers the
    # measured gradient alignment well below the digital one
    assert noisy["alignment_first_per_seed"] == [True]
    assert run["final_test_loss"] < 0.1 * run["initial_test_loss"]
    assert 0.3 < run["plateau_signal"] < digital["runs"]["dfa"][0]["plateau_signal"] - 0.1
    # the side-by-side comparison pairs the runs seed by seed
    compared = optics_compare.main(["--results", str(tmp_path)])
    assert (tmp_path / "atm-optics.png").stat().st_size > 20_000
    diff = compared["two_phases"]["sim-opu noisy-lab"]["minus_digital"]["plateau_signal"]
    assert diff["n"] == 1 and diff["mean"] == pytest.approx(
        run["plateau_signal"] - digital["runs"]["dfa"][0]["plateau_signal"]
    )
    assert compared["layer_order"] is None
    # runs with other settings (here: seeds) are not compared
    path = tmp_path / "atm-two-phases-sim-opu-noisy-lab.json"
    path.write_text(path.read_text().replace('"seeds": 1', '"seeds": 2'))
    with pytest.raises(OptdfaError, match="other settings"):
        optics_compare.main(["--results", str(tmp_path), "--out", str(tmp_path / "new")])
    assert not (tmp_path / "new").exists()


def test_peak_clock_of_a_curve_that_rises_then_decays():
    steps = np.arange(6) * 10
    curve = np.array([0.0, 0.5, 1.0, 0.6, 0.4, 0.4])
    # plateau clock: rise to the mean of the second half (0.467), 90 % of it = 0.42 → step 10
    assert common.time_to_rise(steps, curve) == 10
    # peak clock: 90 % of the rise to the maximum (1.0) → step 20
    assert common.time_to_peak_fraction(steps, curve) == 20
    assert common.time_to_peak_fraction(steps, -curve) is None  # never rises above its start
    assert common.nanmax(np.array([np.nan, 0.3])) == 0.3
    assert common.nanmax(np.array([np.nan])) is None


def test_layer_order_timing_is_undefined_when_a_layer_does_not_align():
    # a layer whose final alignment is ≤ 0 never aligned: no common level (it was reached at 0)
    assert layer_order.half_min([0.4, 0.2, None]) == pytest.approx(0.1)
    assert layer_order.half_min([0.4, -0.02]) is None
    assert layer_order.rank_correlation([1, 3, 2, 4]) == pytest.approx(0.8)
    assert layer_order.rank_correlation([5, 5, 5, 5]) is None  # was NaN: invalid JSON
    assert layer_order.rank_correlation([1, None, 2, 3]) is None
    steps = np.arange(0, 50, 5)
    curve = np.linspace(-0.1, 0.0, len(steps))
    runs = [{"steps": steps, "signal": [curve] * 4, "weight": [curve] * 4}] * 2
    undefined = {"mean": None, "std": None, "n": 0, "values": [None, None]}
    timing = {
        "signal_level": None,
        "weight_level": None,
        "signal_time_to_level": [undefined] * 4,
        "weight_time_to_level": [undefined] * 4,
    }
    settings = {**layer_order.QUICK, "seeds": 2}
    fig = layer_order.figure(runs, timing, settings, "no layer aligns")
    assert len(fig.axes) == 3


def test_degeneracy_quick_separates_dfa_and_bp_solutions(tmp_path):
    payload = degeneracy.main(["--quick", "--seeds", "2", "--out", str(tmp_path)])
    _files(tmp_path, "atm-degeneracy")
    assert payload["all_reached_target"]
    s = payload["summary"]
    assert s["dfa"]["gradient_alignment"]["mean"] > s["bp"]["gradient_alignment"]["mean"] + 0.3
    assert all(r["train_loss"] <= payload["settings"]["target_train_loss"] for r in payload["rows"])


def test_layer_order_quick_runs_on_mnist(tmp_path, shared_datasets):
    payload = layer_order.main(
        ["--quick", "--seeds", "1", "--data-dir", str(shared_datasets), "--out", str(tmp_path)]
    )
    _files(tmp_path, "atm-layer-order")
    finals = [s["mean"] for s in payload["summary"]["final_signal"]]
    assert len(finals) == 4 and finals[0] > 0.2 and finals[0] > finals[-1]
    assert payload["verdict"] in ("reproduced", "partially reproduced", "not reproduced")


def test_cnn_failure_quick_compares_conv_and_dense_feedback(tmp_path, shared_datasets):
    torch.set_num_threads(1)
    payload = cnn_failure.main(
        ["--quick", "--seeds", "1", "--data-dir", str(shared_datasets), "--out", str(tmp_path)]
    )
    _files(tmp_path, "atm-cnn-failure")
    cnn = payload["summary"]["mnist"]["cnn"]["dfa"]
    mlp = payload["summary"]["mnist"]["mlp"]["dfa"]
    # quick CNN: 8 conv channels for 10 classes (singular), 16 channels, then a dense point
    assert cnn["feedback_units"][:3] == [8, 16, 64]
    assert cnn["feedback_cond"][0]["mean"] == SINGULAR_KAPPA
    assert cnn["feedback_cond"][1]["mean"] > max(s["mean"] for s in mlp["feedback_cond"][:2])
    sweep = payload["conditioning_sweep"]["rows"]
    assert [r["width"] for r in sweep][:3] == [4, 8, 16] and sweep[0]["mean"] == SINGULAR_KAPPA
    assert sweep[-1]["mean"] < 1.5  # 1024 units for 10 outputs: nearly isometric


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--seeds", "0"], "--seeds"),
        (["--profile", "noisy-lab"], "--profile and --opu apply"),
        (["--opu", "encoder=stochastic"], "--profile and --opu apply"),
        (["--backend", "sim-opu", "--opu", "no_such_field=1"], "unknown profile field"),
        (["--backend", "no-such-backend"], "not installed"),
    ],
)
def test_experiment_arguments_are_checked(tmp_path, argv, message):
    with pytest.raises(OptdfaError, match=message):
        two_phases.main([*argv, "--out", str(tmp_path)])
    assert not any(tmp_path.iterdir())


def test_experiments_survive_a_backend_that_cannot_report_its_matrix(tmp_path, monkeypatch):
    """Real hardware may not know its feedback matrix: weight alignment is then undefined, and
    the experiments must still run and write valid JSON (exercises experiment 5's code path)."""
    from optdfa.backends.digital import DigitalBackend

    monkeypatch.setattr(DigitalBackend, "feedback_matrix", lambda self: None)
    payload = two_phases.main(["--quick", "--seeds", "1", "--out", str(tmp_path)])
    assert payload["summary"]["dfa"]["final_weight"]["mean"] is None
    assert payload["summary"]["dfa"]["final_signal"]["mean"] > 0.5  # still measured
    assert _files(tmp_path, "atm-two-phases")["summary"]["dfa"]["t_weight"]["n"] == 0


def test_conditioning_sweep_follows_marchenko_pastur():
    sweep = cnn_failure.conditioning_sweep([5, 40, 640], draws=10, n_out=10)
    narrow, mid, wide = sweep["rows"]
    assert narrow["mean"] == SINGULAR_KAPPA and narrow["marchenko_pastur"] is None
    # κ of a 10 × N Gaussian matrix ≈ (1 + sqrt(10/N)) / (1 − sqrt(10/N)): 3 for N = 40
    assert mid["marchenko_pastur"] == pytest.approx(3.0)
    assert mid["mean"] == pytest.approx(3.0, rel=0.35)
    assert wide["mean"] == pytest.approx(wide["marchenko_pastur"], rel=0.1)
