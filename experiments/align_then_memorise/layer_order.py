"""Experiment 3 — layer order: in a deep network trained with DFA, alignment proceeds from the
bottom layers to the top.

A tanh MLP with ≥ 4 hidden layers learns MNIST with DFA (SGD with momentum). Every few steps we
log each hidden layer's gradient alignment (per-sample cosine of DFA's signal with backprop's)
and each layer's weight alignment (W_l vs B_lᵀ B_{l−1}; output: W_L vs B_{L−1}). Alignment keeps
growing slowly through training instead of reaching a flat plateau, so the primary
time-to-alignment of a layer is the first step at which its (smoothed) alignment reaches a
level common to all layers: half the smallest final alignment among the compared layers
(averaged over seeds). We also report the step at which each layer has made 90 % of its own rise
(as in experiment 1). Each layer is compared with the one below by a one-sided paired t-test
over seeds (p < 0.05). The claim reproduces if every layer aligns significantly later than the
one below, for both the gradient and the weight alignment; "partially" if only the bottom
layer is significantly first in both.

Run from the repository root::

    python -m experiments.align_then_memorise.layer_order --data-dir DIR [--quick] [--seeds N]
    python -m experiments.align_then_memorise.layer_order --data-dir DIR --backend sim-opu --profile lighton-aurora
"""

from __future__ import annotations

import time
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from scipy.stats import spearmanr, ttest_1samp  # noqa: E402

from experiments.align_then_memorise import common  # noqa: E402
from optdfa.config import TrainConfig  # noqa: E402
from optdfa.data import load_dataset  # noqa: E402

MODULE = "experiments.align_then_memorise.layer_order"
NAME = "atm-layer-order"
CLAIM = (
    "In deep non-linear networks (MNIST) the align-then-memorise process proceeds layer by layer, "
    "from the bottom of the network to the top: lower layers align first."
)

FULL = {
    "hidden": [256, 256, 256, 256],
    "activation": "tanh",
    "lr": 0.05,
    "momentum": 0.9,
    "batch_size": 128,
    "epochs": 10,
    "train_subset": None,
    "every": 5,
    "smooth": 3,
    "seeds": 5,
}
QUICK = {**FULL, "epochs": 2, "train_subset": 12_800, "seeds": 3}


def config(
    settings: dict[str, Any], seed: int, data_dir: str | None, backend: dict[str, Any]
) -> TrainConfig:
    return TrainConfig(
        dataset="mnist",
        data_dir=data_dir,
        train_subset=settings["train_subset"],
        model="mlp",
        hidden=list(settings["hidden"]),
        activation=settings["activation"],
        method="dfa",
        optimizer="sgd",
        lr=settings["lr"],
        momentum=settings["momentum"],
        batch_size=settings["batch_size"],
        epochs=settings["epochs"],
        seed=seed,
        align_every=settings["every"],
        **backend,
    )


def curves(run: common.Run, settings: dict[str, Any]) -> dict[str, Any]:
    n_hidden = len(settings["hidden"])
    w = settings["smooth"]
    signal = [common.smooth(run.series("signal", layer), w) for layer in range(n_hidden)]
    # weight alignment is defined from the second layer to the output layer
    weight = [common.smooth(run.series("weight", layer), w) for layer in range(1, n_hidden + 1)]
    return {"steps": run.steps, "signal": signal, "weight": weight}


def final(curve: np.ndarray) -> float | None:
    return common.tail_mean(curve, 0.1)


def pair_tests(
    times_per_seed: list[list[int | None]], first_layer: int, alpha: float = 0.05
) -> list[dict[str, Any]]:
    """For each pair of consecutive layers (l, l+1): is layer l+1 later than layer l?

    One-sided paired t-test over seeds of ``t_{l+1} − t_l`` (seeds where either time is
    undefined are left out); ``significant`` if p < ``alpha``. A tie within the seed-to-seed
    noise is not an order.
    """
    n_layers = len(times_per_seed[0]) if times_per_seed else 0
    out = []
    for layer in range(n_layers - 1):
        diffs = [
            t[layer + 1] - t[layer]
            for t in times_per_seed
            if t[layer] is not None and t[layer + 1] is not None
        ]
        if len(diffs) >= 2 and np.std(diffs) > 0:
            p = float(ttest_1samp(diffs, 0.0, alternative="greater").pvalue)
        elif diffs:
            p = 0.0 if min(diffs) > 0 else 1.0
        else:
            p = 1.0
        out.append(
            {
                "lower": first_layer + layer,
                "upper": first_layer + layer + 1,
                "mean_difference": float(np.mean(diffs)) if diffs else None,
                "seeds_in_order": int(sum(d > 0 for d in diffs)),
                "seeds": len(diffs),
                "p_value": p,
                "significant": p < alpha,
            }
        )
    return out


