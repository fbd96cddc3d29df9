"""Experiment 5 — optics on: experiments 1 and 3 with the digital feedback against the simulated
OPU, side by side.

Reads the JSON files that ``two_phases.py`` and ``layer_order.py`` wrote for each feedback
backend (digital, and ``--backend sim-opu --profile P [--opu encoder=E]``) and draws one figure:
DFA's gradient alignment, weight alignment and test loss over training in the teacher–student
task, its two timescales, and per layer of the deep MNIST network the final gradient and weight
alignment, the time to alignment and the test accuracy. The JSON holds the per-configuration
summary and, for each optical configuration, the difference to the digital run of the same seed
(student initialisation, data and order are the same; the feedback matrix is the device's own),
with a two-sided paired t-test over seeds.

Run from the repository root, after the runs::

    python -m experiments.align_then_memorise.optics_compare [--results DIR] [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from scipy.stats import ttest_rel  # noqa: E402

from experiments.align_then_memorise import common  # noqa: E402
from optdfa.errors import OptdfaError  # noqa: E402

MODULE = "experiments.align_then_memorise.optics_compare"
NAME = "atm-optics"
#: configurations, in the order they are drawn: (file suffix, label, colour, line style)
CONFIGS = (
    ("", "digital", "black", "-"),
    ("-sim-opu-ideal", "sim-opu ideal", "tab:green", "-"),
    ("-sim-opu-lighton-aurora", "sim-opu lighton-aurora", "tab:blue", "-"),
    ("-sim-opu-noisy-lab", "sim-opu noisy-lab", "tab:red", "-"),
    ("-sim-opu-noisy-lab-drift_per_frame-0", "noisy-lab without drift", "tab:orange", "-"),
    ("-sim-opu-ideal-encoder-stochastic", "ideal, stochastic encoder", "tab:green", "--"),
    ("-sim-opu-lighton-aurora-encoder-stochastic", "aurora, stochastic encoder", "tab:blue", "--"),
    ("-sim-opu-noisy-lab-encoder-stochastic", "noisy-lab, stochastic encoder", "tab:red", "--"),
    (
        "-sim-opu-noisy-lab-drift_per_frame-0-encoder-stochastic",
        "noisy-lab without drift, stochastic encoder",
        "tab:orange",
        "--",
    ),
)
TWO_PHASES = "atm-two-phases"
LAYER_ORDER = "atm-layer-order"
#: per-run quantities of experiment 1 compared seed by seed (DFA runs)
TWO_PHASES_KEYS = (
    "t_signal",
    "t_weight",
    "t_weight_peak",
    "t_loss",
    "plateau_signal",
    "peak_weight",
    "final_signal",
    "final_weight",
    "final_test_loss",
)


def _paired_settings(payload: dict[str, Any]) -> dict[str, Any]:
    """What must agree between configurations for a seed-by-seed comparison."""
    settings = {
        k: v for k, v in payload["settings"].items() if k not in ("backend", "backend_options")
    }
    return {**settings, "quick": payload.get("quick", False)}


def load(results: Path, experiment: str) -> dict[str, dict[str, Any]]:
    """The experiment's JSON for every configuration present, keyed by label.

    Every configuration must have the settings of the digital run (same seeds, sizes, quick
    or not): the comparison is seed by seed.
    """
    found: dict[str, dict[str, Any]] = {}
    for suffix, label, _, _ in CONFIGS:
        path = results / f"{experiment}{suffix}.json"
        if path.is_file():
            found[label] = json.loads(path.read_text())
    if "digital" in found:
        reference = _paired_settings(found["digital"])
        for label, payload in found.items():
            if _paired_settings(payload) != reference:
                raise OptdfaError(
                    f"{experiment}{_suffix(label)}.json was run with other settings than "
                    f"{experiment}.json (seeds, sizes or --quick): rerun it with the same ones"
                )
    return found


def paired(optics: list[float | None], digital: list[float | None]) -> dict[str, Any]:
    """Optics − digital over the seeds both define: mean, std, n and the paired t-test p."""
    pairs = [
        (float(a), float(b))
        for a, b in zip(optics, digital, strict=False)
        if a is not None and b is not None and not (math.isnan(a) or math.isnan(b))
    ]
    diffs = [a - b for a, b in pairs]
    out = common.stats(diffs)
    if len(pairs) >= 2 and np.std(diffs) > 0:
        out["p_value"] = float(ttest_rel([a for a, _ in pairs], [b for _, b in pairs]).pvalue)
    else:
        out["p_value"] = None
    return out


def _values(stats: dict[str, Any]) -> list[float | None]:
    return list(stats["values"])


def _run_source(payload: dict[str, Any]) -> dict[str, Any]:
    """How a run was made: its command, feedback backend and options, and number of seeds."""
    settings = payload["settings"]
    return {
        "command": payload["command"],
        "backend": settings["backend"],
        "backend_options": settings["backend_options"],
        "seeds": settings["seeds"],
    }


def compare_two_phases(runs: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Per configuration: DFA's summary, device cost and its paired difference to digital."""
    digital = runs.get("digital")
    out: dict[str, Any] = {}
    for label, payload in runs.items():
        dfa = payload["summary"]["dfa"]
        entry: dict[str, Any] = {
            **_run_source(payload),
            "alignment_first_per_seed": payload["alignment_first_per_seed"],
            "alignment_first_peak_clock_per_seed": payload.get(
                "alignment_first_peak_clock_per_seed"
            ),
            "reproduced": payload["reproduced"],
            "dfa": {k: dfa[k] for k in TWO_PHASES_KEYS if k in dfa},
            "bp_final_test_loss": payload["summary"]["bp"]["final_test_loss"],
        }
        for key in ("frames", "device_seconds"):
            if key in dfa:
                entry["dfa"][key] = dfa[key]
        if digital is not None and label != "digital":
            ref = digital["summary"]["dfa"]
            entry["minus_digital"] = {
                k: paired(_values(dfa[k]), _values(ref[k]))
                for k in TWO_PHASES_KEYS
                if k in dfa and k in ref
            }
        out[label] = entry
    return out


