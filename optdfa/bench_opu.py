"""Benchmarks of the simulated OPU (registered in :data:`optdfa.bench.BENCHMARKS`).

- ``sim-step``: one DFA train step with the ``sim-opu`` backend (lighton-aurora, ternarised
  error, reference recovery) ÷ one DFA step with the ``digital`` backend, same MLP, same batch,
  interleaved. Also reports the step without frame deduplication.
- ``opu-transform``: the device's nonlinear transform ``|Hx|²`` (our ``SimulatedOPU`` with the
  ideal camera) against ``lightonml``'s ``SimulatedOpuDevice.transform1``, same sizes, same
  binary frames, interleaved; reports lightonml time ÷ ours, and ours with the full Aurora camera.
- ``aurora-projection``: one frame through a full-size Aurora (1 039 680 mirrors → 2 073 600
  pixels, ``H`` generated on the fly) in a child process, timed, with its peak resident memory.
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import time
import warnings
from typing import Any

import numpy as np
import torch

from optdfa.bench_timing import (
    benchmark_batch,
    device_sync,
    interleaved_medians,
    mlp_label,
    mlp_step,
)
from optdfa.errors import OptdfaError
from optdfa.optics import SimulatedOPU, load_profile
from optdfa.rules import make_rule
from optdfa.seeding import torch_generator
from optdfa.training import resolve_device


# -- sim-opu step ÷ digital step --------------------------------------------------------------------
def bench_sim_step(
    hidden: tuple[int, ...] = (1000, 1000, 1000),
    n_in: int = 784,
    n_out: int = 10,
    batch_size: int = 128,
    profile: str = "lighton-aurora",
    repeats: int = 50,
    warmup: int = 5,
    device: str = "cpu",
    seed: int = 0,
) -> dict[str, Any]:
    """DFA step on ``sim-opu`` ÷ DFA step on ``digital`` (and without frame deduplication)."""
    dev = resolve_device(device)
    x, y = benchmark_batch(n_in, n_out, batch_size, seed, dev)
    variants = {
        "digital": ("digital", {}),
        "sim-opu": ("sim-opu", {"profile": profile}),
        "sim-opu-no-dedup": (
            "sim-opu",
            {"profile": profile, "overrides": {"deduplicate_frames": False}},
        ),
    }
    steps, rules = {}, {}
    for name, (backend, options) in variants.items():
        rule = make_rule("dfa", seed=seed, backend=backend, backend_options=options)
        steps[name] = mlp_step(rule, x, y, n_out=n_out, hidden=hidden, seed=seed)
        rules[name] = rule
    frames0 = {k: r.counters()["frames"] for k, r in rules.items()}
    med = interleaved_medians(steps, repeats, warmup, device_sync(dev))
    calls = repeats + warmup
    per_step = {k: (rules[k].counters()["frames"] - frames0[k]) / calls for k in rules}
    return {
        "benchmark": "sim-step",
        "model": mlp_label(n_in, hidden, n_out),
        "batch_size": batch_size,
        "profile": profile,
        "encoder": rules["sim-opu"].backend.encoder.spec,
        "decoder": rules["sim-opu"].backend.profile.decoder,
        "device": str(dev),
        "threads": torch.get_num_threads(),
        "repeats": repeats,
        "digital_step_ms": 1e3 * med["digital"],
        "sim_step_ms": 1e3 * med["sim-opu"],
        "sim_no_dedup_step_ms": 1e3 * med["sim-opu-no-dedup"],
        "frames_per_step": per_step["sim-opu"],
        "frames_per_step_no_dedup": per_step["sim-opu-no-dedup"],
        "ratio": med["sim-opu"] / med["digital"],
        "ratio_no_dedup": med["sim-opu-no-dedup"] / med["digital"],
        "target": 1.3,
    }


def format_sim_step(r: dict[str, Any]) -> str:
    verdict = "meets" if r["ratio"] <= r["target"] else "MISSES"
    return (
        f"{r['model']}, batch {r['batch_size']}, {r['profile']} ({r['encoder']}, {r['decoder']}), "
        f"{r['device']} ({r['threads']} threads), median of {r['repeats']}:\n"
        f"  digital DFA step   {r['digital_step_ms']:8.2f} ms\n"
        f"  sim-opu DFA step   {r['sim_step_ms']:8.2f} ms  ({r['frames_per_step']:.0f} frames/step)\n"
        f"  without dedup      {r['sim_no_dedup_step_ms']:8.2f} ms  "
        f"({r['frames_per_step_no_dedup']:.0f} frames/step, ratio {r['ratio_no_dedup']:.3f})\n"
        f"  sim-opu / digital = {r['ratio']:.3f}  ({verdict} the target ≤ {r['target']:.2f})"
    )


# -- |Hx|² against lightonml -------------------------------------------------------------------
def _lightonml_device(n_in: int, n_out: int, seed: int) -> Any:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from lightonml.internal.simulated_device import SimulatedOpuDevice
    except ImportError as exc:
        raise OptdfaError(f"the opu-transform benchmark needs lightonml: {exc}") from None
    dev = SimulatedOpuDevice()
    dev.build_random_matrix(n_in, n_out, seed=seed)
    return dev


def bench_opu_transform(
    n_in: int = 1024,
    n_out: int = 10_000,
    n_frames: int = 1000,
    repeats: int = 7,
    warmup: int = 1,
    settle_s: float = 0.5,
    device: str = "cpu",
    seed: int = 0,
) -> dict[str, Any]:
    """lightonml ``SimulatedOpuDevice.transform1`` time ÷ our ``SimulatedOPU.transform`` time.

    ``settle_s``: pause before each timed call (see :func:`interleaved_medians`).
    """
    dev = resolve_device(device)
    frames = torch.rand(n_frames, n_in, generator=torch_generator(seed, "bench-frames")) < 0.5
    frames_np = frames.numpy().astype(np.uint8)
    lightonml = _lightonml_device(n_in, n_out, seed)
    ideal = SimulatedOPU(load_profile("ideal"), n_in, n_out, seed=seed, device=dev)
    aurora_profile = load_profile("lighton-aurora")
    aurora = SimulatedOPU(
        aurora_profile,
        n_in,
        n_out,
        seed=seed,
        device=dev,
        mirrors=[aurora_profile.dmd_mirrors // n_in] * n_in,
    )
    frames_dev = frames.to(dev)
    fns = {
        "lightonml": lambda: lightonml.transform1(frames_np),
        "optdfa": lambda: ideal.transform(frames_dev),
        "optdfa-aurora-camera": lambda: aurora.transform(frames_dev),
    }
    # lightonml computes with numpy's BLAS, whose threads spin after each call: let them settle
    med = interleaved_medians(fns, repeats, warmup, device_sync(dev), settle=settle_s)
    return {
        "benchmark": "opu-transform",
        "n_in": n_in,
        "n_out": n_out,
        "n_frames": n_frames,
        "device": str(dev),
        "threads": torch.get_num_threads(),
        "repeats": repeats,
        "settle_s": settle_s,
        "lightonml_ms": 1e3 * med["lightonml"],
        "optdfa_ms": 1e3 * med["optdfa"],
        "optdfa_aurora_camera_ms": 1e3 * med["optdfa-aurora-camera"],
        "optdfa_frames_per_s": n_frames / med["optdfa"],
        "ratio": med["lightonml"] / med["optdfa"],
        "ratio_with_camera": med["lightonml"] / med["optdfa-aurora-camera"],
        "target": 3.0,
    }


def format_opu_transform(r: dict[str, Any]) -> str:
    verdict = "meets" if r["ratio"] >= r["target"] else "MISSES"
    return (
        f"|Hx|² of {r['n_frames']} binary frames, {r['n_in']} → {r['n_out']}, {r['device']} "
        f"({r['threads']} threads), median of {r['repeats']}:\n"
        f"  lightonml SimulatedOpuDevice  {r['lightonml_ms']:9.1f} ms\n"
        f"  optdfa SimulatedOPU (ideal)   {r['optdfa_ms']:9.1f} ms  ({r['optdfa_frames_per_s']:.0f} frames/s)\n"
        f"  optdfa with the Aurora camera {r['optdfa_aurora_camera_ms']:9.1f} ms  "
        f"(lightonml / this = {r['ratio_with_camera']:.2f})\n"
        f"  lightonml / optdfa = {r['ratio']:.2f}× faster  ({verdict} the target ≥ {r['target']:.0f}×)"
    )


# -- full-scale Aurora projection ----------------------------------------------------------------
_CHILD = "from optdfa.bench_opu import _projection_child; _projection_child()"


def _rss_bytes() -> int:
    """Current resident set size of this process."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize()


