"""lightonml without surprises: supported versions, import, and LightOn driver errors.

- :func:`import_lightonml` imports lightonml after checking its installed version
  (:data:`SUPPORTED`); when it is missing or unsupported the error carries the exact install
  command (:data:`INSTALL_COMMAND`: lightonml 1.4.3 pins numexpr 2.7, which does not build on
  Python 3.11, so it is installed with ``--no-deps`` and its real run-time imports are added).
- :func:`classify_device_error` sorts an exception raised on the way to a real OPU into
  ``not-found`` (no LightOn driver ``lightonopu`` or no OPU configuration on the host), ``busy``
  (another process holds the OPU: lightonml's pid-file lock raises ``ProcessRunningException``,
  a ``BaseException``), ``driver-too-old``, ``fatal`` (a programming or input error: never
  retried) or ``transient`` (anything else the driver raises, e.g. an acquisition timeout).
- :func:`call_with_retries` runs a device action, retrying ``busy`` and ``transient`` failures a
  bounded number of times with exponential back-off, and turns the final failure into one
  :class:`~optdfa.errors.OptdfaError` that says what to do.
"""

from __future__ import annotations

import errno
import importlib.metadata
import re
import time
import warnings
from collections.abc import Callable
from types import ModuleType
from typing import TypeVar

from optdfa.errors import OptdfaError

#: versions optdfa works with: ``SUPPORTED[0] <= version < SUPPORTED[1]`` (1.4.3 is tested; the
#: simulated-device type checks and settings it relies on are those of the 1.4 series)
SUPPORTED: tuple[tuple[int, ...], tuple[int, ...]] = ((1, 4, 3), (1, 5))
TESTED_VERSION = "1.4.3"
#: the one command that installs a working lightonml (``make install`` runs the same)
INSTALL_COMMAND = (
    f'python -m pip install --no-deps "lightonml=={TESTED_VERSION}" && '
    'python -m pip install numexpr attrs requests "setuptools<81"'
)
#: where LightOn's driver looks for the OPU configuration of the host
CONFIG_PATHS = ("/etc/lighton/host.json", "/etc/lighton/opu.json")

T = TypeVar("T")


def installed_version() -> str | None:
    """The installed lightonml version string, or ``None`` when it is not installed."""
    try:
        return importlib.metadata.version("lightonml")
    except importlib.metadata.PackageNotFoundError:
        return None


def parse_version(text: str) -> tuple[int, ...]:
    """``"1.4.3"`` → ``(1, 4, 3)``; only the leading release numbers count (``1.5.0rc1`` → 1.5.0)."""
    match = re.match(r"\s*v?(\d+(?:\.\d+)*)", text)
    if not match:
        raise OptdfaError(f"cannot read the lightonml version {text!r}")
    return tuple(int(part) for part in match.group(1).split("."))


def _range_text() -> str:
    low, high = (".".join(str(p) for p in v) for v in SUPPORTED)
    return f">={low},<{high}"


def check_version(version: str | None) -> None:
    """Raise a clear :class:`OptdfaError` unless ``version`` is a supported lightonml."""
    if version is None:
        raise OptdfaError(
            f"the lightonml backend needs LightOn's lightonml package, which is not installed; "
            f"install it with: {INSTALL_COMMAND}   (or run 'make install')"
        )
    parsed = parse_version(version)
    low, high = SUPPORTED
    if parsed < low or parsed >= high:
        which = "too old" if parsed < low else "too new"
        raise OptdfaError(
            f"lightonml {version} is {which}: optdfa supports lightonml{_range_text()} "
            f"(tested with {TESTED_VERSION}); install it with: {INSTALL_COMMAND}"
        )


def import_lightonml() -> ModuleType:
    """Check the installed version, then import lightonml (its pkg_resources warning silenced)."""
    version = installed_version()
    check_version(version)
    with warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore", message="pkg_resources is deprecated", category=UserWarning
        )
        try:
            import lightonml
            import lightonml.internal.simulated_device  # noqa: F401
        except ImportError as exc:
            raise OptdfaError(
                f"lightonml {version} is installed but cannot be imported ({exc}); its run-time "
                f"dependencies are installed separately: {INSTALL_COMMAND}"
            ) from None
    return lightonml


