"""``optdfa cost``: frames, device time and energy of DFA on an OPU vs the digital projection."""

from __future__ import annotations

import argparse
import json
import math
import sys

import torch

from optdfa.cli.options import int_list, key_value, positive_int
from optdfa.errors import OptdfaError
from optdfa.models import MODELS

HELP = "cost of the DFA feedback projection on an OPU (frames, seconds, joules) vs a CPU GEMM"


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "cost", help=HELP, description=HELP + ". Model and sources: docs/cost-model.md."
    )
    g = p.add_argument_group("model (its feedback layout)")
    g.add_argument(
        "--dataset",
        default="digits",
        help="digits, mnist or fashion-mnist: input shape, outputs, training samples (default digits)",
    )
    g.add_argument("--model", choices=MODELS, default="mlp", help="architecture (default mlp)")
    g.add_argument(
        "--hidden", type=int_list, default=[256, 256], help="hidden widths (default 256,256)"
    )
    g.add_argument(
        "--channels", type=int_list, default=[32, 64], help="cnn conv channels (default 32,64)"
    )
    g.add_argument(
        "--kernel-size", type=positive_int, default=5, help="cnn kernel size (default 5)"
    )
    g.add_argument("--n-out", type=positive_int, help="error dimension (overrides the model's)")
    g.add_argument(
        "--n-feedback", type=positive_int, help="feedback dimension (overrides the model's)"
    )
    g = p.add_argument_group("training")
    g.add_argument("--batch-size", type=positive_int, default=32, help="batch size (default 32)")
    g.add_argument(
        "--epochs",
        type=positive_int,
        default=20,
        help="epochs, to amortise calibration (default 20)",
    )
    g = p.add_argument_group("device")
    g.add_argument(
        "--profile",
        default="lighton-aurora",
        metavar="NAME|PATH",
        help="hardware profile (default lighton-aurora)",
    )
    g.add_argument(
        "--opu",
        action="append",
        type=key_value,
        metavar="KEY=VALUE",
        help="override a profile field (repeatable)",
    )
    g.add_argument(
        "--encoder", help="ternary[:T] | stochastic | bitplane:K (default: the profile's)"
    )
    g.add_argument("--decoder", help="reference | ideal-linear (default: the profile's)")
    g = p.add_argument_group("output")
    g.add_argument(
        "--threads", type=positive_int, help="torch threads for the CPU timing (default: torch's)"
    )
    g.add_argument(
        "--crossover-figure",
        metavar="PATH",
        help="also draw the (n_out, n_feedback) crossover figure (PNG)",
    )
    g.add_argument("--json", action="store_true", default=False, help="print the numbers as JSON")
    p.set_defaults(func=run)


def _time(seconds: float) -> str:
    if seconds >= 1:
        return f"{seconds:.3f} s"
    if seconds >= 1e-3:
        return f"{1e3 * seconds:.3f} ms"
    if seconds >= 1e-6:
        return f"{1e6 * seconds:.3f} µs"
    return f"{1e9 * seconds:.2f} ns"


