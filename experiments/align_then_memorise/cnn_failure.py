"""Experiment 4 — CNN failure: DFA trains a small CNN much worse than BP does, its conv layers
barely align, and the feedback a conv layer can use is badly conditioned.

On MNIST and Fashion-MNIST, for several seeds, a small CNN (two 5×5 conv layers with tanh and
max-pooling, a dense hidden layer) and a dense MLP baseline are trained with DFA and with BP
(same optimiser, same budget). We report the test accuracy gap BP − DFA for both architectures,
each layer's gradient alignment (per-sample cosine of DFA's signal with backprop's; for BP runs
the alignment DFA's signal would have at BP's weights), and the condition number of the
effective feedback each layer can respond to: the block B_l itself for a dense layer, the
position-summed block (n_out × channels) for a conv layer, whose kernel is shared over
positions. A sweep of the latter against channel count / width completes the picture.

Run from the repository root::

    python -m experiments.align_then_memorise.cnn_failure --data-dir DIR [--quick] [--seeds N]
"""

from __future__ import annotations

import time
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from experiments.align_then_memorise import common  # noqa: E402
from optdfa.alignment import SINGULAR_KAPPA, feedback_conditioning  # noqa: E402
from optdfa.config import TrainConfig  # noqa: E402
from optdfa.data import load_dataset  # noqa: E402
from optdfa.seeding import torch_generator  # noqa: E402

MODULE = "experiments.align_then_memorise.cnn_failure"
NAME = "atm-cnn-failure"
CLAIM = (
    "DFA fails to train convolutional networks: the accuracy gap to BP is larger for a CNN than "
    "for a dense network, conv layers do not align, and (deep linear theory) alignment needs "
    "well-conditioned alignment matrices, which the convolutional structure prevents."
)
DATASETS = ("mnist", "fashion-mnist")
ARCHS = {
    "cnn": {"model": "cnn", "channels": [16, 32], "kernel_size": 5, "hidden": [128]},
    "mlp": {"model": "mlp", "hidden": [256, 256]},
}
FULL = {
    "archs": ARCHS,
    "activation": "tanh",
    "optimizer": "adam",
    "lr": 1e-3,
    "batch_size": 128,
    "epochs": 2,
    "train_subset": None,
    "every": 20,
    "seeds": 3,
    "sweep_widths": [4, 8, 16, 32, 64, 128, 256, 512, 1024],
    "sweep_draws": 20,
}
QUICK = {
    **FULL,
    "archs": {
        "cnn": {**ARCHS["cnn"], "channels": [8, 16], "hidden": [64]},
        "mlp": {"model": "mlp", "hidden": [128, 128]},
    },
    "epochs": 1,
    "train_subset": 3_200,
    "every": 5,
    "seeds": 3,
    "sweep_draws": 5,
}


def config(
    settings: dict[str, Any], dataset: str, arch: str, method: str, seed: int, data_dir: str | None
) -> TrainConfig:
    return TrainConfig(
        dataset=dataset,
        data_dir=data_dir,
        train_subset=settings["train_subset"],
        activation=settings["activation"],
        method=method,
        optimizer=settings["optimizer"],
        lr=settings["lr"],
        batch_size=settings["batch_size"],
        epochs=settings["epochs"],
        seed=seed,
        align_every=settings["every"],
        **settings["archs"][arch],
    )


def final(curve: np.ndarray, tail: float = 0.2) -> float | None:
    tail_values = curve[-max(1, int(len(curve) * tail)) :]
    return None if np.all(np.isnan(tail_values)) else float(np.nanmean(tail_values))


def summarise_run(run: common.Run) -> dict[str, Any]:
    own = run.config.method == "dfa"
    layers = run.trainer.alignment.layers
    n = len(layers)
    key = "signal" if own else "reference_signal"
    last = run.lines[-1]
    return {
        "test_accuracy": run.trainer.metrics[-1]["test_accuracy"],
        "layers": [f"{info['kind']}" for info in layers],
        "signal": [final(run.series(key, i)) for i in range(n)],
        "signal_curves": [run.series(key, i) for i in range(n)],
        "weight": [final(run.series("weight", i)) for i in range(n)],
        "feedback_cond": last["feedback_cond"]["layers"],
        "cond": last["cond"]["layers"],
        "steps": run.steps,
        "seconds": run.seconds,
    }


