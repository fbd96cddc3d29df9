"""``optdfa privacy``: (ε, δ) of photonic-DP DFA training from the device noise, without training."""

from __future__ import annotations

import argparse
import json
import math
import sys

import torch

from optdfa.cli.options import int_list, key_value, positive_float, positive_int
from optdfa.models import MODELS

HELP = "(ε, δ) of DFA training made private by the OPU's own noise (opacus RDP accountant)"


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "privacy", help=HELP, description=HELP + ". Derivation and assumptions: docs/privacy.md."
    )
    p.add_argument(
        "--dataset", default="digits", help="digits, mnist or fashion-mnist (default digits)"
    )
    p.add_argument(
        "--dataset-size", type=positive_int, help="training samples (default: the dataset's)"
    )
    p.add_argument("--model", choices=MODELS, default="mlp", help="architecture (default mlp)")
    p.add_argument(
        "--hidden", type=int_list, default=[256, 256], help="hidden widths (default 256,256)"
    )
    p.add_argument("--batch-size", type=positive_int, default=32, help="batch size (default 32)")
    p.add_argument("--epochs", type=positive_int, default=20, help="epochs (default 20)")
    p.add_argument("--delta", type=positive_float, default=1e-5, help="δ (default 1e-5)")
    p.add_argument(
        "--clip-error",
        type=positive_float,
        default=1.0,
        help="per-sample error bound C_e (default 1)",
    )
    p.add_argument(
        "--clip-activation", type=positive_float, help="per-sample layer-input bound C_h (reported)"
    )
    p.add_argument(
        "--profile", default="lighton-aurora", metavar="NAME|PATH", help="hardware profile"
    )
    p.add_argument(
        "--opu",
        action="append",
        type=key_value,
        metavar="KEY=VALUE",
        help="override a profile field",
    )
    p.add_argument(
        "--encoder", default="stochastic", help="stochastic or bitplane:K (default stochastic)"
    )
    p.add_argument(
        "--noise",
        choices=("profile", "characterised"),
        default="profile",
        help="device noise from the profile's noise floor, or measured on the simulated device",
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the simulated device")
    p.add_argument("--json", action="store_true", default=False, help="print the report as JSON")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from optdfa import cost
    from optdfa.backends import create_backend
    from optdfa.errors import OptdfaError
    from optdfa.privacy import photonic_mechanism, privacy_report
    from optdfa.privacy.report import format_epsilon

    if args.dataset not in cost.DATASET_FACTS:
        raise OptdfaError(
            f"unknown dataset {args.dataset!r}; valid: {', '.join(cost.DATASET_FACTS)}"
        )
    if not 0 < args.delta < 1:
        raise OptdfaError(f"--delta must be in (0, 1), got {args.delta}")
    shape, n_out, n_train = cost.DATASET_FACTS[args.dataset]
    size = args.dataset_size or n_train
    layout = cost.model_layout(args.model, shape, n_out, hidden=args.hidden)
    overrides = {**dict(args.opu or []), "encoder": args.encoder}
    backend = create_backend("sim-opu", profile=args.profile, overrides=overrides)
    backend.setup(layout, seed=args.seed, device=torch.device("cpu"), dtype=torch.float32)
    backend.set_error_bound(args.clip_error / args.batch_size)
    mech = photonic_mechanism(backend, noise=args.noise)
    report = privacy_report(
        mech,
        batch_size=args.batch_size,
        dataset_size=size,
        epochs=args.epochs,
        delta=args.delta,
        clip_error=args.clip_error,
        clip_activation=args.clip_activation,
    )
    backend.close()
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    eps = ", ".join(format_epsilon(e) for e in report["epsilon_per_epoch"])
    lines = [
        f"{args.model} {'-'.join(map(str, args.hidden))} on {args.dataset} ({size} samples), batch "
        f"{args.batch_size}, {args.epochs} epochs: sample rate {report['sample_rate']:.4g}, "
        f"{report['steps']} steps",
        f"device {backend.profile.name}, encoder {mech.encoder}, noise from the {mech.noise_source}: "
        f"σ per recovered entry {mech.sigma_median:.3g} (median; min {mech.sigma_min:.3g}), "
        f"entry SNR {mech.entry_snr_median:.3g}",
        f"whitened sensitivity {mech.sensitivity:.4g} ({mech.sensitivity_method}) -> noise "
        f"multiplier z = {mech.noise_multiplier:.4g} (independent of the clip bound)",
        f"ε per epoch (δ = {args.delta:g}): {eps}",
    ]
    for target, need in report["targets"].items():
        scale = need["noise_scale_needed"]
        lines.append(
            f"ε = {target}: needs z = {need['noise_multiplier']:.3g}, i.e. {scale:.3g}x the device "
            f"noise std" + ("" if math.isinf(scale) else f" ({scale**2:.3g}x its variance)")
        )
    print("\n".join(lines), file=sys.stdout)
    return 0
