"""Sweeps: validation before anything runs, resume/skip, failure recording, parallel workers."""

from __future__ import annotations

import json
import warnings

import pytest
import torch

from optdfa.cli.main import main
from optdfa.errors import OptdfaError
from optdfa.sweep import load_sweep, run_sweep, sweep_from_dict
from optdfa.sweep.results import RESULTS_JSONL, append_row, read_rows
from optdfa.sweep.runner import threads_per_worker

TINY_BASE = {
    "dataset": "digits",
    "train_subset": 200,
    "hidden": [16],
    "epochs": 2,
    "batch_size": 25,
    "optimizer": "sgd",
    "lr": 0.1,
}


def tiny(**extra):
    data = {"name": "tiny", "seeds": 2, "base": dict(TINY_BASE), "grid": {"lr": [0.05, 0.1]}}
    data.update(extra)
    return sweep_from_dict(data, source="tiny.toml")


# -- validation ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "change,needles",
    [
        ({"colour": "red"}, ["unknown key(s) colour"]),
        ({"grid": {"learning_rate": [0.1]}}, ["unknown key 'learning_rate'", "opu.FIELD"]),
        ({"grid": {"opu.adc_bitz": [4]}}, ["opu.adc_bitz", "unknown hardware-profile field"]),
        ({"grid": {"lr": ["fast"]}}, ["lr=", "'lr' must be a number", "'fast'"]),
        ({"grid": {"lr": []}}, ["grid axis 'lr' has no values"]),
        ({"grid": {"lr": 0.1}}, ["grid axis 'lr' must be a list"]),
        ({"grid": {}}, ["the sweep is empty"]),
        ({"grid": {"seed": [1, 2]}}, ["'seed' cannot be swept", "seeds"]),
        ({"grid": {"lr": [0.1, 0.1]}}, ["lists a value twice"]),
        ({"seeds": 0}, ["'seeds'"]),
        ({"seeds": [1, 1]}, ["lists a seed twice"]),
        ({"reference": "ideal"}, ["reference 'ideal' is not the label of a point"]),
        ({"grid": {"epochs": [0]}}, ["epochs=0", "epochs must be a positive integer"]),
        (
            {"grid": {"opu.adc_bits": [8]}},
            ["opu.adc_bits", "backend 'digital', which has no hardware profile"],
        ),
        (
            {
                "base": {**TINY_BASE, "backend": "sim-opu"},
                "grid": {"opu.adc_bits": [4, "8"]},
            },
            ["opu.adc_bits='8'", "'adc_bits' must be an integer"],
        ),
        (
            {"base": {**TINY_BASE, "backend": "sim-opu"}, "grid": {"opu.adc_bits": [0]}},
            ["'adc_bits' must be between 1 and 16"],
        ),
        ({"points": [{"lr": 0.05}]}, ["resolve to the same training run"]),
    ],
)
def test_bad_sweep_files_fail_with_one_clear_error(change, needles):
    data = {"name": "t", "seeds": 1, "base": dict(TINY_BASE), "grid": {"lr": [0.05, 0.1]}}
    data.update(change)
    with pytest.raises(OptdfaError) as info:
        sweep_from_dict(data, source="t.toml")
    message = str(info.value)
    assert message.startswith("t.toml"), message
    for needle in needles:
        assert needle in message, (needle, message)


def test_cli_rejects_a_bad_file_before_writing_anything(tmp_path, capsys):
    path = tmp_path / "bad.toml"
    path.write_text('seeds = 2\n[base]\nepochs = 1\n[grid]\n"opu.read_noise" = [1.0]\n')
    out = tmp_path / "out"
    code = main(["sweep", str(path), "--out", str(out)])
    err = capsys.readouterr().err
    assert code != 0
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "opu.read_noise" in lines[0] and "Traceback" not in err
    assert not out.exists()