# -- driver errors ---------------------------------------------------------------------------------
#: exceptions that signal a wrong call or input: retrying cannot help
_FATAL = (
    OptdfaError,
    ValueError,
    TypeError,
    AssertionError,
    IndexError,
    KeyError,
    AttributeError,
    NotImplementedError,
)
_BUSY_WORDS = ("already running", "busy", "in use", "locked by", "resource temporarily")
_NO_CONFIG = "No configuration files for the OPU"


def classify_device_error(exc: BaseException) -> str:
    """``not-found``, ``busy``, ``driver-too-old``, ``fatal`` or ``transient`` (module docstring)."""
    name = type(exc).__name__
    text = str(exc)
    if isinstance(exc, ModuleNotFoundError) and (exc.name or "").startswith("lightonopu"):
        return "not-found"
    if _NO_CONFIG in text or (
        isinstance(exc, FileNotFoundError) and "lighton" in str(exc.filename or "")
    ):
        return "not-found"
    if name in ("VersionConflict", "DistributionNotFound") and "lightonopu" in text:
        return "driver-too-old"
    if name == "ProcessRunningException":
        return "busy"
    if isinstance(exc, OSError) and exc.errno in (errno.EBUSY, errno.EAGAIN):
        return "busy"
    if not isinstance(exc, _FATAL) and any(w in text.lower() for w in _BUSY_WORDS):
        return "busy"
    if isinstance(exc, _FATAL) or not isinstance(exc, Exception):
        return "fatal"
    return "transient"


def device_error(kind: str, exc: BaseException, what: str, attempts: int) -> OptdfaError:
    """The user-facing error for a failure of ``kind`` (see :func:`classify_device_error`)."""
    detail = f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}"
    if kind == "not-found":
        if _NO_CONFIG in str(exc) or isinstance(exc, FileNotFoundError):
            return OptdfaError(
                f"no LightOn OPU configured on this host ({' or '.join(CONFIG_PATHS)} not found); "
                f"give the OPU's configuration with backend option config_file=PATH, or run "
                f"lightonml's simulated OPU with --lightonml-simulated"
            )
        return OptdfaError(
            "no LightOn OPU found: a real device needs LightOn's driver package 'lightonopu' "
            "(installed with the OPU, not on PyPI) and its configuration in "
            f"{' or '.join(CONFIG_PATHS)}; to run lightonml's simulated OPU instead pass "
            "--lightonml-simulated (backend option simulated=true)"
        )
    if kind == "busy":
        tries = "once" if attempts == 1 else f"{attempts} times"
        return OptdfaError(
            f"the OPU is busy: another process holds it ({detail}); tried {tries}. Release it in "
            f"the other process (opu.close(), or stop that Python kernel) and retry, or raise "
            f"backend option retries / retry_delay_s to wait longer"
        )
    if kind == "driver-too-old":
        return OptdfaError(
            f"the LightOn driver is too old for lightonml {TESTED_VERSION} ({detail}); it needs "
            f"lightonopu>=1.4.1: update the OPU software (LightOn support)"
        )
    if kind == "transient":
        return OptdfaError(
            f"{what} failed {attempts} times in a row ({detail}); check the OPU (lightonml's "
            f"'opu_test' command runs a bare transform) or raise backend option retries"
        )
    return OptdfaError(f"{what} failed: {detail}")


def call_with_retries(
    action: Callable[[], T],
    *,
    what: str,
    retries: int,
    delay_s: float,
    sleep: Callable[[float], None] = time.sleep,
    before_retry: Callable[[], None] | None = None,
) -> T:
    """Run ``action``; retry ``busy``/``transient`` failures up to ``retries`` more times.

    The wait before retry ``k`` (1-based) is ``delay_s · 2^(k−1)``. ``before_retry`` runs before
    each new attempt (e.g. to re-open the device). The last failure becomes an
    :class:`OptdfaError` (see :func:`device_error`); fatal errors are never retried.
    """
    attempt = 0
    while True:
        attempt += 1
        try:
            return action()
        except (KeyboardInterrupt, SystemExit, GeneratorExit):
            raise
        except BaseException as exc:  # ProcessRunningException is a BaseException
            kind = classify_device_error(exc)
            if isinstance(exc, OptdfaError):
                raise
            if kind in ("busy", "transient") and attempt <= retries:
                sleep(delay_s * 2 ** (attempt - 1))
                if before_retry is not None:
                    before_retry()
                continue
            raise device_error(kind, exc, what, attempt) from exc
