"""Benchmarks, measured as ratios of timings taken side by side in one process.

Each benchmark is a function returning a JSON-able dict and registered in :data:`BENCHMARKS`;
``optdfa bench NAME`` runs one, ``optdfa bench all`` every one. Timings interleave the
compared variants (ABAB…) so that drifts in machine load hit both alike; the reported figure
is the ratio of medians.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from optdfa.bench_opu import (
    bench_aurora_projection,
    bench_opu_transform,
    bench_sim_step,
    format_aurora_projection,
    format_opu_transform,
    format_sim_step,
)
from optdfa.bench_timing import (
    benchmark_batch,
    device_sync,
    interleaved_medians,
    mlp_label,
    mlp_step,
)
from optdfa.rules import make_rule
from optdfa.training import resolve_device

__all__ = ["BENCHMARKS", "bench_step", "format_step", "interleaved_medians"]


def bench_step(
    hidden: tuple[int, ...] = (1000, 1000, 1000),
    n_in: int = 784,
    n_out: int = 10,
    batch_size: int = 128,
    optimizer: str = "sgd",
    repeats: int = 50,
    warmup: int = 5,
    device: str = "cpu",
    seed: int = 0,
) -> dict[str, Any]:
    """One DFA train step (digital backend) ÷ one BP train step, same MLP (tanh), same batch."""
    dev = resolve_device(device)
    x, y = benchmark_batch(n_in, n_out, batch_size, seed, dev)
    steps = {
        method: mlp_step(
            make_rule(method, seed=seed),
            x,
            y,
            n_out=n_out,
            hidden=hidden,
            seed=seed,
            optimizer=optimizer,
        )
        for method in ("bp", "dfa")
    }
    med = interleaved_medians(steps, repeats, warmup, device_sync(dev))
    return {
        "benchmark": "step",
        "model": mlp_label(n_in, hidden, n_out),
        "batch_size": batch_size,
        "optimizer": optimizer,
        "device": str(dev),
        "threads": torch.get_num_threads(),
        "repeats": repeats,
        "bp_step_ms": 1e3 * med["bp"],
        "dfa_step_ms": 1e3 * med["dfa"],
        "ratio": med["dfa"] / med["bp"],
        "target": 0.80,
    }


def format_step(r: dict[str, Any]) -> str:
    verdict = "meets" if r["ratio"] <= r["target"] else "MISSES"
    return (
        f"{r['model']}, batch {r['batch_size']}, {r['optimizer']}, {r['device']} ({r['threads']} threads), "
        f"median of {r['repeats']}:\n"
        f"  bp  step {r['bp_step_ms']:8.2f} ms\n"
        f"  dfa step {r['dfa_step_ms']:8.2f} ms\n"
        f"  dfa / bp = {r['ratio']:.3f}  ({verdict} the target ≤ {r['target']:.2f})"
    )


#: name -> (function, formatter, one-line description)
BENCHMARKS: dict[
    str, tuple[Callable[..., dict[str, Any]], Callable[[dict[str, Any]], str], str]
] = {
    "step": (
        bench_step,
        format_step,
        "DFA train step ÷ BP train step, MLP 784-1000-1000-1000-10, batch 128",
    ),
    "sim-step": (
        bench_sim_step,
        format_sim_step,
        "sim-opu DFA step (lighton-aurora) ÷ digital DFA step, MLP 784-1000-1000-1000-10",
    ),
    "opu-transform": (
        bench_opu_transform,
        format_opu_transform,
        "|Hx|² of 1000 frames 1024 → 10 000: lightonml SimulatedOpuDevice ÷ optdfa",
    ),
    "aurora-projection": (
        bench_aurora_projection,
        format_aurora_projection,
        "one frame at full Aurora scale (1 039 680 → 2 073 600): time, peak RSS (long)",
    ),
}
