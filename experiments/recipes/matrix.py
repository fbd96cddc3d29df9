"""The recipe matrix: does DFA learn on every shipped backend, optimizer, model and encoder?

    python -m experiments.recipes.matrix [--seeds 3] [--out docs/results]      # ≈ 25 min, 2 cores

Every cell trains DFA on the embedded digits data with the command line's defaults (Adam lr 1e-3
or SGD lr 0.05, batch 128, 10 epochs, MLP 64-256-256-10 or CNN, tanh), changing only the
optimizer, the model and, on the optical backends, the profile's encoder — what a user types:

    optdfa train --method dfa --backend sim-opu --profile ideal --optimizer sgd --model cnn \\
        --opu encoder=bitplane:2

Writes ``recipes-matrix.json`` (every run) and the table of ``recipes-matrix.md``. The verdict
rules are fixed here, before any run (``VERDICTS``): a cell **learns** when its mean accuracy is
within ``MARGIN_PP`` of digital DFA with the same optimizer and model; the guard must stay silent
on every cell that learns and must have warned on every cell that does not. ``tests/
test_recipes.py`` runs a one-seed subset of the same cells in ``make test``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path
from typing import Any

import torch

import optdfa
from optdfa.data import load_dataset
from optdfa.guard import biased_encoding
from optdfa.optics import parse_encoder
from optdfa.outputs import atomic_write_json, atomic_write_text

#: a cell learns when its mean test accuracy is at most this far below digital DFA's (pp)
MARGIN_PP = 2.0
VERDICTS = {
    "learns": "within MARGIN_PP of digital DFA, the guard silent",
    "false alarm": "within MARGIN_PP of digital DFA, but the guard warned",
    "fails, warned": "below digital DFA by more than MARGIN_PP, and the guard warned",
    "fails silently": "below digital DFA by more than MARGIN_PP, the guard silent (a defect)",
    "learns, flagged": "within MARGIN_PP, a biased encoder that the guard flags by design",
}
BACKENDS: dict[str, dict[str, Any]] = {
    "digital": {"backend": "digital"},
    "sim-opu ideal": {"backend": "sim-opu", "backend_options": {"profile": "ideal"}},
    "sim-opu lighton-aurora": {
        "backend": "sim-opu",
        "backend_options": {"profile": "lighton-aurora"},
    },
    "lightonml simulated": {"backend": "lightonml", "backend_options": {"simulated": True}},
}
OPTIMIZERS: dict[str, dict[str, Any]] = {
    "adam": {"optimizer": "adam"},
    "sgd": {"optimizer": "sgd"},  # momentum 0.9 (the default)
    "sgd, no momentum": {"optimizer": "sgd", "momentum": 0.0},
}
MODELS = ("mlp", "cnn")
#: every encoder optdfa ships; None: the profile's default (stochastic)
ENCODERS = (None, "bitplane:2", "ternary:0.1", "bitplane-nearest:2")


def cells(
    backends: list[str] | None = None,
    optimizers: list[str] | None = None,
    models: tuple[str, ...] = MODELS,
    encoders: tuple[str | None, ...] = ENCODERS,
) -> list[dict[str, Any]]:
    """The matrix's cells: ``{backend, optimizer, model, encoder}`` (digital: one encoder)."""
    out = []
    for backend in backends or list(BACKENDS):
        for optimizer in optimizers or list(OPTIMIZERS):
            for model in models:
                for encoder in encoders if backend != "digital" else (None,):
                    out.append(
                        {
                            "backend": backend,
                            "optimizer": optimizer,
                            "model": model,
                            "encoder": encoder,
                        }
                    )
    return out


def cell_config(cell: dict[str, Any], seed: int) -> dict[str, Any]:
    """The TrainConfig fields of one cell (everything else: the CLI's defaults)."""
    backend = dict(BACKENDS[cell["backend"]])
    options = dict(backend.get("backend_options", {}))
    if cell["encoder"] is not None:
        options["overrides"] = {"encoder": cell["encoder"]}
    if options:
        backend["backend_options"] = options
    return {
        "dataset": "digits",
        "method": "dfa",
        "model": cell["model"],
        "seed": seed,
        **OPTIMIZERS[cell["optimizer"]],
        **backend,
    }


