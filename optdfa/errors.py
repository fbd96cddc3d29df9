"""User-facing errors.

Every problem a user can cause (bad option, missing file, corrupt data, diverging run) raises
:class:`OptdfaError` with a message that says what is wrong and what to do. The CLI prints the
message and exits with a non-zero code, without a traceback.
"""

from __future__ import annotations


class OptdfaError(Exception):
    """An error caused by input or environment, explained in its message."""

    exit_code: int = 2


class TrainingDiverged(OptdfaError):
    """The loss became NaN or infinite; training stopped."""

    exit_code = 3


def choice_error(what: str, value: object, valid: list[str] | tuple[str, ...]) -> OptdfaError:
    """Build the standard "unknown X" error listing the valid names."""
    names = ", ".join(sorted(valid))
    return OptdfaError(f"unknown {what} {value!r}; valid {what}s: {names}")