def conditioning_sweep(widths: list[int], draws: int, n_out: int = 10) -> dict[str, Any]:
    """κ of a (n_out × width) i.i.d. Gaussian matrix — the effective feedback of a dense layer
    of that width, and (position sums of i.i.d. Gaussians being i.i.d. Gaussian) of a conv layer
    with that many channels — mean ± std over draws, with the Marchenko–Pastur prediction."""
    gen = torch_generator(0, "cnn-failure-sweep")
    rows = []
    for width in widths:
        kappas = [
            feedback_conditioning(
                torch.randn(n_out, width, generator=gen, dtype=torch.float64), (width,)
            )
            for _ in range(draws)
        ]
        # fewer columns than outputs: singular (some error directions get no feedback)
        ratio = n_out / width
        mp = (1 + ratio**0.5) / (1 - ratio**0.5) if ratio < 1 else None
        rows.append({"width": width, **common.stats(kappas), "marchenko_pastur": mp})
    return {"n_out": n_out, "rows": rows}


def _accuracy_panel(ax: Any, summary: dict, settings: dict[str, Any]) -> None:
    groups = [(d, a) for d in DATASETS for a in settings["archs"]]
    for g, (dataset, arch) in enumerate(groups):
        for k, (method, color) in enumerate((("bp", "tab:orange"), ("dfa", "tab:blue"))):
            s = summary[dataset][arch][method]["test_accuracy"]
            ax.bar(
                g + (k - 0.5) * 0.38, 100 * s["mean"], 0.38, yerr=100 * s["std"], color=color,
                capsize=3, label=method.upper() if g == 0 else None,
            )  # fmt: skip
    ax.set_xticks(range(len(groups)), [f"{d}\n{a.upper()}" for d, a in groups], fontsize=8)
    lows = [
        100 * summary[d][a][m]["test_accuracy"]["mean"] for d, a in groups for m in ("bp", "dfa")
    ]
    ax.set_ylim(max(0, min(lows) - 10), 100)
    ax.set_ylabel("test accuracy (%)")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3, axis="y")


def _alignment_panel(ax: Any, summary: dict, settings: dict[str, Any]) -> None:
    slots = []  # (arch, layer index, label)
    for arch in settings["archs"]:
        names = summary[DATASETS[0]][arch]["dfa"]["layer_names"]
        for i, s in enumerate(summary[DATASETS[0]][arch]["dfa"]["signal"]):
            if s["mean"] is not None:
                slots.append((arch, i, f"{arch.upper()}\n{names[i]}"))
    for k, dataset in enumerate(DATASETS):
        for x, (arch, i, _) in enumerate(slots):
            s = summary[dataset][arch]["dfa"]["signal"][i]
            ax.bar(
                x + (k - 0.5) * 0.38, s["mean"], 0.38, yerr=s["std"], capsize=2,
                color=("tab:blue", "tab:cyan")[k], label=dataset if x == 0 else None,
            )  # fmt: skip
    ax.axhline(0, color="grey", lw=0.8)
    ax.set_xticks(range(len(slots)), [label for *_, label in slots], fontsize=8)
    ax.set_ylabel("DFA gradient alignment (end of training)")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3, axis="y")


def _dynamics_panel(ax: Any, results: dict) -> None:
    for arch, style in (("cnn", "-"), ("mlp", "--")):
        runs = results["mnist"][arch]["dfa"]
        names = runs[0]["layers"]
        for i, value in enumerate(runs[0]["signal"]):
            if value is None:
                continue
            curves = [r["signal_curves"][i] for r in runs]
            common.plot_band(
                ax, np.maximum(runs[0]["steps"], 1), curves, f"{arch.upper()} {names[i]}{i + 1}",
                plt.get_cmap("tab10")(i + (0 if arch == "cnn" else 5)),
            )  # fmt: skip
            ax.lines[-1].set_linestyle(style)
    ax.set_xscale("log")
    ax.set_xlabel("step (MNIST, DFA)")
    ax.set_ylabel("gradient alignment")
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)


