"""Argument types shared by the subcommands (each raises argparse's clean error on bad input)."""

from __future__ import annotations

import argparse
import math
from typing import Any

import tomllib


def int_list(text: str) -> list[int]:
    """``"256,256"`` → ``[256, 256]``; ``""`` or ``"none"`` → ``[]``."""
    text = text.strip()
    if text in ("", "none"):
        return []
    try:
        values = [int(part) for part in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated positive integers such as 256,256, got {text!r}"
        ) from None
    if any(v < 1 for v in values):
        raise argparse.ArgumentTypeError(f"widths must be positive integers, got {text!r}")
    return values


def _number(parse: type, what: str, allow_zero: bool):
    """An argparse type: ``parse`` the text, require a finite value > 0 (or ≥ 0)."""

    def convert(text: str):
        try:
            value = parse(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
        if not math.isfinite(value) or value < 0 or (value == 0 and not allow_zero):
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
        return value

    convert.__name__ = what
    return convert


positive_int = _number(int, "a positive integer", allow_zero=False)
non_negative_int = _number(int, "a non-negative integer", allow_zero=True)
positive_float = _number(float, "a positive number", allow_zero=False)
non_negative_float = _number(float, "a non-negative number", allow_zero=True)


def parse_value(text: str) -> Any:
    """A TOML scalar/array if ``text`` is one (``6``, ``1e-3``, ``true``, ``[1,2]``), else the string."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def key_value(text: str) -> tuple[str, Any]:
    """``"adc_bits=6"`` → ``("adc_bits", 6)``."""
    key, sep, value = text.partition("=")
    key = key.strip()
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    return key, parse_value(value.strip())


class DefaultsHelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows ``(default: X)`` only where there is a meaningful default (not None/False/[])."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default in (None, False, [], argparse.SUPPRESS) or action.required:
            return action.help
        return super()._get_help_string(action)
