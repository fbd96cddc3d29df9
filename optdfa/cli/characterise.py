"""``optdfa characterise``: measure an OPU's camera and write a profile ``sim-opu`` can load."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from optdfa.cli.options import (
    DefaultsHelpFormatter,
    key_value,
    non_negative_int,
    positive_float,
    positive_int,
)
from optdfa.errors import OptdfaError

HELP = "measure an OPU like a camera (photon transfer) and write a profile and a report"
BACKENDS = ("sim-opu", "lightonml")
#: backend options that apply to a characterisation through lightonml
LIGHTONML_OPTIONS = ("config_file", "retries", "retry_delay_s")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "characterise",
        help=HELP,
        description=(
            f"{HELP}: gain (e-/DN), read noise, full well, black level, linearity, laser "
            "jitter, drift, recovered-projection error and frame rate. Writes profile.toml, "
            "report.md, characterisation.json and characterisation.png into --out."
        ),
        formatter_class=DefaultsHelpFormatter,
    )
    p.add_argument("--backend", required=True, choices=BACKENDS, help="the device to measure")
    p.add_argument(
        "--profile",
        default="lighton-aurora",
        metavar="NAME|PATH",
        help="sim-opu: the simulated device; lightonml: the base profile for what cannot be "
        "measured (and the camera of the simulated device)",
    )
    p.add_argument(
        "--opu",
        action="append",
        type=key_value,
        metavar="KEY=VALUE",
        help="override one field of the profile (repeatable)",
    )
    p.add_argument(
        "--lightonml-simulated",
        action="store_true",
        help="--backend lightonml: lightonml's simulator with optdfa's noisy camera "
        "(the profile's) instead of a real OPU",
    )
    p.add_argument(
        "--backend-option",
        action="append",
        type=key_value,
        metavar="KEY=VALUE",
        help=f"lightonml options: {', '.join(LIGHTONML_OPTIONS)}",
    )
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--overwrite", action="store_true", help="replace a characterisation in --out")
    p.add_argument("--pixels", type=positive_int, default=4096, help="camera pixels read")
    p.add_argument("--inputs", type=positive_int, default=32, help="signal inputs (macro-pixels)")
    p.add_argument("--repeats", type=positive_int, default=64, help="frames per exposure")
    p.add_argument(
        "--max-exposure-factor",
        type=positive_float,
        default=64.0,
        help="longest exposure, in units of the nominal one",
    )
    p.add_argument(
        "--seed", type=non_negative_int, default=0, help="seed of the simulated device and tests"
    )
    p.add_argument("--quiet", action="store_true", help="no progress lines")
    p.set_defaults(func=run)


def _lightonml_options(pairs: list[tuple[str, Any]] | None) -> dict[str, Any]:
    options = dict(pairs or [])
    unknown = sorted(set(options) - set(LIGHTONML_OPTIONS))
    if unknown:
        raise OptdfaError(
            f"characterise takes the lightonml option(s) {', '.join(LIGHTONML_OPTIONS)}; "
            f"not {', '.join(unknown)}"
        )
    return options


def run(args: argparse.Namespace) -> int:
    from optdfa.characterise import (
        characterise,
        lightonml_target,
        sim_opu_target,
        write_characterisation,
    )
    from optdfa.optics.profile import load_profile

    profile = load_profile(args.profile, dict(args.opu or []))
    if args.backend == "sim-opu":
        if args.lightonml_simulated or args.backend_option:
            raise OptdfaError(
                "--lightonml-simulated and --backend-option apply to --backend lightonml only"
            )
        target = sim_opu_target(profile, pixels=args.pixels, inputs=args.inputs, seed=args.seed)
    else:
        options = _lightonml_options(args.backend_option)
        target = lightonml_target(
            profile,
            simulated=args.lightonml_simulated,
            pixels=args.pixels,
            inputs=args.inputs,
            seed=args.seed,
            **options,
        )
    progress = None if args.quiet else (lambda msg: print(f"  {msg}", file=sys.stderr))
    try:
        result = characterise(
            target,
            repeats=args.repeats,
            max_exposure_factor=args.max_exposure_factor,
            seed=args.seed,
            progress=progress,
        )
    finally:
        target.close()
    out = write_characterisation(result, args.out, overwrite=args.overwrite)
    m, base = result.measured, result.base_profile
    for label, key, ref in (
        ("gain", "gain_e_per_dn", base.gain_e_per_dn),
        ("read noise", "read_noise_e", base.read_noise_e),
        ("full well", "full_well_e", base.full_well_e),
    ):
        unit = {"gain_e_per_dn": "e-/DN", "read_noise_e": "e-", "full_well_e": "e-"}[key]
        print(f"{label:10s} {m[key]:10.4g} {unit:6s} (base profile {ref:.4g})")
    print(f"-> {out / 'profile.toml'}, {out / 'report.md'}")
    return 0
