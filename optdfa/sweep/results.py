"""The results table of a sweep: ``results.jsonl`` (append-only) and ``results.csv`` (derived).

``results.jsonl`` holds one JSON line per finished run, appended atomically the moment the run
ends (one ``write`` of one line with ``O_APPEND``, under an exclusive ``flock``): an interrupted
sweep loses nothing, and a line is never half there (a torn last line from a killed writer is
ignored when reading). A re-run may append a newer line for the same ``point_id`` (a retried
failure); the **last** line of a point wins.

Columns of every row (``COLUMNS``; the CSV has them, then one column per swept key):
``point_id``, ``setting_id``, ``label``, ``seed``, ``status`` (``ok`` / ``failed``), ``error``,
``test_accuracy``, ``test_loss``, ``train_accuracy``, ``final_gradient_alignment`` (mean per-sample
cosine of the DFA and backprop signals, all layers, from the ``alignment`` diagnostics of the last
epoch when the run measured them — ``align_every > 0`` — else empty), ``final_update_alignment``,
``projection_fidelity``, ``projection_snr_db``, ``device_snr_db`` (see
:mod:`optdfa.sweep.projection`), ``frames``, ``frames_per_step``, ``device_seconds``,
``energy_joules``, ``epochs``, ``steps``, ``seconds`` (wall time of the run), ``cpu_seconds`` (CPU
time of the process that trained it: the run's cost on an idle core when it used one thread),
``finished_at``.
Rows also keep ``params`` (the swept keys and values) and ``config`` (the resolved training
config).
"""

from __future__ import annotations

import csv
import fcntl
import io
import json
import math
import os
import statistics
import warnings
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from optdfa.outputs import atomic_write_text

RESULTS_JSONL = "results.jsonl"
RESULTS_CSV = "results.csv"

COLUMNS = (
    "point_id",
    "setting_id",
    "label",
    "seed",
    "status",
    "error",
    "test_accuracy",
    "test_loss",
    "train_accuracy",
    "final_gradient_alignment",
    "final_update_alignment",
    "projection_fidelity",
    "projection_snr_db",
    "device_snr_db",
    "frames",
    "frames_per_step",
    "device_seconds",
    "energy_joules",
    "epochs",
    "steps",
    "seconds",
    "cpu_seconds",
    "finished_at",
)

#: quantities aggregated over seeds (mean ± std) in the summary and plots
METRICS = (
    "test_accuracy",
    "final_gradient_alignment",
    "projection_fidelity",
    "projection_snr_db",
    "device_snr_db",
    "frames_per_step",
    "device_seconds",
    "energy_joules",
    "seconds",
    "cpu_seconds",
)


def append_row(path: str | Path, row: dict[str, Any]) -> None:
    """Append one JSON line atomically (O_APPEND, one write, exclusive lock)."""
    line = (json.dumps(row, sort_keys=True, allow_nan=False) + "\n").encode()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            size = os.fstat(fd).st_size
            if size and os.pread(fd, 1, size - 1) != b"\n":
                line = b"\n" + line  # a torn line left by a killed writer stays on its own
            written = os.write(fd, line)
            if written != len(line):  # a full disk: undo the torn line rather than keep it
                os.ftruncate(fd, os.fstat(fd).st_size - written)
                raise OSError(f"short write to {path}")
            os.fsync(fd)
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def read_rows(path: str | Path) -> list[dict[str, Any]]:
    """Every complete line of ``results.jsonl`` (a torn or corrupt line is skipped with a warning)."""
    path = Path(path)
    if not path.exists():
        return []
    rows = []
    with path.open("rb") as f:
        for number, raw in enumerate(f, 1):
            if not raw.endswith(b"\n"):
                warnings.warn(f"{path}:{number}: incomplete last line ignored", stacklevel=2)
                continue
            try:
                row = json.loads(raw)
            except json.JSONDecodeError:
                warnings.warn(f"{path}:{number}: unreadable line ignored", stacklevel=2)
                continue
            if isinstance(row, dict) and "point_id" in row:
                rows.append(row)
    return rows


def latest_rows(rows: Iterable[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The last row of each ``point_id``."""
    out: dict[str, dict[str, Any]] = {}
    for row in rows:
        out[row["point_id"]] = row
    return out


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, (list, dict)):
        return json.dumps(value, sort_keys=True)
    return str(value)


def write_csv(path: str | Path, rows: list[dict[str, Any]], axes: list[str]) -> None:
    """The results table as CSV: :data:`COLUMNS`, then one column per swept key (atomic)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow([*COLUMNS, *axes])
    for row in rows:
        params = row.get("params", {})
        writer.writerow([_cell(row.get(c)) for c in COLUMNS] + [_cell(params.get(a)) for a in axes])
    atomic_write_text(path, buffer.getvalue())


def mean_std(values: Iterable[Any]) -> tuple[float | None, float | None, int]:
    """Mean, sample standard deviation (0 for one value) and count of the finite numbers."""
    kept = [float(v) for v in values if isinstance(v, (int, float)) and math.isfinite(v)]
    if not kept:
        return None, None, 0
    std = statistics.stdev(kept) if len(kept) > 1 else 0.0
    return statistics.fmean(kept), std, len(kept)