def _projection_child() -> None:
    """Run in a fresh interpreter: read the arguments as JSON on stdin, print results as JSON."""

    args = json.loads(sys.stdin.read())
    torch.set_num_threads(args["threads"])
    profile = load_profile(args["profile"])
    dev = SimulatedOPU(
        profile,
        args["n_in"],
        args["n_out"],
        seed=args["seed"],
        device=args["device"],
        workers=args["workers"],
        dense_budget_bytes=int(args["dense_budget_mb"] * 2**20),
    )
    frame = torch.rand(1, args["n_in"], generator=torch_generator(args["seed"], "aurora-frame"))
    frame = frame < args["density"]
    rss_before = _rss_bytes()
    usage0 = resource.getrusage(resource.RUSAGE_SELF)
    start = time.perf_counter()
    out = dev.transform(frame)
    if dev.device.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    usage = resource.getrusage(resource.RUSAGE_SELF)
    cpu = (usage.ru_utime - usage0.ru_utime) + (usage.ru_stime - usage0.ru_stime)
    peak = usage.ru_maxrss * 1024  # Linux: KiB
    print(
        json.dumps(
            {
                "seconds": seconds,
                "cpu_seconds": cpu,
                "peak_rss_bytes": peak,
                "rss_before_bytes": rss_before,
                "mirrors_on": int(frame.sum()),
                "mean_output": float(out.mean()),
                "output_unit": dev.camera.output_unit,
                "medium": "dense" if dev.medium.fits_dense else "streamed",
                "workers": dev.medium.workers,
            }
        )
    )


