"""Experiment 1 — two phases: a teacher–student two-layer network learns by first aligning,
then memorising.

A student ``erf`` network with K hidden units learns a teacher with M < K hidden units
(inputs in D dimensions, ½-squared-error regression) by online-like SGD (a small batch, one pass
over a large sample). For DFA and BP, with several seeds, we record every few steps the test
loss, the gradient alignment of the hidden layer (per-sample cosine of DFA's signal with
backprop's), the update alignment and the output layer's weight alignment cos(v, b). For BP the
alignment is measured against the feedback matrix a DFA run of the same seed uses (DFA's
update at BP's weights): it shows BP does not align with B.

Reported: the step at which DFA's gradient (and weight) alignment has made 90 % of its rise,
and the step at which the test loss has made 90 % of its decrease. The paper's claim holds if
alignment comes first. Where the alignment rises and then decays (the optical feedback matrix
of a drifting medium), the plateau — the mean of the second half — lies below the peak; a second
clock, the step at which the weight alignment (smooth: no feedback noise enters it) has made
90 % of its rise to its peak, is reported alongside (``t_weight_peak``,
``alignment_first_peak_clock_per_seed``).

Run from the repository root::

    python -m experiments.align_then_memorise.two_phases [--quick] [--seeds N]
    python -m experiments.align_then_memorise.two_phases --backend sim-opu --profile noisy-lab
"""

from __future__ import annotations

import time
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from experiments.align_then_memorise import common  # noqa: E402
from optdfa.config import TrainConfig  # noqa: E402
from optdfa.errors import OptdfaError  # noqa: E402

MODULE = "experiments.align_then_memorise.two_phases"
NAME = "atm-two-phases"
CLAIM = (
    "Shallow networks trained with DFA first align (gradient alignment grows to its plateau) "
    "and then memorise (the loss makes most of its decrease afterwards)."
)

FULL = {
    "input_dim": 500,
    "teacher_hidden": 2,
    "student_hidden": 20,
    "n_train": 120_000,
    "n_test": 5_000,
    "batch_size": 8,
    "lr": 0.1,
    "readout_init_scale": 0.01,
    "every": 10,
    "smooth": 9,
    "seeds": 5,
}
QUICK = {
    **FULL,
    "seeds": 3,
    "input_dim": 200,
    "n_train": 12_000,
    "n_test": 2_000,
    "every": 10,
    "smooth": 5,
}


def config(
    settings: dict[str, Any], method: str, seed: int, backend: dict[str, Any]
) -> TrainConfig:
    fields: dict[str, Any] = {
        "dataset": "teacher",
        "teacher": common.teacher_spec(settings),
        "data_seed": seed,
        "model": "mlp",
        "hidden": [settings["student_hidden"]],
        "activation": "erf",
        "readout_init_scale": settings["readout_init_scale"],
        "method": method,
        "optimizer": "sgd",
        "momentum": 0.0,
        "lr": settings["lr"],
        "batch_size": settings["batch_size"],
        "epochs": 1,
        "seed": seed,
        "align_every": settings["every"],
    }
    if method == "dfa":
        fields.update(backend)
    return TrainConfig(**fields)


def analyse(run: common.Run, settings: dict[str, Any]) -> dict[str, Any]:
    """Per-run curves (gradient/update/weight alignment, test loss) and the two timescales."""
    steps = run.steps
    own = run.config.method == "dfa"
    signal = run.series("signal" if own else "reference_signal", 0)
    update = run.series("update" if own else "reference_update", 0)
    weight = run.series("weight", 1)
    test_loss = np.array([row[1] for row in run.probe.rows])
    w = settings["smooth"]
    return {
        "steps": steps,
        "signal": signal,
        "update": update,
        "weight": weight,
        "test_loss": test_loss,
        "t_signal": common.time_to_rise(steps, common.smooth(signal, w)),
        "t_weight_peak": common.time_to_peak_fraction(steps, common.smooth(weight, w)),
        "peak_weight": common.nanmax(common.smooth(weight, w)),
        "t_weight": common.time_to_rise(steps, common.smooth(weight, w)),
        "t_loss": common.time_to_fall(steps, test_loss),
        "t_log_loss": common.time_to_fall(steps, np.log(test_loss)),
        "final_test_loss": float(test_loss[-1]),
        "initial_test_loss": float(test_loss[0]),
        "plateau_signal": common.tail_mean(signal, 0.5),
        "final_signal": common.tail_mean(signal, 0.1),
        "final_weight": common.tail_mean(weight, 0.1),
        "seconds": run.seconds,
        **common.device_cost(run),
    }


