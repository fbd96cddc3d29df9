"""Benchmarks, measured as ratios of timings taken side by side in one process.

Each benchmark is a function returning a JSON-able dict and registered in :data:`BENCHMARKS`;
``optdfa bench NAME`` runs one, ``optdfa bench all`` every one. Timings interleave the
compared variants (ABAB…) so that drifts in machine load hit both alike; the reported figure
is the ratio of medians.
"""

from __future__ import annotations

import statistics
import time
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
from optdfa.models import build_model
from optdfa.rules import cross_entropy, make_rule
from optdfa.seeding import torch_generator
from optdfa.training import resolve_device


def interleaved_medians(
    fns: dict[str, Callable[[], None]],
    repeats: int,
    warmup: int,
    sync: Callable[[], None] = lambda: None,
) -> dict[str, float]:
    """Median seconds per call of each function, calling them in turn ``repeats`` times."""
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    sync()
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            sync()
            times[name].append(time.perf_counter() - t0)
    return {k: statistics.median(v) for k, v in times.items()}


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
    gen = torch_generator(seed, "bench-data", device="cpu")
    x = torch.randn(batch_size, n_in, generator=gen).to(dev)
    y = torch.randint(0, n_out, (batch_size,), generator=gen).to(dev)
    steps = {}
    for method in ("bp", "dfa"):
        model = build_model(
            "mlp",
            (n_in,),
            n_out,
            hidden=list(hidden),
            activation="tanh",
            generator=torch_generator(seed, "init"),
        ).to(dev)
        rule = make_rule(method, seed=seed)
        rule.attach(model, x[:2])
        opt = (
            torch.optim.SGD(model.parameters(), lr=1e-3)
            if optimizer == "sgd"
            else torch.optim.Adam(model.parameters(), lr=1e-4)
        )

        def step(rule=rule, opt=opt) -> None:
            opt.zero_grad(set_to_none=True)
            rule.compute_gradients(x, y, cross_entropy)
            opt.step()

        steps[method] = step
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    med = interleaved_medians(steps, repeats, warmup, sync)
    return {
        "benchmark": "step",
        "model": f"MLP {n_in}-{'-'.join(map(str, hidden))}-{n_out} tanh",
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