def test_profile_keys_resolve_into_backend_options_and_digital_points_drop_them():
    spec = sweep_from_dict(
        {
            "seeds": [3],
            "base": {
                **TINY_BASE,
                "backend": "sim-opu",
                "backend_options": {"profile": "lighton-aurora", "overrides": {"read_noise_e": 9}},
            },
            "grid": {"opu.adc_bits": [4, 6]},
            "points": [
                {"label": "ideal", "profile": "ideal"},
                {"label": "digital", "backend": "digital"},
            ],
            "reference": "ideal",
        }
    )
    points = spec.expand()
    assert [p.seed for p in points] == [3, 3, 3, 3]
    assert points[0].config.backend_options == {
        "profile": "lighton-aurora",
        "overrides": {"read_noise_e": 9, "adc_bits": 4},
    }
    assert points[2].config.backend_options["profile"] == "ideal"
    assert points[3].config.backend == "digital" and points[3].config.backend_options == {}
    assert len({p.point_id for p in points}) == 4
    # ids are stable and ignore data_dir
    again = spec.with_base(data_dir="/elsewhere").expand()
    assert [p.point_id for p in again] == [p.point_id for p in points]
    with pytest.raises(OptdfaError, match="the sweep varies it"):
        spec.with_base(backend="digital")


# -- running ------------------------------------------------------------------------------------
def test_resume_skips_finished_runs_and_reruns_a_lost_one(tmp_path):
    spec = tiny()
    first = run_sweep(spec, tmp_path, workers=1, report=False)
    assert (first.total, first.ran, first.skipped, first.failed) == (4, 4, 0, 0)
    rows = read_rows(tmp_path / RESULTS_JSONL)
    assert len(rows) == 4 and all(r["status"] == "ok" for r in rows)
    assert all(0.1 < r["test_accuracy"] <= 1 for r in rows)
    assert {(r["params"]["lr"], r["seed"]) for r in rows} == {
        (lr, s) for lr in (0.05, 0.1) for s in (0, 1)
    }
    again = run_sweep(spec, tmp_path, workers=1, report=False)
    assert (again.ran, again.skipped) == (0, 4)
    # lose one line (an interrupted sweep): only that run is trained again, identically
    lines = (tmp_path / RESULTS_JSONL).read_text().splitlines(keepends=True)
    (tmp_path / RESULTS_JSONL).write_text("".join(lines[:3]))
    third = run_sweep(spec, tmp_path, workers=1, report=False)
    assert (third.ran, third.skipped) == (1, 3)
    redo = read_rows(tmp_path / RESULTS_JSONL)[-1]
    assert redo["point_id"] == rows[3]["point_id"]
    assert redo["test_accuracy"] == rows[3]["test_accuracy"]


def test_a_failing_run_is_recorded_and_the_sweep_goes_on(tmp_path):
    # valid on paper, fails when it runs: the MNIST files are not where the point says
    missing = str(tmp_path / "no-such-folder")
    spec = sweep_from_dict(
        {
            "seeds": 1,
            "base": dict(TINY_BASE),
            "points": [
                {"label": "fine"},
                {"label": "lost", "dataset": "mnist", "data_dir": missing},
            ],
        },
        source="f.toml",
    )
    outcome = run_sweep(spec, tmp_path, workers=1)
    assert (outcome.ran, outcome.failed) == (2, 1)
    rows = {r["label"]: r for r in read_rows(tmp_path / RESULTS_JSONL)}
    assert rows["fine"]["status"] == "ok" and rows["fine"]["test_accuracy"] > 0.1
    assert rows["lost"]["status"] == "failed" and "no-such-folder" in rows["lost"]["error"]
    summary = (tmp_path / "summary.md").read_text()
    assert "Failed runs" in summary and "no-such-folder" in summary
    assert (tmp_path / "results.csv").read_text().count("\n") == 3
    # failed runs are retried on the next run (policy), unless asked not to
    assert run_sweep(spec, tmp_path, workers=1, retry_failed=False, report=False).ran == 0
    assert run_sweep(spec, tmp_path, workers=1, report=False).ran == 1


def test_parallel_workers_give_the_same_results_as_one_process(tmp_path):
    spec = tiny()
    torch.set_num_threads(1)
    serial = run_sweep(spec, tmp_path / "serial", workers=1, report=False)
    parallel = run_sweep(spec, tmp_path / "parallel", workers=2)
    assert serial.failed == parallel.failed == 0
    a = {r["point_id"]: r["test_accuracy"] for r in read_rows(tmp_path / "serial" / RESULTS_JSONL)}
    b = {
        r["point_id"]: r["test_accuracy"] for r in read_rows(tmp_path / "parallel" / RESULTS_JSONL)
    }
    assert a == b
    csv_lines = (tmp_path / "parallel" / "results.csv").read_text().splitlines()
    assert csv_lines[0].startswith("point_id,") and csv_lines[0].endswith(",lr")
    assert len(csv_lines) == 5
    assert (tmp_path / "parallel" / "accuracy-lr.png").stat().st_size > 0
    assert "| lr=0.05 | 2/2 |" in (tmp_path / "parallel" / "summary.md").read_text()