def compare_layer_order(runs: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Per configuration: accuracy, per-layer alignment and timing, and differences to digital."""
    digital = runs.get("digital")
    out: dict[str, Any] = {}
    for label, payload in runs.items():
        s = payload["summary"]
        entry: dict[str, Any] = {
            **_run_source(payload),
            "verdict": payload["verdict"],
            "test_accuracy": s["test_accuracy"],
            "final_signal": s["final_signal"],
            "final_weight": s["final_weight"],
            "signal_level": s["timing"]["signal_level"],
            "weight_level": s["timing"]["weight_level"],
            "signal_time_to_level": s["timing"]["signal_time_to_level"],
            "weight_time_to_level": s["timing"]["weight_time_to_level"],
            "signal_pairs_p": [p["p_value"] for p in s["signal_pairs"]],
            "weight_pairs_p": [p["p_value"] for p in s["weight_pairs"]],
        }
        for key in ("test_loss", "frames", "device_seconds"):
            if key in s:
                entry[key] = s[key]
        if digital is not None and label != "digital":
            ref = digital["summary"]
            entry["minus_digital"] = {
                "test_accuracy": paired(_values(s["test_accuracy"]), _values(ref["test_accuracy"])),
                "final_signal": [
                    paired(_values(a), _values(b))
                    for a, b in zip(s["final_signal"], ref["final_signal"], strict=True)
                ],
                "final_weight": [
                    paired(_values(a), _values(b))
                    for a, b in zip(s["final_weight"], ref["final_weight"], strict=True)
                ],
            }
        out[label] = entry
    return out


def _style(label: str) -> tuple[str, str]:
    for _, name, color, ls in CONFIGS:
        if name == label:
            return color, ls
    raise KeyError(label)


def _band(ax: Any, band: dict[str, list], label: str, log: bool = False) -> None:
    color, ls = _style(label)
    x = np.maximum(np.array(band["step"], dtype=float), 1)
    mean = np.array([np.nan if v is None else v for v in band["mean"]], dtype=float)
    std = np.array([np.nan if v is None else v for v in band["std"]], dtype=float)
    ax.plot(x, mean, color=color, ls=ls, label=label, lw=1.3)
    low = mean - std
    if log:
        low = np.where(low > 0, low, np.nan)
    ax.fill_between(x, low, mean + std, color=color, alpha=0.12, lw=0)


def _errorbar(ax: Any, x: np.ndarray, stats: list[dict[str, Any]], label: str, **kw: Any) -> None:
    color, ls = _style(label)
    mean = [np.nan if s["mean"] is None else s["mean"] for s in stats]
    std = [np.nan if s["std"] is None else s["std"] for s in stats]
    ax.errorbar(x, mean, yerr=std, color=color, ls=ls, capsize=3, marker="o", ms=4, label=label)


def figure(two: dict[str, dict[str, Any]], deep: dict[str, dict[str, Any]]) -> Any:
    rows = int(bool(two)) + int(bool(deep))
    fig, axes = plt.subplots(rows, 4, figsize=(20, 4.6 * rows), squeeze=False)
    row = 0
    if two:
        ax_sig, ax_w, ax_loss, ax_t = axes[row]
        for label, payload in two.items():
            curves = payload["curves"]["dfa"]
            _band(ax_sig, curves["signal"], label)
            _band(ax_w, curves["weight"], label)
            _band(ax_loss, curves["test_loss"], label, log=True)
        for ax, ylabel in (
            (ax_sig, "DFA gradient alignment (delivered feedback)"),
            (ax_w, "DFA weight alignment cos(v, b_eff)"),
            (ax_loss, "DFA test loss (mean ± std)"),
        ):
            ax.set_xscale("log")
            ax.set_xlabel("SGD step")
            ax.set_ylabel(ylabel)
            ax.grid(alpha=0.3)
        ax_loss.set_yscale("log")
        ax_sig.legend(fontsize=8, loc="lower right")
        labels = list(two)
        x = np.arange(len(labels))
        for offset, key, marker, text in (
            (-0.1, "t_signal", "o", "90 % of the alignment rise"),
            (0.1, "t_loss", "s", "90 % of the loss decrease"),
        ):
            stats = [two[label]["summary"]["dfa"][key] for label in labels]
            ax_t.errorbar(
                x + offset,
                [np.nan if s["mean"] is None else s["mean"] for s in stats],
                yerr=[np.nan if s["std"] is None else s["std"] for s in stats],
                fmt=marker,
                capsize=4,
                label=text,
            )
        ax_t.set_xticks(
            x,
            [label.replace("sim-opu ", "") for label in labels],
            fontsize=8,
            rotation=30,
            ha="right",
        )
        ax_t.set_yscale("log")
        ax_t.set_ylabel("DFA: SGD step")
        ax_t.grid(alpha=0.3)
        ax_t.legend(fontsize=8)
        ax_sig.set_title("1. teacher–student (two phases)", loc="left")
        row += 1
    if deep:
        ax_sig, ax_w, ax_time, ax_acc = axes[row]
        first = next(iter(deep.values()))
        n_hidden = len(first["settings"]["hidden"])
        layers = np.arange(1, n_hidden + 1)
        for i, (label, payload) in enumerate(deep.items()):
            s = payload["summary"]
            shift = 0.04 * (i - len(deep) / 2)
            _errorbar(ax_sig, layers + shift, s["final_signal"], label)
            _errorbar(ax_w, np.arange(2, n_hidden + 2) + shift, s["final_weight"], label)
            _errorbar(ax_time, layers + shift, s["timing"]["signal_time_to_level"], label)
        ax_sig.set_xticks(layers)
        ax_sig.set_xlabel("hidden layer l (1 = bottom)")
        ax_sig.set_ylabel("gradient alignment, end of training")
        ax_w.set_xticks(np.arange(2, n_hidden + 2))
        ax_w.set_xlabel(f"weight W_l (W{n_hidden + 1}: output)")
        ax_w.set_ylabel("weight alignment, end of training")
        ax_time.set_xticks(layers)
        ax_time.set_xlabel("hidden layer l")
        ax_time.set_ylabel("steps to the run's common gradient-alignment level")
        times = [
            t["mean"]
            for p in deep.values()
            for t in p["summary"]["timing"]["signal_time_to_level"]
            if t["mean"] is not None
        ]
        if any(t > 0 for t in times):
            ax_time.set_yscale("log")
        for ax in (ax_sig, ax_w, ax_time):
            ax.grid(alpha=0.3)
            ax.axhline(0, color="grey", lw=0.8)
        ax_sig.legend(fontsize=7)
        labels = list(deep)
        acc = [deep[label]["summary"]["test_accuracy"] for label in labels]
        ax_acc.barh(
            np.arange(len(labels)),
            [100 * a["mean"] for a in acc],
            xerr=[100 * a["std"] for a in acc],
            color=[_style(label)[0] for label in labels],
            alpha=0.7,
            capsize=4,
        )
        for i, a in enumerate(acc):
            ax_acc.text(
                100 * (a["mean"] + a["std"]) + 1, i, f"{100 * a['mean']:.2f} %", va="center",
                fontsize=8,
            )  # fmt: skip
        ax_acc.set_yticks(np.arange(len(labels)), labels, fontsize=8)
        ax_acc.invert_yaxis()
        ax_acc.set_xlim(0, 100)
        ax_acc.set_xlabel("test accuracy after training (%)")
        ax_sig.set_title("3. deep MLP on MNIST (layer order)", loc="left")
    fig.suptitle(
        "Optics on: DFA with the digital feedback and with the simulated OPU "
        "(mean ± 1 std over seeds; solid: the profile as shipped, dashed: stochastic encoder)"
    )
    fig.tight_layout()
    return fig


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Compare the runs found in ``--results``; returns the JSON payload."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--results",
        type=Path,
        default=common.DEFAULT_OUT,
        help=f"folder holding the experiments' JSON files (default {common.DEFAULT_OUT})",
    )
    p.add_argument("--out", type=Path, default=None, help="output folder (default: --results)")
    args = p.parse_args(argv)
    two = load(args.results, TWO_PHASES)
    deep = load(args.results, LAYER_ORDER)
    usable = {
        name: runs
        for name, runs in ((TWO_PHASES, two), (LAYER_ORDER, deep))
        if "digital" in runs and len(runs) > 1
    }
    if not usable:
        raise OptdfaError(
            f"no experiment in {args.results} has both a digital and an optical run "
            f"(expected {TWO_PHASES}.json and {TWO_PHASES}-sim-opu-<profile>.json, or the same "
            f"for {LAYER_ORDER})"
        )
    two = usable.get(TWO_PHASES, {})
    deep = usable.get(LAYER_ORDER, {})
    payload = {
        "experiment": "optics_compare",
        "command": common.command_line(MODULE, argv),
        "sources": {
            name: {label: f"{name}{_suffix(label)}.json" for label in runs}
            for name, runs in usable.items()
        },
        "two_phases": compare_two_phases(two) if two else None,
        "layer_order": compare_layer_order(deep) if deep else None,
    }
    json_path, png_path = common.write(args.out or args.results, NAME, payload, figure(two, deep))
    print(f"{json_path}\n{png_path}")
    return payload


def _suffix(label: str) -> str:
    return next(suffix for suffix, name, _, _ in CONFIGS if name == label)


if __name__ == "__main__":
    common.main_guard(main)
