"""The ``optdfa`` command: subcommands, and one clean error line instead of a traceback."""

from __future__ import annotations

import argparse
import importlib
import sys

from optdfa.errors import OptdfaError

#: modules under optdfa.cli that provide ``register(subparsers)``, in help order
COMMANDS = ("train", "sweep", "cost", "privacy", "characterise", "bench")


class _Parser(argparse.ArgumentParser):
    """Bad arguments: one line naming the problem and where help is, no usage dump."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


def build_parser() -> argparse.ArgumentParser:
    from optdfa import __version__

    parser = _Parser(
        prog="optdfa",
        description="Direct Feedback Alignment with the feedback projection on an optical co-processor.",
    )
    parser.add_argument("--version", action="version", version=f"optdfa {__version__}")
    sub = parser.add_subparsers(
        dest="command", metavar="COMMAND", required=True, parser_class=_Parser
    )
    for name in COMMANDS:
        importlib.import_module(f"optdfa.cli.{name}").register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except OptdfaError as exc:
        print(f"optdfa {args.command}: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print(f"optdfa {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