def run_cell(cell: dict[str, Any], seeds: list[int], data: Any = None) -> list[dict[str, Any]]:
    """Train the cell once per seed; one row per run."""
    rows = []
    for seed in seeds:
        result = optdfa.train(cell_config(cell, seed), data=data)
        s = result.summary
        guard = s.get("guard") or {}
        health = [m["feedback_health"] for m in result.metrics if "feedback_health" in m]
        rows.append(
            {
                **cell,
                "seed": seed,
                "test_accuracy": s["test_accuracy"],
                "status": s["status"],
                "warnings": [f"{w['kind']}@{w['epoch']}" for w in guard.get("warnings", [])],
                "max_bias": max((h["bias"] for h in health), default=None),
                "min_alignment": min((h["alignment"] for h in health), default=None),
                "frames_per_step": s.get("frames", 0) / max(1, s["steps"])
                if "steps" in s
                else None,
                "seconds": s["seconds"],
            }
        )
    return rows


def summarise(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per cell: mean, spread, Δ to digital DFA (same optimizer and model), verdict."""
    key = ("backend", "optimizer", "model", "encoder")
    groups: dict[tuple, list[dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault(tuple(r[k] for k in key), []).append(r)
    digital = {
        (g[1], g[2]): statistics.mean(100 * r["test_accuracy"] for r in runs)
        for g, runs in groups.items()
        if g[0] == "digital"
    }
    out = []
    for g, runs in groups.items():
        acc = [100 * r["test_accuracy"] for r in runs]
        mean = statistics.mean(acc)
        ref = digital.get((g[1], g[2]))
        delta = None if ref is None or g[0] == "digital" else mean - ref
        warned = any(r["warnings"] for r in runs)
        if delta is None:
            verdict = "reference" if g[0] == "digital" else "no digital reference"
        elif delta >= -MARGIN_PP and warned and g[3] and biased_encoding(parse_encoder(g[3])):
            verdict = "learns, flagged"
        elif delta >= -MARGIN_PP:
            verdict = "false alarm" if warned else "learns"
        else:
            verdict = "fails, warned" if warned else "fails silently"
        biases = [r["max_bias"] for r in runs if r["max_bias"] is not None]
        frames = [r["frames_per_step"] for r in runs if r["frames_per_step"]]
        out.append(
            {
                **dict(zip(key, g, strict=True)),
                "n": len(acc),
                "mean": mean,
                "sd": statistics.stdev(acc) if len(acc) > 1 else 0.0,
                "delta_pp": delta,
                "verdict": verdict,
                "warnings": sorted({w.split("@")[0] for r in runs for w in r["warnings"]}),
                "max_bias": max(biases) if biases else None,
                "frames_per_step": statistics.mean(frames) if frames else None,
            }
        )
    return out


def table(summary: list[dict[str, Any]]) -> str:
    lines = [
        "| backend | optimizer | model | encoder | n | test accuracy % (mean ± sd) | Δ digital (pp) "
        "| max bias | frames / step | guard | verdict |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for c in summary:
        delta = "—" if c["delta_pp"] is None else f"{c['delta_pp']:+.2f}"
        bias = "—" if c["max_bias"] is None else f"{c['max_bias']:.3f}"
        frames = "—" if c["frames_per_step"] is None else f"{c['frames_per_step']:.0f}"
        lines.append(
            f"| {c['backend']} | {c['optimizer']} | {c['model']} | "
            f"{c['encoder'] or ('stochastic (default)' if c['backend'] != 'digital' else '—')} | "
            f"{c['n']} | {c['mean']:.2f} ± {c['sd']:.2f} | {delta} | {bias} | {frames} | "
            f"{', '.join(c['warnings']) or 'silent'} | {c['verdict']} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seeds", type=int, default=3, help="seeds per cell (default 3)")
    parser.add_argument("--out", default="docs/results", help="folder for recipes-matrix.*")
    args = parser.parse_args(argv)
    if args.seeds < 1:
        parser.error("--seeds must be at least 1")
    torch.set_num_threads(1)
    data = load_dataset("digits")
    rows: list[dict[str, Any]] = []
    for cell in cells():
        runs = run_cell(cell, list(range(args.seeds)), data)
        rows += runs
        acc = ", ".join(f"{100 * r['test_accuracy']:.2f}" for r in runs)
        print(
            f"{cell['backend']} | {cell['optimizer']} | {cell['model']} | {cell['encoder']}: "
            f"{acc} {sorted({w for r in runs for w in r['warnings']})}",
            flush=True,
        )
    summary = summarise(rows)
    out = Path(args.out)
    command = " ".join(["python -m experiments.recipes.matrix", *(argv or sys.argv[1:])])
    atomic_write_json(
        out / "recipes-matrix.json",
        {
            "command": command,
            "margin_pp": MARGIN_PP,
            "verdicts": VERDICTS,
            "summary": summary,
            "runs": rows,
        },
    )
    atomic_write_text(out / "recipes-matrix.md", table(summary) + "\n")
    print(table(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
