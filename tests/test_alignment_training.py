"""Alignment diagnostics inside training: no effect on training, logs, resume, CLI, config."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

import optdfa
from optdfa.alignment import AlignmentHook
from optdfa.training import Trainer

BASE = {"dataset": "digits", "hidden": [32, 32], "batch_size": 64, "epochs": 2, "seed": 3}


def _state(result):
    return [p.detach().clone() for p in result.model.parameters()]


def _strip(lines):
    return [{k: v for k, v in line.items() if k not in ("seconds", "alignment")} for line in lines]


@pytest.mark.parametrize("method", ["dfa", "fa", "bp"])
def test_diagnostics_do_not_change_training(method):
    torch.set_num_threads(1)
    off = optdfa.train({**BASE, "method": method})
    on = optdfa.train({**BASE, "method": method, "align_every": 3})
    assert all(torch.equal(a, b) for a, b in zip(_state(off), _state(on), strict=True))
    assert _strip(off.metrics) == _strip(on.metrics)
    assert "alignment" not in off.metrics[0] and "alignment" not in off.summary
    line = on.metrics[-1]["alignment"]
    assert line["measurements"] == 8  # epoch 2 is steps 23..45: 24, 27, ..., 45
    assert set(line) >= {"signal", "update", "weight", "cond", "feedback_cond", "loss"}


def test_dfa_alignment_rises_during_training_and_bp_reference_matches_dfa_b(tmp_path):
    torch.set_num_threads(1)
    cfg = {**BASE, "align_every": 5, "epochs": 6, "optimizer": "sgd", "lr": 0.05}
    dfa = Trainer(optdfa.TrainConfig(**cfg), progress=False)
    for _ in range(6):
        dfa.train_epoch()
    lines = dfa.alignment.lines
    assert lines[0]["step"] == 0 and lines[1]["step"] == 5
    first, last = lines[0], lines[-1]
    # DFA aligns: the output layer's weights turn towards B_{L-1}, the hidden signals towards BP
    assert abs(first["weight"]["layers"][2]) < 0.15 and last["weight"]["layers"][2] > 0.35
    assert last["signal"]["total"] > first["signal"]["total"] + 0.25
    bp = Trainer(
        optdfa.TrainConfig(**{**BASE, "method": "bp", "align_every": 5, "epochs": 1}),
        progress=False,
    )
    bp.train_epoch()
    layout, matrix = bp.alignment._reference
    assert layout == dfa.rule.layout
    assert torch.equal(matrix, dfa.rule.backend.feedback_matrix())
    assert "reference_signal" in bp.alignment.lines[0]


def test_run_folder_has_alignment_log_and_figure_and_resume_is_bit_identical(tmp_path):
    torch.set_num_threads(1)
    cfg = {**BASE, "align_every": 4, "epochs": 3}
    full = optdfa.train(cfg, tmp_path / "full")
    optdfa.train({**cfg, "epochs": 1}, tmp_path / "part")
    resumed = optdfa.train(cfg, tmp_path / "part", resume=True)
    assert all(torch.equal(a, b) for a, b in zip(_state(full), _state(resumed), strict=True))
    full_log = (tmp_path / "full" / "alignment.jsonl").read_text()
    assert full_log == (tmp_path / "part" / "alignment.jsonl").read_text()
    lines = [json.loads(line) for line in full_log.splitlines()]
    assert [line["step"] for line in lines] == list(range(0, 69, 4))
    assert (tmp_path / "full" / "alignment.png").stat().st_size > 10_000
    assert _strip(full.metrics) == _strip(resumed.metrics)
    assert [m["alignment"] for m in full.metrics] == [m["alignment"] for m in resumed.metrics]
    summary = json.loads((tmp_path / "part" / "summary.json").read_text())
    assert summary["alignment"]["measurements"] == len(lines)
    assert [layer["name"] for layer in summary["alignment"]["layers"]] == ["1", "4", "7"]


def test_hook_rejects_a_checkpoint_with_another_schedule():
    hook = AlignmentHook(5)
    with pytest.raises(optdfa.OptdfaError, match="every 3 steps"):
        hook.load_state_dict({"every": 3, "lines": [], "layers": [], "epoch_lines": []})
    with pytest.raises(optdfa.OptdfaError):
        AlignmentHook(0)


def test_config_validates_align_every():
    with pytest.raises(optdfa.OptdfaError, match="align every"):
        optdfa.TrainConfig(align_every=-1).validate()
    with pytest.raises(optdfa.OptdfaError, match="align_every"):
        optdfa.TrainConfig.from_dict({"align_every": "10"})
    assert optdfa.TrainConfig.from_dict({"align_every": 10}).align_every == 10


def _cli(*args, cwd):
    return subprocess.run(
        [sys.executable, "-m", "optdfa", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env={"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"},
    )


def test_cli_align_every(tmp_path):
    out = tmp_path / "run"
    ok = _cli(
        "train", "--dataset", "digits", "--epochs", "1", "--align-every", "6",
        "--quiet", "--out", str(out), cwd=tmp_path,
    )  # fmt: skip
    assert ok.returncode == 0, ok.stderr
    lines = (out / "alignment.jsonl").read_text().splitlines()
    assert [json.loads(line)["step"] for line in lines] == [0, 6]
    assert (out / "alignment.png").exists()
    assert "align_every = 6" in (out / "config.toml").read_text()
    bad = _cli("train", "--align-every", "-2", "--out", str(tmp_path / "bad"), cwd=tmp_path)
    assert bad.returncode != 0 and "non-negative integer" in bad.stderr
    assert not (tmp_path / "bad").exists()


def test_readout_init_scale_scales_only_the_output_layer():
    base = Trainer(optdfa.TrainConfig(**BASE), progress=False).model
    small = Trainer(optdfa.TrainConfig(**BASE, readout_init_scale=0.01), progress=False).model
    assert torch.equal(base[1].weight, small[1].weight)
    assert torch.allclose(small[-1].weight, 0.01 * base[-1].weight)
    with pytest.raises(optdfa.OptdfaError, match="readout init scale"):
        optdfa.TrainConfig(readout_init_scale=-1.0).validate()
