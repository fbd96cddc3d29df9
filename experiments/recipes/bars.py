"""The bars of issue 11: optical DFA against digital DFA under ordinary recipes, seed-paired.

    python -m experiments.recipes.bars STUDY [STUDY …] [--seeds N] [--data-dir DIR] [--out docs/results]
    python -m experiments.recipes.bars --report         # recipes-bars.md from the JSON files

Studies (``STUDIES``; each writes ``recipes-bars-<study>.json``):

- ``digits-defaults`` — digits, the CLI's defaults (Adam), every shipped profile and lightonml;
- ``digits-sgd`` — digits, the baselines' SGD recipe (lr 0.1, momentum 0.9, batch 32, 40 epochs,
  cosine), the current defaults against the encoding the profiles had before 2026-12-02
  (``PREVIOUS``: ``ternary:0.1``, pixel normalisation, noisy-lab calibrated every 20 000 frames);
- ``mnist-adam`` — MNIST 784-800-800-10 tanh, the CLI's defaults (Adam, 10 epochs);
- ``mnist-sgd`` — MNIST 784-256-256-10 ReLU and 784-1000-1000-1000-10 tanh, SGD lr 0.01
  momentum 0.9, batch 128, 2 epochs;
- ``fmnist-cnn`` — Fashion-MNIST, the CNN of the CNN-failure experiment (channels 16, 32,
  kernel 5, dense 128, tanh), the CLI's defaults.

Every variant runs the same seeds as digital DFA; ``Δ`` is the mean paired difference (variant −
digital, pp) with its two-sided 95 % t confidence interval over seeds. The bars (``BARS``) were
fixed by the issue before any run.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
from pathlib import Path
from typing import Any

import torch
from scipy import stats

import optdfa
from optdfa.data import load_dataset
from optdfa.errors import OptdfaError
from optdfa.outputs import atomic_write_json, atomic_write_text

HERE = Path(__file__).resolve().parent
SHARED = HERE.parents[2] / "shared" / "datasets"

#: the profiles' encoding before 2026-12-02 (the published sim-OPU results used it)
PREVIOUS = {"encoder": "ternary:0.1", "reference_normalisation": "pixel"}
PREVIOUS_NOISY_LAB = {**PREVIOUS, "calibration_frames": 32, "recalibrate_every_frames": 20000}

DIGITAL = {"backend": "digital"}


def sim(profile: str, **overrides: Any) -> dict[str, Any]:
    options: dict[str, Any] = {"profile": profile}
    if overrides:
        options["overrides"] = overrides
    return {"backend": "sim-opu", "backend_options": options}


def lightonml(**overrides: Any) -> dict[str, Any]:
    options: dict[str, Any] = {"simulated": True}
    if overrides:
        options["overrides"] = overrides
    return {"backend": "lightonml", "backend_options": options}


OPTICAL = {
    "sim-opu ideal": sim("ideal"),
    "sim-opu lighton-aurora": sim("lighton-aurora"),
    "sim-opu noisy-lab": sim("noisy-lab"),
    "lightonml simulated": lightonml(),
}
OPTICAL_PREVIOUS = {
    "sim-opu ideal, previous encoding": sim("ideal", **PREVIOUS),
    "sim-opu lighton-aurora, previous encoding": sim("lighton-aurora", **PREVIOUS),
    "sim-opu noisy-lab, previous encoding": sim("noisy-lab", **PREVIOUS_NOISY_LAB),
    "lightonml simulated, previous encoding": lightonml(**PREVIOUS),
}
SGD_RECIPE = {
    "optimizer": "sgd",
    "lr": 0.1,
    "momentum": 0.9,
    "batch_size": 32,
    "epochs": 40,
    "lr_schedule": "cosine",
}
MNIST_SGD = {"optimizer": "sgd", "lr": 0.01, "momentum": 0.9, "batch_size": 128, "epochs": 2}
CNN = {"model": "cnn", "channels": [16, 32], "kernel_size": 5, "hidden": [128]}

#: study → (dataset, seeds, {model name: base config}, {variant: backend fields}, bars)
STUDIES: dict[str, dict[str, Any]] = {
    "digits-defaults": {
        "dataset": "digits",
        "seeds": 3,
        "models": {"MLP 64-256-256-10 tanh": {}},
        "variants": OPTICAL,
        # variant → (kind, value): "delta" Δ ≥ −value pp; "accuracy" mean ≥ value %
        "bars": {
            "sim-opu ideal": ("delta", 1.0),
            "sim-opu lighton-aurora": ("delta", 1.5),
            "lightonml simulated": ("delta", 1.5),
            "sim-opu noisy-lab": ("accuracy", 90.0),
        },
    },
    "digits-sgd": {
        "dataset": "digits",
        "seeds": 8,
        "models": {"MLP 64-256-256-10 tanh, SGD recipe": SGD_RECIPE},
        "variants": {**OPTICAL, **OPTICAL_PREVIOUS},
        # no profile loses more than it did with the previous encoding
        "bars": {name: ("no worse than", f"{name}, previous encoding") for name in OPTICAL},
    },
    "mnist-adam": {
        "dataset": "mnist",
        "seeds": 3,
        "models": {"MLP 784-800-800-10 tanh": {"hidden": [800, 800]}},
        "variants": {"sim-opu lighton-aurora": sim("lighton-aurora")},
        "bars": {"sim-opu lighton-aurora": ("delta", 0.5)},
    },
    "mnist-sgd": {
        "dataset": "mnist",
        "seeds": 3,
        "models": {
            "MLP 784-256-256-10 ReLU": {**MNIST_SGD, "hidden": [256, 256], "activation": "relu"},
            "MLP 784-1000-1000-1000-10 tanh": {**MNIST_SGD, "hidden": [1000, 1000, 1000]},
        },
        "variants": {
            "sim-opu lighton-aurora": sim("lighton-aurora"),
            "lightonml simulated": lightonml(),
        },
        "bars": {"sim-opu lighton-aurora": ("delta", 1.0), "lightonml simulated": ("delta", 1.0)},
    },
    "fmnist-cnn": {
        "dataset": "fashion-mnist",
        "seeds": 3,
        "models": {"CNN 16-32 k5, dense 128, tanh": CNN},
        "variants": {"sim-opu lighton-aurora": sim("lighton-aurora")},
        "bars": {"sim-opu lighton-aurora": ("delta", 1.0)},
    },
}


def paired(diffs: list[float]) -> dict[str, float]:
    """Mean of seed-paired differences and its two-sided 95 % t interval."""
    n = len(diffs)
    mean = statistics.mean(diffs)
    if n < 2:
        return {"mean": mean, "low": None, "high": None, "n": n}
    half = stats.t.ppf(0.975, n - 1) * statistics.stdev(diffs) / math.sqrt(n)
    return {"mean": mean, "low": mean - half, "high": mean + half, "n": n}


def run_study(
    name: str,
    seeds: int | None,
    data_dir: str | None,
    first_seed: int = 0,
    only: list[str] | None = None,
) -> dict[str, Any]:
    """Run ``name``'s variants (``only``: these and digital DFA) on the seeds asked for."""
    study = STUDIES[name]
    n = seeds or study["seeds"]
    variants = {k: v for k, v in study["variants"].items() if not only or k in only}
    unknown = sorted(set(only or ()) - set(study["variants"]))
    if unknown:
        raise OptdfaError(
            f"{name} has no variant {unknown[0]!r}; valid: {', '.join(study['variants'])}"
        )
    data = load_dataset(study["dataset"], data_dir=data_dir)
    results: dict[str, Any] = {}
    for model, base in study["models"].items():
        runs: dict[str, list[dict[str, Any]]] = {}
        for variant, backend in {"digital": DIGITAL, **variants}.items():
            runs[variant] = []
            for seed in range(first_seed, first_seed + n):
                cfg = {
                    "dataset": study["dataset"],
                    "data_dir": data_dir,
                    "method": "dfa",
                    "seed": seed,
                    **base,
                    **backend,
                }
                result = optdfa.train(cfg, data=data)
                s = result.summary
                guard = s.get("guard") or {}
                runs[variant].append(
                    {
                        "seed": seed,
                        "test_accuracy": 100 * s["test_accuracy"],
                        "status": s["status"],
                        "warnings": [w["kind"] for w in guard.get("warnings", [])],
                        "frames_per_step": s.get("frames", 0) / max(1, s["steps"]),
                        "seconds": s["seconds"],
                    }
                )
                print(
                    f"{name} | {model} | {variant} | seed {seed}: "
                    f"{100 * s['test_accuracy']:.2f} % {runs[variant][-1]['warnings'] or ''}",
                    flush=True,
                )
        bars = {
            k: v
            for k, v in study["bars"].items()
            if k in runs and (v[0] != "no worse than" or v[1] in runs)
        }
        results[model] = {"runs": runs, "bars": judge(bars, runs)}
    return {
        "study": name,
        "dataset": study["dataset"],
        "seeds": n,
        "first_seed": first_seed,
        "models": results,
    }