def run(args: argparse.Namespace) -> int:
    from optdfa import cost
    from optdfa.optics.profile import load_profile

    if args.dataset not in cost.DATASET_FACTS:
        raise OptdfaError(
            f"unknown dataset {args.dataset!r} for the cost model; valid: {', '.join(cost.DATASET_FACTS)}"
        )
    if args.threads:
        torch.set_num_threads(args.threads)
    profile = load_profile(args.profile, dict(args.opu or []))
    input_shape, n_out, n_train = cost.DATASET_FACTS[args.dataset]
    layout = cost.model_layout(
        args.model,
        input_shape,
        n_out,
        hidden=args.hidden,
        channels=args.channels,
        kernel_size=args.kernel_size,
    )
    n_out = args.n_out or layout.n_out
    n_fb = args.n_feedback or layout.n_feedback
    steps = args.epochs * math.ceil(n_train / args.batch_size)
    opu = cost.optical_step_cost(
        profile,
        n_out,
        n_fb,
        args.batch_size,
        encoder=args.encoder,
        decoder=args.decoder,
        steps_per_run=steps,
    )
    cpu_s = cost.measure_cpu_gemm(args.batch_size, n_out, n_fb)
    gpu = cost.REFERENCE_GPU
    gpu_s = float(cost.gpu_gemm_seconds(gpu, args.batch_size, n_out, n_fb))
    result = {
        "model": {
            "dataset": args.dataset,
            "model": args.model,
            "n_out": n_out,
            "n_feedback": n_fb,
            "blocks": layout.sizes,
            "training_samples": n_train,
        },
        "optical": opu.to_dict(),
        "cpu": {
            "gemm_seconds": cpu_s,
            "threads": torch.get_num_threads(),
            "source": "measured on this machine (median of repeated torch.mm, float32)",
        },
        "gpu": {
            "gemm_seconds": gpu_s,
            "joules": gpu_s * gpu.power_w,
            "name": gpu.name,
            "source": f"not measured: roofline from {gpu.source}",
        },
    }
    if args.crossover_figure:
        fit = cost.fit_cpu_gemm(args.batch_size)
        result["crossover"] = cost.crossover_figure(
            profile,
            args.batch_size,
            args.crossover_figure,
            cpu=fit,
            encoder=args.encoder,
            decoder=args.decoder,
            marker=(n_out, n_fb),
        )
        result["crossover"]["cpu_flop_rate"] = fit.flop_rate
        result["cpu_fit"] = fit.to_dict()
    if args.json:
        print(json.dumps(result, indent=2, default=str))
        return 0
    blocks = "+".join(str(s) for s in layout.sizes)
    lines = [
        f"model {args.model} on {args.dataset}: n_out {n_out}, n_feedback {n_fb} (blocks {blocks}), "
        f"batch {args.batch_size}, {steps} steps ({args.epochs} epochs x {math.ceil(n_train / args.batch_size)})",
        f"OPU, profile {profile.name} (encoder {opu.encoder}, decoder {opu.decoder}):",
        f"  frames per step    {opu.frames_per_step} = {args.batch_size} samples x {opu.planes} planes "
        f"x {opu.frames_per_plane} frames per plane x {opu.passes} pass(es)  (upper bound: "
        f"deduplication and empty frames lower it)",
        f"  calibration        {opu.calibration_frames} frames once per run "
        f"(+{opu.calibration_frames / steps:.3f} frames per step over {steps} steps)",
        f"  device time/step   {_time(opu.device_seconds_per_step)}  (frame_time_s = {profile.frame_time_s:g} s, from the profile)",
        f"  energy/step        {opu.joules_per_step:.4g} J  (power_w = {profile.power_w:g} W, from the profile)",
        f"  per run            {_time(opu.device_seconds_per_step * steps)}, {opu.joules_per_step * steps:.4g} J",
        f"this CPU (measured, {torch.get_num_threads()} torch thread(s)): GEMM ({args.batch_size}x{n_out})·({n_out}x{n_fb}) "
        f"{_time(cpu_s)}  -> OPU / CPU time = {opu.device_seconds_per_step / cpu_s:.3g}",
        f"{gpu.name} (stated, NOT measured: datasheet roofline): {_time(gpu_s)}, "
        f"{gpu_s * gpu.power_w:.3g} J  -> OPU / GPU energy = {opu.joules_per_step / (gpu_s * gpu.power_w):.3g}",
    ]
    if args.crossover_figure:
        c = result["crossover"]
        lines.append(
            f"crossover (one OPU pass): the OPU beats this CPU (fitted {c['cpu_flop_rate'] / 1e9:.1f} GFLOP/s) "
            f"when n_out x n_feedback > {c['cpu_time_product']:.3g}; the {gpu.name} in time above "
            f"{c['gpu_time_product']:.3g}, in energy above {c['gpu_energy_product']:.3g}  -> {args.crossover_figure}"
        )
    print("\n".join(lines), file=sys.stdout)
    return 0
