"""The optdfa command: one clear line and a non-zero exit code for every bad input, nothing half-written."""

from __future__ import annotations

import gzip
import json
import subprocess
import sys

import pytest
import torch

import optdfa
from optdfa.cli.main import main
from optdfa.errors import TrainingDiverged
from optdfa.training import TrainConfig, TrainingHook


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    try:
        code = main(list(argv))
    except SystemExit as exc:  # argparse's own errors
        code = exc.code
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_line_error(code: int, err: str, *needles: str) -> None:
    assert code != 0
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert "Traceback" not in err and "error" in lines[0]
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])


@pytest.mark.parametrize(
    "argv,needles",
    [
        (
            ["--dataset", "cifar"],
            ["invalid choice: 'cifar'", "digits", "mnist", "fashion-mnist", "teacher"],
        ),
        (["--model", "rnn"], ["invalid choice: 'rnn'", "mlp", "cnn"]),
        (["--method", "hebb"], ["invalid choice: 'hebb'", "bp", "fa", "dfa"]),
        (["--backend", "quantum"], ["unknown backend 'quantum'", "digital"]),
        (["--method", "dfa", "--backend-option", "x=1"], ["no option(s) x"]),
        (
            ["--method", "bp", "--backend-option", "x=1"],
            ["backend options apply to --method dfa only"],
        ),
        (["--hidden", "256,,256"], ["--hidden", "comma-separated positive integers"]),
        (["--hidden", "256,-3"], ["--hidden", "positive integers"]),
        (["--lr", "0"], ["--lr", "positive number"]),
        (["--lr", "nan"], ["--lr", "positive number"]),
        (["--epochs", "0"], ["--epochs", "positive integer"]),
        (["--batch-size", "-8"], ["--batch-size", "positive integer"]),
        (["--dataset", "mnist"], ["--data-dir", "OPTDFA_DATA_DIR"]),
        (["--method", "bp", "--backend", "digital", "--resume"], ["--resume needs --out"]),
    ],
)
def test_bad_arguments(capsys, tmp_path, monkeypatch, argv, needles):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("OPTDFA_DATA_DIR", raising=False)
    code, _, err = run_cli(capsys, "train", "--quiet", *argv)
    assert_one_line_error(code, err, *needles)
    assert list(tmp_path.iterdir()) == []  # nothing written, not even runs/


def _fake_mnist(root, images: bytes, labels: bytes):
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for split in ("train", "t10k"):
        (raw / f"{split}-images-idx3-ubyte.gz").write_bytes(gzip.compress(images))
        (raw / f"{split}-labels-idx1-ubyte.gz").write_bytes(gzip.compress(labels))


def _idx(magic: int, dims: list[int], payload: bytes) -> bytes:
    return magic.to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in dims) + payload


@pytest.mark.parametrize(
    "kind,needle",
    [
        ("wrong-magic", "magic number 0x00000d03"),
        ("truncated", "is truncated"),
        ("missing", "missing data file"),
    ],
)
def test_corrupt_or_missing_idx(capsys, tmp_path, kind, needle):
    if kind == "missing":
        (tmp_path / "MNIST" / "raw").mkdir(parents=True)
    else:
        magic = 0x0D03 if kind == "wrong-magic" else 0x0803
        payload = bytes(6 * 28 * 28 - (0 if kind == "wrong-magic" else 100))
        _fake_mnist(tmp_path, _idx(magic, [6, 28, 28], payload), _idx(0x0801, [6], bytes(6)))
    out = tmp_path / "run"
    code, _, err = run_cli(
        capsys,
        "train",
        "--quiet",
        "--dataset",
        "mnist",
        "--data-dir",
        str(tmp_path),
        "--out",
        str(out),
    )
    assert_one_line_error(code, err, needle)
    assert not out.exists()