def judge(bars: dict[str, tuple], runs: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    def acc(variant: str) -> list[float]:
        return [r["test_accuracy"] for r in runs[variant]]

    out = {}
    for variant, (kind, value) in bars.items():
        a = acc(variant)
        delta = paired([x - d for x, d in zip(a, acc("digital"), strict=True)])
        entry: dict[str, Any] = {"kind": kind, "value": value, "delta": delta}
        if kind == "delta":
            entry["met"] = delta["mean"] >= -value
            entry["bar"] = f"mean Δ ≥ −{value} pp"
        elif kind == "accuracy":
            entry["met"] = statistics.mean(a) >= value
            entry["bar"] = f"mean ≥ {value} %"
        else:  # "no worse than" another variant: compare the two Δs, paired by seed
            other = acc(value)
            entry["versus"] = paired([x - y for x, y in zip(a, other, strict=True)])
            entry["delta_other"] = paired(
                [y - d for y, d in zip(other, acc("digital"), strict=True)]
            )
            entry["met"] = entry["versus"]["mean"] >= 0
            entry["bar"] = f"mean Δ ≥ mean Δ of {value}"
        entry["guard_silent"] = not any(r["warnings"] for r in runs[variant])
        out[variant] = entry
    return out


#: the pre-registered non-inferiority check of the digits SGD recipe (docs/results/recipes.md)
NONINFERIORITY_MARGIN_PP = 0.5
NONINFERIORITY_ALPHA = 0.05 / 4  # Bonferroni over the 4 profiles, one-sided


def noninferiority(paths: list[Path]) -> dict[str, Any]:
    """Now − before per profile, pooled over ``digits-sgd`` JSON files: the one-sided lower
    ``1 − NONINFERIORITY_ALPHA`` t bound of the seed-paired mean against ``−margin``."""
    runs: dict[str, dict[int, float]] = {}
    for path in paths:
        for variant, rows in next(iter(json.loads(path.read_text())["models"].values()))[
            "runs"
        ].items():
            runs.setdefault(variant, {}).update({r["seed"]: r["test_accuracy"] for r in rows})
    out = {}
    for name in OPTICAL:
        if name not in runs or f"{name}, previous encoding" not in runs:
            continue
        now, before = runs[name], runs[f"{name}, previous encoding"]
        diffs = [now[s] - before[s] for s in sorted(now)]
        n, mean = len(diffs), statistics.mean(diffs)
        bound = mean - stats.t.ppf(1 - NONINFERIORITY_ALPHA, n - 1) * statistics.stdev(
            diffs
        ) / math.sqrt(n)
        out[name] = {
            "n": n,
            "mean_pp": mean,
            "lower_bound_pp": float(bound),
            "margin_pp": -NONINFERIORITY_MARGIN_PP,
            "non_inferior": bool(bound > -NONINFERIORITY_MARGIN_PP),
        }
    return out


def report(out: Path) -> str:
    lines = []
    for name in STUDIES:
        path = out / f"recipes-bars-{name}.json"
        if not path.exists():
            continue
        payload = json.loads(path.read_text())
        for model, res in payload["models"].items():
            lines.append(f"\n**{name}** — {model}, {payload['seeds']} seeds\n")
            lines.append(
                "| variant | test accuracy % (mean ± sd) | Δ digital, pp [95 % CI] | bar | met | guard |"
            )
            lines.append("|---|---|---|---|---|---|")
            for variant, runs in res["runs"].items():
                a = [r["test_accuracy"] for r in runs]
                sd = statistics.stdev(a) if len(a) > 1 else 0.0
                bar = res["bars"].get(variant)
                if variant == "digital":
                    delta = "—"
                else:
                    d = paired(
                        [
                            x - r["test_accuracy"]
                            for x, r in zip(a, res["runs"]["digital"], strict=True)
                        ]
                    )
                    ci = "" if d["low"] is None else f" [{d['low']:+.2f}, {d['high']:+.2f}]"
                    delta = f"{d['mean']:+.2f}{ci}"
                warned = sorted({w for r in runs for w in r["warnings"]})
                lines.append(
                    f"| {variant} | {statistics.mean(a):.2f} ± {sd:.2f} | {delta} | "
                    f"{bar['bar'] if bar else '—'} | {('yes' if bar['met'] else '**no**') if bar else '—'} | "
                    f"{', '.join(warned) or 'silent'} |"
                )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("studies", nargs="*", help=f"any of: {', '.join(STUDIES)}")
    parser.add_argument("--seeds", type=int, help="seeds per variant (default: the study's)")
    parser.add_argument(
        "--first-seed",
        type=int,
        default=0,
        help="first seed (default 0); other than 0 writes recipes-bars-<study>-from<S>.json",
    )
    parser.add_argument(
        "--data-dir", help="folder with MNIST/ and FashionMNIST/ (default ../shared/datasets)"
    )
    parser.add_argument("--out", default="docs/results")
    parser.add_argument(
        "--only", action="append", metavar="VARIANT", help="run only this variant (repeatable)"
    )
    parser.add_argument("--report", action="store_true", help="write recipes-bars.md and stop")
    parser.add_argument(
        "--noninferiority",
        nargs="+",
        type=Path,
        metavar="JSON",
        help="the pre-registered check on digits-sgd result files (prints JSON and stops)",
    )
    args = parser.parse_args(argv)
    out = Path(args.out)
    if args.noninferiority:
        print(json.dumps(noninferiority(args.noninferiority), indent=1))
        return 0
    if not args.report and not args.studies:
        parser.error("name at least one study, or --report")
    unknown = [s for s in args.studies if s not in STUDIES]
    if unknown:
        parser.error(f"unknown study {unknown[0]!r}; valid: {', '.join(STUDIES)}")
    torch.set_num_threads(1)
    data_dir = args.data_dir or (str(SHARED) if SHARED.is_dir() else None)
    try:
        for name in args.studies:
            payload = run_study(name, args.seeds, data_dir, args.first_seed, args.only)
            payload["command"] = f"python -m experiments.recipes.bars {name}" + (
                f" --seeds {args.seeds}" if args.seeds else ""
            )
            suffix = ""
            if args.first_seed:
                payload["command"] += f" --first-seed {args.first_seed}"
                suffix = f"-from{args.first_seed}"
            for variant in args.only or ():
                payload["command"] += f" --only {variant!r}"
            atomic_write_json(out / f"recipes-bars-{name}{suffix}.json", payload)
    except OptdfaError as exc:
        print(f"bars: error: {exc}", file=sys.stderr)
        return 2
    text = report(out)
    atomic_write_text(out / "recipes-bars.md", text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