def _conditioning_panel(ax: Any, summary: dict, sweep: dict, settings: dict[str, Any]) -> None:
    rows = [r for r in sweep["rows"] if r["mean"] < SINGULAR_KAPPA]
    ax.errorbar(
        [r["width"] for r in rows], [r["mean"] for r in rows], yerr=[r["std"] for r in rows],
        fmt="o", color="k", capsize=3, label=f"random B̄ (n_out={sweep['n_out']}), ±1 std",
    )  # fmt: skip
    mp = [(r["width"], r["marchenko_pastur"]) for r in rows if r["marchenko_pastur"]]
    ax.plot(*zip(*mp, strict=True), "k:", label="Marchenko–Pastur edge ratio")
    ax.axvline(
        sweep["n_out"], color="grey", lw=0.8, ls="--", label="fewer units than outputs: singular"
    )
    n_conv = len(settings["archs"]["cnn"]["channels"])
    for arch, marker in (("cnn", "s"), ("mlp", "^")):
        fb = summary["mnist"][arch]["dfa"]["feedback_cond"]
        units = summary["mnist"][arch]["dfa"]["feedback_units"]
        for i, (s, u) in enumerate(zip(fb, units, strict=True)):
            if s["mean"] is None:
                continue
            kind = "channels" if arch == "cnn" and i < n_conv else "units"
            y = min(s["mean"], 1e3)
            ax.scatter(
                u,
                y,
                marker=marker,
                s=70,
                zorder=3,
                label=f"{arch.upper()} point {i + 1}: {u} {kind}, κ={s['mean']:.3g}",
            )
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("channels (conv) or units (dense) fed by B_l")
    ax.set_ylabel("κ of the effective feedback (capped at 10³ here)")
    ax.legend(fontsize=6)
    ax.grid(alpha=0.3)


def figure(results: dict, summary: dict, sweep: dict, settings: dict[str, Any]) -> Any:
    fig, axes = plt.subplots(1, 4, figsize=(22, 4.8))
    _accuracy_panel(axes[0], summary, settings)
    _alignment_panel(axes[1], summary, settings)
    _dynamics_panel(axes[2], results)
    _conditioning_panel(axes[3], summary, sweep, settings)
    fig.suptitle(
        f"CNN failure: DFA vs BP, {settings['seeds']} seeds (±1 std), {settings['epochs']} epoch(s) on "
        f"{settings['train_subset'] or 'all'} training images, {settings['optimizer']} lr {settings['lr']}"
    )
    fig.tight_layout()
    return fig


