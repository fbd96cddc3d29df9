"""Why deterministic ternarisation breaks DFA under Adam: the measurement behind the figure.

    python -m experiments.recipes.mechanism [--seeds 3] [--out docs/results]     # ≈ 1 min

On the noiseless ``ideal`` profile (the exact feedback matrix ``B_eff``, the encoding the only
error) it measures, for every shipped encoder:

1. the **sum** of the encoded error, ``Σ_k enc(e)_k``, on the softmax cross-entropy errors of a
   trained digits MLP (the error itself sums to zero), and the share of the encoded error that
   lies along the all-ones direction ``1/√n`` — the direction a zero-sum error never has and
   which ``B_eff`` projects onto one fixed feedback vector ``1·B_eff``;
2. the guard's **bias** (``optdfa.guard``: the persistent part of the delivered feedback's
   deviation from ``e·B_eff``) per epoch, and the test accuracy per epoch, under Adam and SGD
   (the CLI's defaults: Adam lr 1e-3, SGD lr 0.05 momentum 0.9; batch 128, 10 epochs).

Writes ``encoding-bias.json`` and ``encoding-bias.png`` (docs/physics-model.md, "Ternarisation
and Adam").
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

import optdfa  # noqa: E402
from optdfa.data import load_dataset  # noqa: E402
from optdfa.optics import parse_encoder  # noqa: E402
from optdfa.outputs import atomic_write_json  # noqa: E402
from optdfa.seeding import torch_generator  # noqa: E402

ENCODERS = ("stochastic", "bitplane:2", "ternary:0.1", "bitplane-nearest:2")
OPTIMIZERS = {"adam": {"optimizer": "adam"}, "sgd": {"optimizer": "sgd"}}


def encoded_sums(data: Any) -> dict[str, dict[str, float]]:
    """Sum and all-ones share of the encoded softmax errors of a trained (digital DFA) MLP."""
    result = optdfa.train({"dataset": "digits", "method": "dfa", "seed": 0}, data=data)
    model = result.model.eval()
    with torch.no_grad():
        logits = model(data.x_test)
    error = torch.softmax(logits, 1) - torch.nn.functional.one_hot(data.y_test, 10).float()
    error = error[error.abs().amax(1) > 1e-3]  # samples that still carry an error
    norms = error.norm(dim=1, keepdim=True)
    ones = torch.ones(10) / 10**0.5
    out = {}
    for spec in ENCODERS:
        encoder = parse_encoder(spec)
        gen = torch_generator(0, f"mechanism {spec}") if encoder.stochastic else None
        enc = encoder.encode(error, gen).decode()
        deviation = (enc - error) / norms  # relative, per sample
        persistent = deviation.mean(0)  # what does not average out over samples
        out[spec] = {
            "relative_sum": float((enc.sum(1, keepdim=True) / norms).mean()),
            "relative_error": float(deviation.norm(dim=1).mean()),
            "persistent": float(persistent.norm()),
            "persistent_cos_ones": float(persistent @ ones / persistent.norm().clamp_min(1e-30)),
            "samples": int(error.shape[0]),
        }
    return out


def training_curves(data: Any, seeds: int) -> dict[str, Any]:
    runs: dict[str, Any] = {}
    for opt, fields in OPTIMIZERS.items():
        for spec in ENCODERS:
            per_seed = []
            for seed in range(seeds):
                cfg = {
                    "dataset": "digits",
                    "method": "dfa",
                    "seed": seed,
                    "backend": "sim-opu",
                    "backend_options": {"profile": "ideal", "overrides": {"encoder": spec}},
                    **fields,
                }
                result = optdfa.train(cfg, data=data)
                per_seed.append(
                    {
                        "bias": [m["feedback_health"]["bias"] for m in result.metrics],
                        "alignment": [m["feedback_health"]["alignment"] for m in result.metrics],
                        "test_accuracy": [100 * m["test_accuracy"] for m in result.metrics],
                        "warnings": [w["kind"] for w in result.summary["guard"]["warnings"]],
                    }
                )
            runs[f"{opt} {spec}"] = per_seed
            final = [r["test_accuracy"][-1] for r in per_seed]
            print(f"{opt} {spec}: {statistics.mean(final):.2f} %", flush=True)
    digital = {}
    for opt, fields in OPTIMIZERS.items():
        final = []
        for seed in range(seeds):
            cfg = {"dataset": "digits", "method": "dfa", "seed": seed, **fields}
            final.append(100 * optdfa.train(cfg, data=data).summary["test_accuracy"])
        digital[opt] = final
    return {"runs": runs, "digital": digital}


def mean_curve(per_seed: list[dict[str, Any]], key: str) -> list[float]:
    return [statistics.mean(v) for v in zip(*(r[key] for r in per_seed), strict=True)]


def plot(sums: dict[str, Any], curves: dict[str, Any], path: Path) -> None:
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    ax = axes[0]
    names = list(sums)
    x = range(len(names))
    ax.bar(
        [i - 0.2 for i in x],
        [sums[n]["relative_error"] for n in names],
        0.4,
        label="‖enc(e) − e‖/‖e‖, per sample",
    )
    ax.bar(
        [i + 0.2 for i in x],
        [sums[n]["persistent"] for n in names],
        0.4,
        label="its persistent part (mean over samples)",
    )
    for i, n in enumerate(names):
        ax.text(
            i + 0.2,
            sums[n]["persistent"] + 0.01,
            f"cos 1: {sums[n]['persistent_cos_ones']:+.2f}",
            fontsize=7,
            ha="center",
        )
    ax.set_xticks(list(x), names)
    ax.set_ylabel("relative to ‖e‖ (softmax errors, trained MLP)")
    ax.set_title("A. encoding error and its persistent part")
    ax.legend(fontsize=7)
    ax.tick_params(axis="x", rotation=30)
    colors = dict(zip(ENCODERS, ("tab:green", "tab:olive", "tab:red", "tab:orange"), strict=True))
    ax = axes[1]
    for spec in ENCODERS:
        for opt, style in (("adam", "-"), ("sgd", ":")):
            bias = mean_curve(curves["runs"][f"{opt} {spec}"], "bias")
            ax.plot(
                range(1, len(bias) + 1), bias, style, color=colors[spec], label=f"{spec} ({opt})"
            )
    ax.axhline(0.2, color="k", lw=0.8, ls="--")
    ax.text(1, 0.21, "guard limit 0.2", fontsize=8)
    ax.set_xlabel("epoch")
    ax.set_ylabel("bias: ‖mean_b (d_b − e_b·B)/‖e_b·B‖‖")
    ax.set_title("B. persistent feedback deviation (ideal OPU)")
    ax.legend(fontsize=7, ncol=2)
    ax = axes[2]
    for spec in ENCODERS:
        for opt, style in (("adam", "-"), ("sgd", ":")):
            acc = mean_curve(curves["runs"][f"{opt} {spec}"], "test_accuracy")
            ax.plot(range(1, len(acc) + 1), acc, style, color=colors[spec], label=f"{spec} ({opt})")
    for opt, style in (("adam", "-"), ("sgd", ":")):
        ax.axhline(statistics.mean(curves["digital"][opt]), color="k", lw=0.8, ls=style)
    ax.set_xlabel("epoch")
    ax.set_ylabel("test accuracy %  (black: digital DFA)")
    ax.set_ylim(0, 100)
    ax.set_title("C. learning: Adam (solid) vs SGD (dotted)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--out", default="docs/results")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    data = load_dataset("digits")
    sums = encoded_sums(data)
    for spec, v in sums.items():
        print(
            f"{spec}: relative error {v['relative_error']:.3f}, persistent {v['persistent']:.3f} "
            f"(cos with 1: {v['persistent_cos_ones']:+.2f}), relative sum {v['relative_sum']:+.3f}"
        )
    curves = training_curves(data, args.seeds)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    command = " ".join(["python -m experiments.recipes.mechanism", *(argv or sys.argv[1:])])
    atomic_write_json(out / "encoding-bias.json", {"command": command, "sums": sums, **curves})
    plot(sums, curves, out / "encoding-bias.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