def bench_aurora_projection(
    n_in: int = 1_039_680,
    n_out: int = 2_073_600,
    density: float = 0.5,
    profile: str = "lighton-aurora",
    workers: int | None = None,
    dense_budget_mb: float = 1024,
    device: str = "cpu",
    seed: int = 0,
    repeats: int = 1,
    limit_gb: float = 2.0,
) -> dict[str, Any]:
    """One frame through a full-size device in a child process: seconds and peak RSS."""
    if not 0 < density <= 1:
        raise OptdfaError(
            f"density is the fraction of mirrors switched on, in (0, 1]; got {density}"
        )
    args = {
        "n_in": n_in,
        "n_out": n_out,
        "density": density,
        "profile": profile,
        "workers": workers,
        "dense_budget_mb": dense_budget_mb,
        "device": device,
        "seed": seed,
        "threads": torch.get_num_threads(),
    }
    runs = []
    for _ in range(repeats):
        proc = subprocess.run(
            [sys.executable, "-c", _CHILD],
            input=json.dumps(args),
            capture_output=True,
            text=True,
            check=False,
        )
        if proc.returncode != 0:
            raise OptdfaError(f"the projection child process failed: {proc.stderr.strip()[-2000:]}")
        runs.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    best = min(runs, key=lambda r: r["seconds"])
    peak = max(r["peak_rss_bytes"] for r in runs)
    return {
        "benchmark": "aurora-projection",
        "n_in": n_in,
        "n_out": n_out,
        "density": density,
        "profile": profile,
        "device": device,
        "threads": args["threads"],
        "workers": best["workers"],
        "medium": best["medium"],
        "mirrors_on": best["mirrors_on"],
        "mean_output": best["mean_output"],
        "output_unit": best["output_unit"],
        "seconds": best["seconds"],
        "cpu_seconds": best["cpu_seconds"],
        "peak_rss_gb": peak / 1e9,
        "rss_before_projection_gb": best["rss_before_bytes"] / 1e9,
        "limit_gb": limit_gb,
        "meets": peak / 1e9 < limit_gb,
    }


def format_aurora_projection(r: dict[str, Any]) -> str:
    verdict = "meets" if r["meets"] else "MISSES"
    return (
        f"one frame ({r['mirrors_on']} of {r['n_in']} mirrors on) → {r['n_out']} pixels, "
        f"{r['profile']}, H {r['medium']} ({r['workers']} generator threads, {r['threads']} torch threads):\n"
        f"  time {r['seconds']:.1f} s (CPU {r['cpu_seconds']:.1f} s), "
        f"mean output {r['mean_output']:.2f} {r['output_unit']}\n"
        f"  peak RSS {r['peak_rss_gb']:.3f} GB (before the projection {r['rss_before_projection_gb']:.3f} GB)"
        f"  ({verdict} the limit < {r['limit_gb']:.0f} GB)"
    )