def half_min(values: list[float | None]) -> float | None:
    """Half the smallest defined value (the common alignment level), or None.

    None also when the smallest value is not positive: some layer did not align at all, and a
    level at or below zero would be "reached" at initialisation.
    """
    kept = [v for v in values if v is not None]
    return 0.5 * min(kept) if kept and min(kept) > 0 else None


def rank_correlation(times: list[int | None]) -> float | None:
    """Spearman correlation of layer index with time; ``None`` where it is undefined (a missing
    time, or all layers at the same step — e.g. none of them aligns)."""
    if any(t is None for t in times) or len(set(times)) < 2:
        return None
    return float(spearmanr(range(len(times)), times).statistic)


def ordered(times: list[int | None]) -> bool:
    return all(t is not None for t in times) and all(
        a < b for a, b in zip(times, times[1:], strict=False)
    )


def _nan(values: list[float | None]) -> np.ndarray:
    """Undefined entries (a layer that never reaches the level) as NaN, for plotting."""
    return np.array([np.nan if v is None else v for v in values], dtype=float)


def figure(
    runs: list[dict[str, Any]], timing: dict[str, Any], settings: dict[str, Any], title: str
) -> Any:
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.4))
    n_hidden = len(settings["hidden"])
    cmap = plt.get_cmap("viridis")
    steps = np.maximum(runs[0]["steps"], 1)
    for layer in range(n_hidden):
        color = cmap(layer / max(1, n_hidden))
        common.plot_band(
            axes[0], steps, [r["signal"][layer] for r in runs], f"hidden layer {layer + 1}", color
        )
        label = f"W{layer + 2}" + (" (output)" if layer == n_hidden - 1 else "")
        common.plot_band(axes[1], steps, [r["weight"][layer] for r in runs], label, color)
    if timing["signal_level"] is not None:
        axes[0].axhline(timing["signal_level"], color="k", ls=":", lw=1, label="common level")
    if timing["weight_level"] is not None:
        axes[1].axhline(
            timing["weight_level"],
            color="k",
            ls=":",
            lw=1,
            label="common level (W2…W" + str(n_hidden) + ")",
        )
    for ax, ylabel in ((axes[0], "gradient alignment"), (axes[1], "weight alignment")):
        ax.set_xscale("log")
        ax.set_xlabel("SGD step")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    ax = axes[2]
    sig = timing["signal_time_to_level"]
    wts = timing["weight_time_to_level"]
    xs = np.arange(1, n_hidden + 1)
    ax.errorbar(
        xs,
        _nan([s["mean"] for s in sig]),
        yerr=_nan([s["std"] for s in sig]),
        fmt="o-",
        capsize=4,
        label="gradient alignment (hidden layer l)",
    )
    ax.errorbar(
        xs[1:] + 0.05,
        _nan([s["mean"] for s in wts[:-1]]),
        yerr=_nan([s["std"] for s in wts[:-1]]),
        fmt="s--",
        capsize=4,
        label="weight alignment (W_l, hidden)",
    )
    ax.set_xticks(xs)
    ax.set_xlabel("layer l (1 = bottom)")
    ax.set_ylabel("steps to reach the common level")
    times = _nan([s["mean"] for s in (*sig, *wts[:-1])])
    if (times > 0).any():
        ax.set_yscale("log")
    else:
        ax.text(0.5, 0.5, "no layer reaches\nthe common level", transform=ax.transAxes,
                ha="center", va="center")  # fmt: skip
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run the experiment (``argv``: command-line arguments); returns the JSON payload."""
    p = common.parser(__doc__.splitlines()[0], data=True, backend=True)
    args = p.parse_args(argv)
    out = common.prepare(args)
    settings = common.settings_for(args, QUICK, FULL)
    backend = common.dfa_backend(args)
    start = time.perf_counter()
    data = load_dataset("mnist", data_dir=args.data_dir, train_subset=settings["train_subset"])
    n_hidden = len(settings["hidden"])
    runs, accuracies, test_losses, costs = [], [], [], []
    for seed in range(settings["seeds"]):
        run = common.train_run(config(settings, seed, args.data_dir, backend), data=data)
        runs.append(curves(run, settings))
        accuracies.append(run.trainer.metrics[-1]["test_accuracy"])
        test_losses.append(run.trainer.metrics[-1]["test_loss"])
        costs.append(common.device_cost(run))
        print(
            f"seed {seed}: test accuracy {100 * accuracies[-1]:.2f} %, final gradient alignment "
            f"per hidden layer {[final(c) for c in runs[-1]['signal']]} ({run.seconds:.0f} s)",
            flush=True,
        )
    finals_signal = [
        common.stats([final(r["signal"][layer]) for r in runs]) for layer in range(n_hidden)
    ]
    finals_weight = [
        common.stats([final(r["weight"][layer]) for r in runs]) for layer in range(n_hidden)
    ]
    # the common level: half the smallest mean final alignment of the compared layers
    signal_level = half_min([s["mean"] for s in finals_signal])
    weight_level = half_min([s["mean"] for s in finals_weight[:-1]])
    per_seed = []
    for r in runs:
        steps = r["steps"]
        per_seed.append(
            {
                "signal_time_to_level": [
                    common.time_to_level(steps, c, signal_level) for c in r["signal"]
                ],
                "signal_time_to_90pct": [common.time_to_rise(steps, c) for c in r["signal"]],
                "weight_time_to_level": [
                    common.time_to_level(steps, c, weight_level) for c in r["weight"]
                ],
                "weight_time_to_90pct": [common.time_to_rise(steps, c) for c in r["weight"]],
            }
        )
    timing: dict[str, Any] = {"signal_level": signal_level, "weight_level": weight_level}
    for key in (
        "signal_time_to_level",
        "signal_time_to_90pct",
        "weight_time_to_level",
        "weight_time_to_90pct",
    ):
        timing[key] = [common.stats([s[key][layer] for s in per_seed]) for layer in range(n_hidden)]
    spearman = [rank_correlation(s["signal_time_to_level"]) for s in per_seed]
    # layer numbers: hidden layer l for the gradient alignment, W_l (l ≥ 2) for the weights
    signal_pairs = pair_tests([s["signal_time_to_level"] for s in per_seed], first_layer=1)
    weight_pairs = pair_tests([s["weight_time_to_level"][:-1] for s in per_seed], first_layer=2)
    signal_order = all(p["significant"] for p in signal_pairs)
    weight_order = all(p["significant"] for p in weight_pairs)
    bottom_first = bool(signal_pairs and signal_pairs[0]["significant"]) and bool(
        weight_pairs and weight_pairs[0]["significant"]
    )
    if signal_order and weight_order:
        verdict = "reproduced"
    elif bottom_first:
        verdict = "partially reproduced"
    else:
        verdict = "not reproduced"
    summary = {
        "test_accuracy": common.stats(accuracies),
        "test_loss": common.stats(test_losses),
        "frames": common.stats([c["frames"] for c in costs]),
        "device_seconds": common.stats([c["device_seconds"] for c in costs]),
        "final_signal": finals_signal,
        "final_weight": finals_weight,
        "timing": timing,
        "signal_order_bottom_to_top_per_seed": [
            ordered(s["signal_time_to_level"]) for s in per_seed
        ],
        "weight_order_bottom_to_top_per_seed": [
            ordered(s["weight_time_to_level"][:-1]) for s in per_seed
        ],
        "spearman_layer_vs_time_per_seed": spearman,
        "signal_pairs": signal_pairs,
        "weight_pairs": weight_pairs,
        "signal_order_bottom_to_top": signal_order,
        "weight_order_bottom_to_top": weight_order,
        "bottom_layer_first": bottom_first,
    }
    suffix = common.backend_suffix(args)
    title = (
        f"Layer order, DFA, MLP 784-{'-'.join(map(str, settings['hidden']))}-10 {settings['activation']} "
        f"on MNIST, {settings['seeds']} seeds (±1 std), test accuracy "
        f"{common.fmt({k: (100 * v if isinstance(v, float) else v) for k, v in summary['test_accuracy'].items()}, 2)} %"
        + (
            f" — {backend['backend']} {backend['backend_options'].get('profile', '')}"
            if suffix
            else ""
        )
    )
    payload = {
        "experiment": "layer_order",
        "claim": CLAIM,
        "command": common.command_line(MODULE, argv),
        "quick": args.quick,
        "settings": {**settings, **backend},
        "summary": summary,
        "per_seed": per_seed,
        "reproduced": verdict == "reproduced",
        "verdict": verdict,
        "curves": {
            "signal": [
                common.curve_band(runs[0]["steps"], [r["signal"][layer] for r in runs])
                for layer in range(n_hidden)
            ],
            "weight": [
                common.curve_band(runs[0]["steps"], [r["weight"][layer] for r in runs])
                for layer in range(n_hidden)
            ],
        },
        "seconds": time.perf_counter() - start,
    }
    json_path, png_path = common.write(
        out, NAME + suffix, payload, figure(runs, timing, settings, title)
    )
    print(
        "steps for the gradient alignment of hidden layers 1..L-1 to reach "
        f"{signal_level}: {[common.fmt(s, 0) for s in timing['signal_time_to_level']]}\n"
        "steps for the weight alignment of W2..W(L-1) to reach "
        f"{weight_level}: {[common.fmt(s, 0) for s in timing['weight_time_to_level'][:-1]]}\n"
        f"later than the layer below (one-sided paired t-test, p): gradient alignment "
        f"{[round(p['p_value'], 4) for p in signal_pairs]}, weight alignment "
        f"{[round(p['p_value'], 4) for p in weight_pairs]} -> {verdict}\n{json_path}\n{png_path}"
    )

    return payload


if __name__ == "__main__":
    common.main_guard(main)