def test_unwritable_out(capsys, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    code, _, err = run_cli(
        capsys, "train", "--quiet", "--epochs", "1", "--out", str(blocker / "run")
    )
    assert_one_line_error(code, err, "cannot write to output directory")
    assert blocker.read_text() == "not a folder"


def test_config_file_errors(capsys, tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text('epochs = "ten"\n')
    code, _, err = run_cli(capsys, "train", "--config", str(bad))
    assert_one_line_error(code, err, "field 'epochs' must be an integer")
    bad.write_text("epochs = 3\nwarp_speed = 9\n")
    code, _, err = run_cli(capsys, "train", "--config", str(bad))
    assert_one_line_error(code, err, "unknown field(s) warp_speed")
    bad.write_text("epochs = [\n")
    code, _, err = run_cli(capsys, "train", "--config", str(bad))
    assert_one_line_error(code, err, "not valid TOML")
    code, _, err = run_cli(capsys, "train", "--config", str(tmp_path / "none.toml"))
    assert_one_line_error(code, err, "does not exist")


def test_existing_run_is_not_clobbered(capsys, tmp_path):
    out = tmp_path / "run"
    assert (
        run_cli(capsys, "train", "--quiet", "--epochs", "1", "--hidden", "16", "--out", str(out))[0]
        == 0
    )
    before = (out / "metrics.jsonl").read_text()
    code, _, err = run_cli(capsys, "train", "--quiet", "--epochs", "1", "--out", str(out))
    assert_one_line_error(code, err, "already holds a run", "--resume", "--overwrite")
    assert (out / "metrics.jsonl").read_text() == before
    code, _, err = run_cli(capsys, "train", "--resume", "--out", str(out), "--lr", "0.5")
    assert_one_line_error(code, err, "only --epochs may be given", "--lr")


def test_cli_resume_extends_a_run(capsys, tmp_path):
    out = tmp_path / "run"
    assert (
        run_cli(capsys, "train", "--quiet", "--epochs", "1", "--hidden", "16", "--out", str(out))[0]
        == 0
    )
    code, stdout, _ = run_cli(
        capsys, "train", "--quiet", "--resume", "--epochs", "2", "--out", str(out)
    )
    assert code == 0 and "2 epochs" in stdout
    assert [json.loads(x)["epoch"] for x in (out / "metrics.jsonl").read_text().splitlines()] == [
        1,
        2,
    ]


def test_diverging_run_stops_and_keeps_last_good_checkpoint(tmp_path):
    class Poison(TrainingHook):
        def on_step(self, trainer, step, x, y):
            if trainer.epoch == 1:  # during the second epoch, break the weights
                with torch.no_grad():
                    next(trainer.model.parameters()).fill_(float("nan"))

        def on_epoch_end(self, trainer, metrics):
            pass

        def state_dict(self):
            return {}

        def load_state_dict(self, state):
            pass

    out = tmp_path / "run"
    with pytest.raises(
        TrainingDiverged, match=r"epoch 2, batch 2 .*last good checkpoint \(epoch 1\) is kept"
    ):
        optdfa.train(TrainConfig(epochs=3, hidden=[16]), out, hooks=[Poison()])
    state = torch.load(out / "checkpoint.pt", weights_only=True)
    assert state["epoch"] == 1 and all(torch.isfinite(v).all() for v in state["model"].values())
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "diverged" and summary["epochs"] == 1


def test_diverging_cli_run_is_one_line(capsys, tmp_path):
    code, _, err = run_cli(
        capsys,
        "train",
        "--quiet",
        "--dataset",
        "teacher",
        "--optimizer",
        "sgd",
        "--lr",
        "1e6",
        "--epochs",
        "2",
        "--out",
        str(tmp_path / "run"),
    )
    assert_one_line_error(code, err, "the loss became", "Try a smaller --lr")
    assert code == 3


def test_console_script_runs_without_traceback(tmp_path):
    """The real entry point, in a fresh interpreter: success and a failure."""
    ok = subprocess.run(
        [
            sys.executable,
            "-m",
            "optdfa",
            "train",
            "--quiet",
            "--epochs",
            "1",
            "--hidden",
            "8",
            "--out",
            str(tmp_path / "r"),
        ],
        capture_output=True,
        text=True,
    )
    assert ok.returncode == 0, ok.stderr
    assert "test accuracy" in ok.stdout
    bad = subprocess.run(
        [sys.executable, "-m", "optdfa", "train", "--dataset", "nope"],
        capture_output=True,
        text=True,
    )
    assert (
        bad.returncode == 2
        and "Traceback" not in bad.stderr
        and len(bad.stderr.strip().splitlines()) == 1
    )