def feedback_units(trainer: Any) -> list[int]:
    """Channels of each conv feedback point, units of each dense one (layer order)."""
    units = []
    shapes = (
        {b.name: b.shape for b in trainer.rule.layout.blocks}
        if trainer.config.method == "dfa"
        else {}
    )
    for info in trainer.alignment.layers:
        shape = shapes.get(info["feedback_point"])
        units.append(None if shape is None else shape[0])
    return units


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run the experiment (``argv``: command-line arguments); returns the JSON payload."""
    p = common.parser(__doc__.splitlines()[0], data=True)
    args = p.parse_args(argv)
    out = common.prepare(args)
    settings = common.settings_for(args, QUICK, FULL)
    start = time.perf_counter()
    results: dict[str, dict[str, dict[str, list]]] = {}
    units: dict[str, list] = {}
    for dataset in DATASETS:
        data = load_dataset(dataset, data_dir=args.data_dir, train_subset=settings["train_subset"])
        results[dataset] = {}
        for arch in settings["archs"]:
            results[dataset][arch] = {"dfa": [], "bp": []}
            for seed in range(settings["seeds"]):
                for method in ("dfa", "bp"):
                    run = common.train_run(
                        config(settings, dataset, arch, method, seed, args.data_dir), data=data
                    )
                    if method == "dfa":
                        units[arch] = feedback_units(run.trainer)
                    r = summarise_run(run)
                    results[dataset][arch][method].append(r)
                    print(
                        f"{dataset} {arch} seed {seed} {method}: test accuracy {100 * r['test_accuracy']:.2f} %, "
                        f"gradient alignment {[None if v is None else round(v, 3) for v in r['signal']]} "
                        f"({r['seconds']:.0f} s)",
                        flush=True,
                    )
    summary: dict[str, Any] = {}
    for dataset, archs in results.items():
        summary[dataset] = {}
        for arch, methods in archs.items():
            summary[dataset][arch] = {}
            for method, runs in methods.items():
                n = len(runs[0]["signal"])
                summary[dataset][arch][method] = {
                    "test_accuracy": common.stats([r["test_accuracy"] for r in runs]),
                    "layer_names": [f"{k}{i + 1}" for i, k in enumerate(runs[0]["layers"])],
                    "signal": [common.stats([r["signal"][i] for r in runs]) for i in range(n)],
                    "weight": [common.stats([r["weight"][i] for r in runs]) for i in range(n)],
                    "feedback_cond": [
                        common.stats([r["feedback_cond"][i] for r in runs]) for i in range(n)
                    ],
                    "cond": [common.stats([r["cond"][i] for r in runs]) for i in range(n)],
                    "feedback_units": units[arch],
                }
            summary[dataset][arch]["gap_bp_minus_dfa"] = common.stats(
                [
                    b["test_accuracy"] - d["test_accuracy"]
                    for b, d in zip(methods["bp"], methods["dfa"], strict=True)
                ]
            )
    n_conv = len(settings["archs"]["cnn"]["channels"])
    verdicts = {}
    for dataset in DATASETS:
        cnn, mlp = summary[dataset]["cnn"], summary[dataset]["mlp"]
        conv_align = [s["mean"] for s in cnn["dfa"]["signal"][:n_conv]]
        dense_align = [s["mean"] for s in cnn["dfa"]["signal"][n_conv:] if s["mean"] is not None]
        mlp_align = [s["mean"] for s in mlp["dfa"]["signal"] if s["mean"] is not None]
        conv_kappa = [s["mean"] for s in cnn["dfa"]["feedback_cond"][:n_conv]]
        dense_kappa = [
            s["mean"]
            for s in (cnn["dfa"]["feedback_cond"][n_conv:] + mlp["dfa"]["feedback_cond"])
            if s["mean"] is not None
        ]
        verdicts[dataset] = {
            "gap_larger_for_cnn": cnn["gap_bp_minus_dfa"]["mean"] > mlp["gap_bp_minus_dfa"]["mean"],
            "conv_layers_align_less_than_dense_layers": max(conv_align)
            < min(dense_align + mlp_align),
            "conv_feedback_worse_conditioned": min(conv_kappa) > max(dense_kappa),
        }
    reproduced = all(all(v.values()) for v in verdicts.values())
    sweep = conditioning_sweep(settings["sweep_widths"], settings["sweep_draws"])
    payload = {
        "experiment": "cnn_failure",
        "claim": CLAIM,
        "command": common.command_line(MODULE, argv),
        "quick": args.quick,
        "settings": settings,
        "summary": summary,
        "verdicts": verdicts,
        "reproduced": reproduced,
        "conditioning_sweep": sweep,
        "seconds": time.perf_counter() - start,
    }
    json_path, png_path = common.write(
        out, NAME, payload, figure(results, summary, sweep, settings)
    )
    for dataset in DATASETS:
        print(
            f"{dataset}: BP − DFA accuracy gap, CNN {common.fmt(summary[dataset]['cnn']['gap_bp_minus_dfa'])}, "
            f"MLP {common.fmt(summary[dataset]['mlp']['gap_bp_minus_dfa'])}; verdicts {verdicts[dataset]}"
        )
    print(f"-> {'reproduced' if reproduced else 'NOT (fully) reproduced'}\n{json_path}\n{png_path}")

    return payload


if __name__ == "__main__":
    common.main_guard(main)
