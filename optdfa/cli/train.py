"""``optdfa train``: train a model with bp, fa or dfa and write the run's files."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

from optdfa.backends import available_backends, backend_class
from optdfa.cli.options import (
    int_list,
    key_value,
    non_negative_float,
    non_negative_int,
    positive_float,
    positive_int,
)
from optdfa.config import (
    DEFAULT_LR,
    DEVICES,
    LR_SCHEDULES,
    OPTIMIZERS,
    TrainConfig,
    load_toml,
)
from optdfa.data import DATASETS
from optdfa.errors import OptdfaError
from optdfa.models import ACTIVATIONS, MODELS
from optdfa.optics.profile import available_profiles
from optdfa.rules import METHODS

HELP = "train a network with backprop, feedback alignment or direct feedback alignment"

#: CLI flags that map one-to-one onto TrainConfig fields (dest = field name)
_FIELD_FLAGS = (
    "dataset",
    "data_dir",
    "data_seed",
    "train_subset",
    "model",
    "hidden",
    "channels",
    "kernel_size",
    "activation",
    "readout_init_scale",
    "method",
    "backend",
    "epochs",
    "batch_size",
    "optimizer",
    "lr",
    "momentum",
    "weight_decay",
    "lr_schedule",
    "seed",
    "device",
    "dp_delta",
    "dp_clip_error",
    "dp_clip_activation",
    "align_every",
)
_TEACHER_FLAGS = ("input_dim", "hidden", "outputs", "noise", "n_train", "n_test", "task")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train",
        help=HELP,
        description=HELP,
        argument_default=None,
    )
    d = TrainConfig()
    g = p.add_argument_group("data")
    g.add_argument("--dataset", choices=DATASETS, help=f"dataset (default {d.dataset})")
    g.add_argument(
        "--data-dir", help="folder holding MNIST/raw and FashionMNIST/raw (or set OPTDFA_DATA_DIR)"
    )
    g.add_argument(
        "--data-seed", type=non_negative_int, help="seed of the digits split and the teacher"
    )
    g.add_argument("--train-subset", type=positive_int, help="train on the first N samples only")
    for name in _TEACHER_FLAGS:
        kind = {"noise": non_negative_float, "task": str}.get(name, positive_int)
        g.add_argument(
            f"--teacher-{name.replace('_', '-')}",
            dest=f"teacher_{name}",
            type=kind,
            help=f"teacher dataset: {name} (default {getattr(d.teacher, name)})",
        )
    g = p.add_argument_group("model")
    g.add_argument("--model", choices=MODELS, help=f"architecture (default {d.model})")
    g.add_argument(
        "--hidden", type=int_list, help="hidden widths, comma-separated (default 256,256)"
    )
    g.add_argument(
        "--channels", type=int_list, help="cnn conv channels, comma-separated (default 32,64)"
    )
    g.add_argument("--kernel-size", type=positive_int, help="cnn kernel size (default 5)")
    g.add_argument(
        "--activation", choices=ACTIVATIONS, help=f"hidden activation (default {d.activation})"
    )
    g.add_argument(
        "--readout-init-scale",
        type=non_negative_float,
        help="multiply the output layer's initial weights (default 1; small: near-zero output)",
    )
    g = p.add_argument_group("learning rule and feedback backend")
    g.add_argument("--method", choices=METHODS, help=f"learning rule (default {d.method})")
    g.add_argument(
        "--backend",
        help=f"feedback backend for dfa: {', '.join(available_backends())} (default digital)",
    )
    g.add_argument(
        "--backend-option",
        dest="backend_option",
        action="append",
        type=key_value,
        metavar="KEY=VALUE",
        help="an option of the feedback backend (repeatable)",
    )
    g.add_argument(
        "--profile",
        metavar="NAME|PATH",
        help=(
            "hardware profile of an optical backend (--backend sim-opu or lightonml): "
            f"{', '.join(available_profiles())}, or a .toml file (default lighton-aurora)"
        ),
    )
    g.add_argument(
        "--opu",
        action="append",
        type=key_value,
        metavar="KEY=VALUE",
        help=(
            "override one field of the hardware profile, e.g. adc_bits=6, read_noise_e=12, "
            "encoder=bitplane:3 (repeatable; fields in docs/user-guide.md)"
        ),
    )
    g.add_argument(
        "--lightonml-simulated",
        dest="lightonml_simulated",
        action="store_true",
        default=None,
        help="--backend lightonml: use lightonml's simulated OPU instead of a real one",
    )
    g = p.add_argument_group("optimisation")
    g.add_argument("--epochs", type=positive_int, help=f"epochs (default {d.epochs})")
    g.add_argument("--batch-size", type=positive_int, help=f"batch size (default {d.batch_size})")
    g.add_argument("--optimizer", choices=OPTIMIZERS, help=f"optimizer (default {d.optimizer})")
    g.add_argument(
        "--lr",
        type=positive_float,
        help="learning rate (default: "
        + ", ".join(f"{v:g} for {k}" for k, v in DEFAULT_LR.items())
        + ")",
    )
    g.add_argument(
        "--momentum", type=non_negative_float, help=f"sgd momentum (default {d.momentum})"
    )
    g.add_argument("--weight-decay", type=non_negative_float, help="L2 weight decay (default 0)")
    g.add_argument(
        "--lr-schedule", choices=LR_SCHEDULES, help="learning-rate schedule (default constant)"
    )
    g.add_argument(
        "--seed",
        type=non_negative_int,
        help="seed of init, feedback matrix, data order, noise (default 0)",
    )
    g.add_argument("--device", choices=DEVICES, help="torch device (default cpu)")
    g = p.add_argument_group("photonic differential privacy (dfa on an optical backend)")
    g.add_argument(
        "--dp-delta",
        type=positive_float,
        help="report (ε, δ) after every epoch for this δ (e.g. 1e-5); needs --dp-clip-error",
    )
    g.add_argument(
        "--dp-clip-error",
        type=positive_float,
        metavar="C",
        help="clip each per-sample error dL_b/dy_b to norm C; the encoder then uses the fixed scale C",
    )
    g.add_argument(
        "--dp-clip-activation",
        type=positive_float,
        metavar="C",
        help="clip each sample's layer input (with the bias' 1) to norm C in the updates",
    )
    g = p.add_argument_group("diagnostics")
    g.add_argument(
        "--align-every",
        type=non_negative_int,
        metavar="N",
        help="measure gradient/weight alignment with backprop every N steps into "
        "alignment.jsonl and alignment.png (default 0: off, no cost)",
    )
    g = p.add_argument_group("run")
    g.add_argument("--config", help="TOML file of config fields (flags given here override it)")
    g.add_argument("--out", help="output folder (default runs/<dataset>-<method>-<time>)")
    g.add_argument("--resume", action="store_true", default=False, help="continue the run in --out")
    g.add_argument(
        "--overwrite", action="store_true", default=False, help="replace a run already in --out"
    )
    g.add_argument("--quiet", action="store_true", default=False, help="no progress bar")
    p.set_defaults(func=run)


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    """defaults < --config file < explicit flags."""
    data: dict[str, Any] = load_toml(args.config) if args.config else {}
    source = args.config or "command line"
    for name in _FIELD_FLAGS:
        value = getattr(args, name, None)
        if value is not None:
            data[name] = value
    teacher = (
        dict(data.get("teacher", {}))
        if isinstance(data.get("teacher", {}), dict)
        else data.get("teacher")
    )
    for name in _TEACHER_FLAGS:
        value = getattr(args, f"teacher_{name}", None)
        if value is not None:
            teacher[name] = value
    if teacher:
        data["teacher"] = teacher
    options = (
        dict(data.get("backend_options", {}))
        if isinstance(data.get("backend_options", {}), dict)
        else data.get("backend_options")
    )
    for key, value in args.backend_option or []:
        options[key] = value
    if args.profile is not None or args.opu:
        _check_profile_flags(data.get("backend", "digital"))
        if args.profile is not None:
            options["profile"] = args.profile
        if args.opu:
            overrides = options.get("overrides", {})
            overrides = dict(overrides) if isinstance(overrides, dict) else {}
            for key, value in args.opu:
                overrides[key] = value
            options["overrides"] = overrides
    if args.lightonml_simulated:
        if data.get("backend", "digital") != "lightonml":
            raise OptdfaError("--lightonml-simulated applies to --backend lightonml only")
        options["simulated"] = True
    if options:
        data["backend_options"] = options
    config = TrainConfig.from_dict(data, source=source)
    config.validate()
    return config


def _check_profile_flags(backend: Any) -> None:
    """``--profile`` / ``--opu`` configure optical backends only."""
    if not isinstance(backend, str) or not getattr(
        backend_class(backend), "uses_opu_profile", False
    ):
        raise OptdfaError(
            f"--profile and --opu configure an optical feedback backend (--backend sim-opu or "
            f"lightonml); "
            f"they do not apply to --backend {backend}"
        )


def _explicit_flags(args: argparse.Namespace) -> list[str]:
    names = [
        n
        for n in (
            *_FIELD_FLAGS,
            *(f"teacher_{t}" for t in _TEACHER_FLAGS),
            "config",
            "backend_option",
            "profile",
            "opu",
            "lightonml_simulated",
        )
        if getattr(args, n, None) is not None
    ]
    return ["--" + n.replace("_", "-") for n in names]


def run(args: argparse.Namespace) -> int:
    from optdfa.training import resume_config, train

    if args.resume:
        if not args.out:
            raise OptdfaError("--resume needs --out DIR, the folder of the run to continue")
        extra = [f for f in _explicit_flags(args) if f != "--epochs"]
        if extra:
            raise OptdfaError(
                f"with --resume only --epochs may be given (the run's config is in "
                f"{Path(args.out) / 'config.toml'}); remove {', '.join(extra)}"
            )
        if args.overwrite:
            raise OptdfaError("--resume and --overwrite exclude each other")
        config = resume_config(args.out, args.epochs)
    else:
        config = config_from_args(args)
    out = args.out or f"runs/{config.dataset}-{config.method}-{time.strftime('%Y%m%d-%H%M%S')}"
    result = train(
        config, out, resume=args.resume, overwrite=args.overwrite, progress=not args.quiet
    )
    s = result.summary
    acc = "" if s["test_accuracy"] is None else f"test accuracy {100 * s['test_accuracy']:.2f}%  "
    device = ""
    if s.get("frames"):
        device = (
            f"  device: {s['frames']:,.0f} frames, {s['device_seconds']:.1f} s, "
            f"{s['energy_joules']:.1f} J"
        )
    print(
        f"{acc}test loss {s['test_loss']:.4f}  train loss {s['train_loss']:.4f}  "
        f"{s['epochs']} epochs in {s['seconds']:.1f} s{device}  -> {result.out_dir}",
        file=sys.stdout,
    )
    for warning in (s.get("guard") or {}).get("warnings", []):
        print(
            f"WARNING: this run did not train normally (epoch {warning['epoch']}): "
            f"{warning['message']}",
            file=sys.stdout,
        )
    if "privacy" in s:
        from optdfa.privacy.report import format_epsilon

        p = s["privacy"]
        per_epoch = ", ".join(format_epsilon(e) for e in p["epsilon_per_epoch"])
        m = p["mechanism"]
        print(
            f"photonic DP (δ = {p['delta']:g}, noise multiplier {m['noise_multiplier']:.3g}, "
            f"sample rate {p['sample_rate']:.4g}): ε per epoch {per_epoch}; ε = 1 would need "
            f"{p['targets']['1']['noise_scale_needed']:.3g}x the device noise (docs/privacy.md)",
            file=sys.stdout,
        )
    return 0
