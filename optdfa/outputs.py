"""Writing run artefacts safely: every file appears whole (temp file + ``os.replace``) or not at all."""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from optdfa.errors import OptdfaError

RUN_FILES = (
    "config.toml",
    "metrics.jsonl",
    "summary.json",
    "curves.png",
    "checkpoint.pt",
    "alignment.jsonl",
    "alignment.png",
)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_FILE_MODE = 0o666 & ~_umask()


def _atomic(path: Path, write: Callable[[Path], None]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(Path(tmp))
        os.chmod(tmp, _FILE_MODE)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | Path, text: str) -> None:
    _atomic(Path(path), lambda p: p.write_text(text, encoding="utf-8"))


def json_safe(values: dict[str, Any]) -> dict[str, Any]:
    """``values`` with non-finite floats (``poisson_exact_below_e = inf``) as strings, for JSON files."""
    return {
        k: str(v) if isinstance(v, float) and not math.isfinite(v) else v for k, v in values.items()
    }


def atomic_write_json(path: str | Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, allow_nan=False) + "\n")


def atomic_write_jsonl(path: str | Path, rows: list[dict[str, Any]]) -> None:
    atomic_write_text(
        path, "".join(json.dumps(r, sort_keys=True, allow_nan=False) + "\n" for r in rows)
    )


def atomic_torch_save(path: str | Path, obj: Any) -> None:
    _atomic(Path(path), lambda p: torch.save(obj, p))


def atomic_savefig(path: str | Path, fig: Any, **kwargs: Any) -> None:
    """Save a matplotlib figure atomically (format from ``path``'s suffix)."""
    fmt = Path(path).suffix.lstrip(".") or "png"
    _atomic(Path(path), lambda p: fig.savefig(p, format=fmt, **kwargs))


def ensure_writable_dir(path: str | Path) -> tuple[Path, bool]:
    """Create ``path`` if needed and check it is writable; returns ``(path, created)``."""
    path = Path(path).expanduser()
    existed = path.exists()
    if existed and not path.is_dir():
        raise OptdfaError(f"output path {path} exists and is not a directory")
    try:
        path.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".write-test.", dir=path)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise OptdfaError(
            f"cannot write to output directory {path}: {exc.strerror or exc}"
        ) from None
    return path, not existed
