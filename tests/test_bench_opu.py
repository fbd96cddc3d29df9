"""The OPU benchmarks run end to end at small sizes (timings themselves are not asserted)."""

from __future__ import annotations

import json

from optdfa.bench import BENCHMARKS
from optdfa.bench_opu import bench_aurora_projection, bench_sim_step
from optdfa.cli.main import main


def test_registered():
    assert {"sim-step", "opu-transform", "aurora-projection"} <= set(BENCHMARKS)


def test_sim_step_small():
    r = bench_sim_step(hidden=(32,), batch_size=16, repeats=2, warmup=1)
    assert r["ratio"] > 0 and r["frames_per_step"] > 0
    assert r["frames_per_step"] <= r["frames_per_step_no_dedup"] <= 4 * 16
    assert "sim-opu / digital" in BENCHMARKS["sim-step"][1](r)


def test_projection_child_reports_time_and_peak_memory():
    r = bench_aurora_projection(n_in=200, n_out=70_000, workers=2, dense_budget_mb=0)
    assert r["medium"] == "streamed" and r["seconds"] > 0
    assert 0.05 < r["peak_rss_gb"] < 2 and r["meets"]
    assert r["mirrors_on"] > 50 and r["output_unit"] == "DN"


def test_cli_params(tmp_path, capsys):
    out = tmp_path / "r.json"
    args = ["bench", "opu-transform", "--repeats", "1", "--json", str(out)]
    args += ["--param", "n_in=64", "--param", "n_out=100", "--param", "n_frames=10"]
    args += ["--param", "settle_s=0"]
    assert main(args) == 0
    assert json.loads(out.read_text())["n_frames"] == 10
    capsys.readouterr()
    assert main(["bench", "opu-transform", "--param", "n_pixels=3"]) == 2
    assert "has no parameter(s) n_pixels" in capsys.readouterr().err


def test_cli_param_types(capsys):
    """Parameters are checked against the benchmark's defaults before anything runs."""
    for param, message in (
        ("hidden=(16,16)", "takes a list of positive integers like [1000,1000,1000]"),
        ("batch_size=0", "must be positive"),
        ("optimizer=3", "takes str values like 'sgd'"),
    ):
        assert main(["bench", "step", "--param", param]) == 2
        assert message in capsys.readouterr().err
    assert main(["bench", "aurora-projection", "--param", "workers=x"]) == 2
    assert "takes a positive integer" in capsys.readouterr().err
    assert main(["bench", "aurora-projection", "--param", "density=1.5"]) == 2
    assert "in (0, 1]" in capsys.readouterr().err


def test_cli_param_list(tmp_path):
    out = tmp_path / "s.json"
    args = ["bench", "step", "--repeats", "1", "--json", str(out)]
    assert main([*args, "--param", "hidden=[8,8]", "--param", "batch_size=4"]) == 0
    assert json.loads(out.read_text())["model"] == "MLP 784-8-8-10 tanh"