def test_torn_lines_are_ignored_and_appends_are_whole(tmp_path):
    path = tmp_path / RESULTS_JSONL
    append_row(path, {"point_id": "a", "status": "ok"})
    with path.open("ab") as f:
        f.write(b'{"point_id": "b", "sta')  # a writer killed mid-line
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        rows = read_rows(path)
    assert [r["point_id"] for r in rows] == ["a"]
    assert any("incomplete" in str(w.message) for w in caught)
    assert json.loads(path.read_bytes().split(b"\n")[0]) == {"point_id": "a", "status": "ok"}


def test_threads_per_worker_never_oversubscribes():
    assert threads_per_worker(1, cores=2) == 2
    assert threads_per_worker(2, cores=2) == 1
    assert threads_per_worker(4, cores=2) == 1
    assert threads_per_worker(3, cores=16) == 5


def test_shipped_study_files_are_valid():
    from pathlib import Path

    folder = Path(__file__).resolve().parents[1] / "experiments" / "noise_quantisation"
    files = sorted(folder.glob("*.toml"))
    assert len(files) >= 8
    for f in files:
        spec = load_sweep(f)
        assert len(spec.seeds) >= 3, f


def test_projection_quality_is_exact_for_digital_and_degrades_with_device_noise():
    from optdfa.models import build_model
    from optdfa.rules import DirectFeedbackAlignment, cross_entropy
    from optdfa.seeding import torch_generator
    from optdfa.sweep.projection import projection_quality

    gen = torch_generator(0, "test")
    x = torch.randn(64, 20, generator=gen)
    y = torch.randint(0, 10, (64,), generator=gen)
    model = build_model("mlp", (20,), 10, hidden=[32], activation="tanh", generator=gen)

    def quality(backend, **options):
        rule = DirectFeedbackAlignment(backend, seed=0, **options)
        rule.attach(model, x[:2])
        return projection_quality(rule, model, cross_entropy, x, y, repeats=2)

    exact = quality("digital")
    assert exact["projection_fidelity"] == pytest.approx(1.0, abs=1e-6)
    assert exact["projection_snr_db"] > 100 and exact["device_snr_db"] is None
    ideal = quality("sim-opu", profile="ideal", overrides={"encoder": "bitplane:8"})
    assert ideal["device_snr_db"] > 80  # float32 rounding only
    assert 0.99 < ideal["projection_fidelity"] < 1  # 8-bit encoding error only
    # the default (stochastic) encoder: its frames are redrawn exactly, so the device alone
    # is still noiseless, while the dithering itself costs fidelity
    dithered = quality("sim-opu", profile="ideal")
    assert dithered["device_snr_db"] > 80 and dithered["projection_fidelity"] < 0.95
    noisy = quality("sim-opu", profile="lighton-aurora", overrides={"read_noise_e": 300.0})
    clean = quality("sim-opu", profile="lighton-aurora")
    assert noisy["device_snr_db"] < clean["device_snr_db"] - 5
    assert noisy["projection_fidelity"] < clean["projection_fidelity"] < 1


def test_first_seeds_runs_a_subset_that_a_full_run_then_reuses(tmp_path):
    spec = tiny(seeds=3)
    quick = run_sweep(spec.first_seeds(1), tmp_path, workers=1, report=False)
    assert (quick.total, quick.ran) == (2, 2)
    assert {r["seed"] for r in read_rows(tmp_path / RESULTS_JSONL)} == {0}
    full = run_sweep(spec, tmp_path, workers=1, report=False)
    assert (full.total, full.ran, full.skipped) == (6, 4, 2)
    with pytest.raises(OptdfaError, match="between 1 and the file's 3 seeds, got 4"):
        spec.first_seeds(4)
