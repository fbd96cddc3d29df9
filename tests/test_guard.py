"""The training guard: feedback-health statistics, warnings on broken runs, silence on good ones."""

from __future__ import annotations

import json

import pytest
import torch

import optdfa
from optdfa.cli.main import main
from optdfa.guard import BIAS_LIMIT, FeedbackStats, TrainingGuard

DIGITS_DFA = {"dataset": "digits", "method": "dfa", "seed": 0}  # every other field: CLI defaults


def test_bias_is_the_persistent_part_of_the_deviation():
    gen = torch.Generator().manual_seed(0)
    exact = torch.randn(4000, 50, generator=gen)
    norms = exact.norm(dim=1, keepdim=True)
    noise = 0.5 * norms * torch.randn(4000, 50, generator=gen) / 50**0.5
    stats = FeedbackStats()
    stats.add(exact + noise, exact)
    h = stats.result()
    # zero-mean noise of relative size 0.5: deviation 0.5, bias only 0.5/sqrt(N)
    assert h["deviation"] == pytest.approx(0.5, rel=0.03)
    assert h["bias"] == pytest.approx(0.5 / 4000**0.5, rel=0.2)
    assert h["alignment"] == pytest.approx(1 / (1 + 0.25) ** 0.5, rel=0.02)
    offset = torch.zeros(50)
    offset[3] = 1.0
    biased = FeedbackStats()
    biased.add(exact + 0.3 * norms * offset, exact)  # the same offset, 30 % of each sample
    assert biased.result()["bias"] == pytest.approx(0.3, rel=1e-6)
    empty = FeedbackStats()
    empty.add(torch.zeros(3, 5), torch.zeros(3, 5))  # samples without error carry nothing
    assert empty.result() is None


@pytest.mark.parametrize(
    ("losses", "climbs"),
    [
        ([2.29, 2.02, 1.911, 1.94, 1.97, 2.02], True),  # ternary:0.1 + Adam on digits
        ([2.3, 2.31, 2.32, 2.33], True),  # never learned at all
        ([0.5, 0.01, 0.0022, 0.0023, 0.0024, 0.0027], False),  # a converged run's noise
        ([2.3, 1.0, 0.5, 0.6, 0.55, 0.7], False),  # not 3 rises in a row
    ],
)
def test_loss_climbing(losses, climbs):
    guard = TrainingGuard(quiet=True)
    guard.train_losses = losses
    assert guard._climbing() is climbs


def test_guard_fires_on_lighton_ternarisation_with_adam(tmp_path, capsys):
    """The broken configuration of issue 11: deterministic ternary:0.1 + Adam."""
    out = tmp_path / "run"
    args = ["train", "--dataset", "digits", "--method", "dfa", "--backend", "sim-opu"]
    args += ["--profile", "ideal", "--opu", "encoder=ternary:0.1", "--epochs", "3"]
    assert main([*args, "--out", str(out), "--quiet"]) == 0
    captured = capsys.readouterr()
    # said before training (known failure) and from the feedback itself within 3 epochs
    assert "known to make DFA collapse" in captured.err and "feedback is biased" in captured.err
    assert captured.err.count("optdfa: warning") == 2  # once per kind
    assert "WARNING: this run did not train normally" in captured.out
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "completed-with-warnings"
    kinds = {w["kind"]: w["epoch"] for w in summary["guard"]["warnings"]}
    assert kinds["known-failure"] == 0 and kinds["feedback-biased"] <= 3
    lines = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert lines[0]["warnings"][0].startswith("known-failure: ")
    assert any(
        w.startswith("feedback-biased: ") for line in lines for w in line.get("warnings", [])
    )
    assert all(line["feedback_health"]["bias"] > BIAS_LIMIT for line in lines)
    # a resumed run keeps what was said and does not say it again
    assert main(["train", "--out", str(out), "--resume", "--epochs", "5", "--quiet"]) == 0
    assert "optdfa: warning" not in capsys.readouterr().err
    resumed = json.loads((out / "summary.json").read_text())
    assert resumed["guard"]["warnings"] == summary["guard"]["warnings"]


@pytest.mark.parametrize(
    ("backend", "options", "floor"),
    [
        ("sim-opu", {"profile": "ideal"}, 0.93),
        ("sim-opu", {"profile": "lighton-aurora"}, 0.93),
        ("sim-opu", {"profile": "noisy-lab"}, 0.90),
        ("lightonml", {"simulated": True}, 0.93),
    ],
)
def test_guard_is_silent_on_the_shipped_defaults(backend, options, floor):
    torch.set_num_threads(1)
    cfg = {**DIGITS_DFA, "backend": backend, "backend_options": options}
    result = optdfa.train(cfg)
    s = result.summary
    assert s["status"] == "completed" and s["guard"]["healthy"], s["guard"]["warnings"]
    assert s["test_accuracy"] >= floor
    health = [m["feedback_health"] for m in result.metrics]
    assert len(health) == 10 and max(h["bias"] for h in health) < BIAS_LIMIT


def test_digital_runs_are_not_guarded():
    result = optdfa.train({**DIGITS_DFA, "epochs": 1})
    assert "guard" not in result.summary and "feedback_health" not in result.metrics[0]
