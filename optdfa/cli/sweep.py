"""``optdfa sweep``: run a grid of training runs declared in a TOML file (resumable, parallel)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from optdfa.cli.options import positive_int
from optdfa.data import DATASETS

HELP = "run a sweep of training runs (grid over training and hardware-profile fields × seeds)"


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "sweep",
        help=HELP,
        description=HELP + ". The file format is described in docs/sweeps.md.",
    )
    p.add_argument("file", metavar="FILE.toml", help="the sweep file")
    p.add_argument(
        "--workers",
        type=positive_int,
        help="worker processes (default: the number of CPU cores; torch threads per worker "
        "are set so that workers x threads <= cores)",
    )
    p.add_argument(
        "--out", help="output folder (default runs/sweeps/<name>[-<dataset>] next to nothing else)"
    )
    p.add_argument(
        "--dataset", choices=DATASETS, help="run the whole sweep on another dataset (base field)"
    )
    p.add_argument("--data-dir", help="folder holding MNIST/raw and FashionMNIST/raw")
    p.add_argument(
        "--seeds",
        type=positive_int,
        metavar="N",
        help="run only the first N of the file's seeds (their runs are shared with a full run "
        "in the same --out)",
    )
    p.add_argument(
        "--no-retry-failed",
        dest="retry_failed",
        action="store_false",
        default=True,
        help="keep runs that failed before as failed instead of retrying them",
    )
    p.add_argument(
        "--dry-run",
        action="store_true",
        default=False,
        help="validate the file and list the runs, run nothing",
    )
    p.add_argument(
        "--report-only",
        action="store_true",
        default=False,
        help="only regenerate results.csv, plots and summary.md from results.jsonl",
    )
    p.add_argument("--quiet", action="store_true", default=False, help="no progress lines")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from optdfa.sweep import load_sweep, run_sweep
    from optdfa.sweep.report import write_report
    from optdfa.sweep.runner import available_cores, default_progress

    spec = load_sweep(args.file)
    changes = {}
    if args.dataset is not None:
        changes["dataset"] = args.dataset
    if args.data_dir is not None:
        changes["data_dir"] = args.data_dir
    if changes:
        spec = spec.with_base(**changes)
    if args.seeds is not None:
        spec = spec.first_seeds(args.seeds)
    suffix = f"-{args.dataset}" if args.dataset else ""
    out = Path(args.out) if args.out else Path("runs") / "sweeps" / f"{spec.name}{suffix}"
    points = spec.expand()
    if args.dry_run:
        for p in points:
            params = ", ".join(f"{k}={v}" for k, v in p.params.items())
            label = f"{p.label}: " if p.label else ""
            print(f"{p.point_id}  {label}{params}  seed {p.seed}")
        print(f"{len(points)} runs ({len(spec.settings)} settings x {len(spec.seeds)} seeds)")
        return 0
    if args.report_only:
        write_report(spec, out)
        print(f"report regenerated in {out}")
        return 0
    outcome = run_sweep(
        spec,
        out,
        workers=args.workers if args.workers is not None else available_cores(),
        retry_failed=args.retry_failed,
        progress=None if args.quiet else default_progress,
    )
    print(
        f"sweep {spec.name}: {outcome.ran} run(s) in {outcome.seconds:.1f} s "
        f"({outcome.failed} failed), {outcome.skipped} already done -> {outcome.out_dir}",
        file=sys.stdout,
    )
    return 1 if outcome.failed else 0
