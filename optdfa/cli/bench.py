"""``optdfa bench``: speed ratios measured side by side in one run."""

from __future__ import annotations

import argparse
import inspect
import json
from typing import Any

from optdfa.cli.options import key_value, positive_int
from optdfa.errors import OptdfaError
from optdfa.outputs import atomic_write_json

HELP = "measure speed ratios (run side by side in one process)"


def register(sub: argparse._SubParsersAction) -> None:
    from optdfa.bench import BENCHMARKS

    lines = "\n".join(f"  {name:18s} {desc}" for name, (_, _, desc) in BENCHMARKS.items())
    p = sub.add_parser(
        "bench",
        help=HELP,
        description=f"{HELP}.\n\nbenchmarks:\n{lines}\n  all                every one",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("name", nargs="?", default="all", help="benchmark to run (default all)")
    p.add_argument("--repeats", type=positive_int, help="timed repetitions per variant")
    p.add_argument("--device", default="cpu", help="torch device (cpu, cuda)")
    p.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    p.add_argument(
        "--param",
        action="append",
        type=key_value,
        metavar="KEY=VALUE",
        help="a parameter of the benchmark function, e.g. n_out=65536 (repeatable; one benchmark)",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from optdfa.bench import BENCHMARKS

    if args.name != "all" and args.name not in BENCHMARKS:
        raise OptdfaError(
            f"unknown benchmark {args.name!r}; valid: {', '.join([*BENCHMARKS, 'all'])}"
        )
    names = list(BENCHMARKS) if args.name == "all" else [args.name]
    params = dict(args.param or [])
    if params:
        if len(names) != 1:
            raise OptdfaError("--param applies to one named benchmark, not to 'all'")
        signature = inspect.signature(BENCHMARKS[names[0]][0]).parameters
        unknown = sorted(set(params) - set(signature))
        if unknown:
            raise OptdfaError(
                f"benchmark {names[0]!r} has no parameter(s) {', '.join(unknown)}; "
                f"valid: {', '.join(sorted(signature))}"
            )
        params = {k: _coerce(k, v, signature[k].default) for k, v in params.items()}
    results = []
    for name in names:
        fn, fmt, _ = BENCHMARKS[name]
        kwargs = {"device": args.device, **params}
        if args.repeats:
            kwargs["repeats"] = args.repeats
        result = fn(**kwargs)
        print(f"[{name}] {fmt(result)}", flush=True)
        results.append(result)
    if args.json:
        atomic_write_json(args.json, results if len(results) > 1 else results[0])
    print(json.dumps({r["benchmark"]: round(r["ratio"], 4) for r in results if "ratio" in r}))
    return 0


#: numeric benchmark parameters that may be 0 (all others must be positive)
_ZERO_OK = {"seed", "warmup", "settle_s"}


def _coerce(key: str, value: Any, default: Any) -> Any:
    """``value`` (parsed as TOML) checked against the type of the parameter's ``default``."""
    if isinstance(default, tuple):
        if isinstance(value, list) and value and all(type(v) is int and v > 0 for v in value):
            return tuple(value)
        example = "[" + ",".join(map(str, default)) + "]"
        raise OptdfaError(f"--param {key} takes a list of positive integers like {example}")
    if default is None:  # an optional count (workers)
        if type(value) is not int or value < 1:
            raise OptdfaError(f"--param {key} takes a positive integer, got {value!r}")
        return value
    expected = type(default)
    if expected is float and type(value) is int:
        value = float(value)
    if type(value) is not expected:
        raise OptdfaError(
            f"--param {key} takes {expected.__name__} values like {default!r}, got {value!r}"
        )
    if expected in (int, float) and (value < 0 or (value == 0 and key not in _ZERO_OK)):
        rule = "non-negative" if key in _ZERO_OK else "positive"
        raise OptdfaError(f"--param {key} must be {rule}, got {value!r}")
    return value
