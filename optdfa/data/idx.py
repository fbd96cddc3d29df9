"""Reader for the IDX format of MNIST and Fashion-MNIST (optionally gzip-compressed).

IDX: a big-endian header — two zero bytes, a type byte (0x08 = uint8), the number of dimensions
— then one big-endian uint32 per dimension, then the data in C order.
"""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np

from optdfa.errors import OptdfaError

_UINT8 = 0x08


def read_idx(path: str | Path, expected_ndim: int | None = None) -> np.ndarray:
    """Read an IDX file of unsigned bytes; a ``.gz`` suffix means gzip.

    Returns a ``uint8`` array of the shape stated in the header. Raises :class:`OptdfaError`
    for a wrong magic number, a truncated or oversized payload, or an unreadable gzip stream.
    """
    path = Path(path)
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as f:
                raw = f.read()
        else:
            raw = path.read_bytes()
    except (OSError, EOFError, gzip.BadGzipFile) as exc:
        raise OptdfaError(f"cannot read IDX file {path}: {exc}") from None
    if len(raw) < 4:
        raise OptdfaError(f"{path} is not an IDX file: only {len(raw)} bytes")
    zero, dtype_code, ndim = int.from_bytes(raw[0:2], "big"), raw[2], raw[3]
    if zero != 0 or dtype_code != _UINT8 or ndim == 0:
        magic = int.from_bytes(raw[0:4], "big")
        raise OptdfaError(
            f"{path} is not an unsigned-byte IDX file: magic number 0x{magic:08x} "
            f"(expected 0x0000080N with N the number of dimensions)"
        )
    if expected_ndim is not None and ndim != expected_ndim:
        raise OptdfaError(
            f"{path}: expected {expected_ndim} dimensions (magic 0x0000080{expected_ndim}), "
            f"the header says {ndim}"
        )
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise OptdfaError(
            f"{path} is truncated: the header needs {header} bytes, the file has {len(raw)}"
        )
    shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    n = int(np.prod(shape))
    payload = len(raw) - header
    if payload != n:
        state = "truncated" if payload < n else "longer than its header says"
        raise OptdfaError(
            f"{path} is {state}: header shape {shape} needs {n} data bytes, found {payload}"
        )
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(shape)


def find_idx(folder: Path, stem: str) -> Path:
    """The file ``stem`` or ``stem.gz`` in ``folder`` (the uncompressed one wins)."""
    for candidate in (folder / stem, folder / f"{stem}.gz"):
        if candidate.is_file():
            return candidate
    raise OptdfaError(f"missing data file {folder / stem}[.gz]")