def figure(results: dict[str, list[dict[str, Any]]], title: str) -> Any:
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    colors = {"dfa": "tab:blue", "bp": "tab:orange"}
    labels = {"dfa": "DFA", "bp": "BP (measured against DFA's B)"}
    for method, runs in results.items():
        steps = runs[0]["steps"]
        x = np.maximum(steps, 1)
        common.plot_band(
            axes[0], x, [r["test_loss"] for r in runs], labels[method].split(" ")[0], colors[method],
            log=True,
        )  # fmt: skip
        common.plot_band(axes[1], x, [r["signal"] for r in runs], labels[method], colors[method])
        common.plot_band(axes[2], x, [r["weight"] for r in runs], labels[method], colors[method])
    dfa = results["dfa"]
    for ax in axes:
        for key, style, text in (
            ("t_signal", ":", "90 % aligned"),
            ("t_loss", "--", "90 % of loss decrease"),
        ):
            ts = [r[key] for r in dfa if r[key] is not None]
            if ts:
                ax.axvline(
                    max(1, float(np.mean(ts))), color="k", ls=style, lw=1, label=f"DFA {text}"
                )
        ax.set_xscale("log")
        ax.set_xlabel("SGD step")
        ax.grid(alpha=0.3)
    axes[0].set_yscale("log")
    axes[0].set_ylabel("test loss (½ squared error; geometric mean, ×÷ std)")
    axes[1].set_ylabel("gradient alignment, hidden layer")
    axes[2].set_ylabel("weight alignment cos(v, b)")
    axes[0].legend(fontsize=8)
    axes[1].legend(fontsize=8, loc="lower right")
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def _before(t_align: int | None, t_loss: int | None) -> bool:
    return t_align is not None and t_loss is not None and t_align < t_loss


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run the experiment (``argv``: command-line arguments); returns the JSON payload."""
    p = common.parser(__doc__.splitlines()[0], backend=True)
    p.add_argument(
        "--readout-init-scale",
        type=float,
        default=None,
        help=f"scale of the student's initial output weights (default {FULL['readout_init_scale']}; "
        "1 is the standard initialisation)",
    )
    args = p.parse_args(argv)
    out = common.prepare(args)
    settings = common.settings_for(args, QUICK, FULL)
    if args.readout_init_scale is not None:
        if not args.readout_init_scale >= 0:
            raise OptdfaError("--readout-init-scale must be a non-negative number")
        settings["readout_init_scale"] = args.readout_init_scale
    backend = common.dfa_backend(args)
    start = time.perf_counter()
    results: dict[str, list[dict[str, Any]]] = {"dfa": [], "bp": []}
    for seed in range(settings["seeds"]):
        for method in ("dfa", "bp"):
            run = common.train_run(
                config(settings, method, seed, backend), probe_every=settings["every"]
            )
            results[method].append(analyse(run, settings))
            r = results[method][-1]
            print(
                f"seed {seed} {method}: t_align {r['t_signal']}  t_loss {r['t_loss']} "
                f"(log loss {r['t_log_loss']})  "
                f"final test loss {r['final_test_loss']:.4g}  final alignment {r['final_signal']}  "
                f"({r['seconds']:.1f} s)",
                flush=True,
            )
    dfa = results["dfa"]
    first = [_before(r["t_signal"], r["t_loss"]) for r in dfa]
    first_peak = [_before(r["t_weight_peak"], r["t_loss"]) for r in dfa]
    summary = {
        method: {
            key: common.stats([r[key] for r in runs])
            for key in (
                "t_signal",
                "t_weight_peak",
                "t_weight",
                "t_loss",
                "t_log_loss",
                "initial_test_loss",
                "final_test_loss",
                "plateau_signal",
                "peak_weight",
                "final_signal",
                "final_weight",
                "frames",
                "device_seconds",
            )
        }
        for method, runs in results.items()
    }
    reproduced = all(first)
    suffix = common.backend_suffix(args)
    if settings["readout_init_scale"] != FULL["readout_init_scale"]:
        suffix += f"-readout{settings['readout_init_scale']:g}"
    title = (
        f"Two phases, teacher–student (D={settings['input_dim']}, M={settings['teacher_hidden']}, "
        f"K={settings['student_hidden']}, initial readout ×{settings['readout_init_scale']:g}), "
        f"{len(dfa)} seeds, ±1 std"
        + (
            f" — DFA on {backend['backend']} {backend['backend_options'].get('profile', '')}"
            if backend["backend"] != "digital"
            else ""
        )
    )
    payload = {
        "experiment": "two_phases",
        "claim": CLAIM,
        "command": common.command_line(MODULE, argv),
        "quick": args.quick,
        "settings": {**settings, "fraction": common.FRACTION, **backend},
        "summary": summary,
        "alignment_first_per_seed": first,
        "alignment_first_peak_clock_per_seed": first_peak,
        "reproduced": reproduced,
        "runs": {
            method: [{k: v for k, v in r.items() if not isinstance(v, np.ndarray)} for r in runs]
            for method, runs in results.items()
        },
        "curves": {
            method: {
                key: common.curve_band(runs[0]["steps"], [r[key] for r in runs])
                for key in ("test_loss", "signal", "update", "weight")
            }
            for method, runs in results.items()
        },
        "seconds": time.perf_counter() - start,
    }
    json_path, png_path = common.write(out, NAME + suffix, payload, figure(results, title))
    s = summary["dfa"]
    print(
        f"DFA: 90 % alignment at step {common.fmt(s['t_signal'], 0)}, 90 % of the loss decrease at "
        f"step {common.fmt(s['t_loss'], 0)}: alignment first in {sum(first)}/{len(first)} seeds "
        f"-> {'reproduced' if reproduced else 'NOT reproduced'}\n"
        f"(90 % of the rise to the peak weight alignment: step {common.fmt(s['t_weight_peak'], 0)}, "
        f"first in {sum(first_peak)}/{len(first_peak)} seeds)\n{json_path}\n{png_path}"
    )

    return payload


if __name__ == "__main__":
    common.main_guard(main)
