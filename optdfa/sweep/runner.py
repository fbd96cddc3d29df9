"""Running a sweep: parallel worker processes, one atomic result line per finished run, resume.

``run_sweep(spec, out_dir, workers=N)``:

1. reads ``out_dir/results.jsonl`` and skips every run whose last line is ``ok`` (a re-run of a
   finished sweep does nothing; an interrupted one resumes where it stopped). Runs whose last
   line is ``failed`` are **retried** (``retry_failed=False`` keeps them as they are): a failure
   may come from the machine (memory, a killed worker) and a deterministic one fails again fast;
2. trains the remaining runs in ``workers`` processes (``spawn`` context; each sets
   ``torch.set_num_threads(threads)`` with ``workers × threads ≤`` the cores this process may use).
   With ``workers=1`` runs go in this process, one after the other;
3. appends each run's row (:mod:`optdfa.sweep.results`) as soon as it finishes; a run that
   raises is recorded with ``status = "failed"`` and its error, and the sweep goes on;
4. writes the per-run metrics (``runs/<point_id>.jsonl``), ``sweep.json`` (the sweep as run),
   ``results.csv``, the plots and ``summary.md`` (see :mod:`optdfa.sweep.report`).
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import multiprocessing
import os
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from optdfa.errors import OptdfaError
from optdfa.outputs import atomic_write_json, atomic_write_jsonl, ensure_writable_dir
from optdfa.sweep.results import RESULTS_JSONL, append_row, latest_rows, read_rows
from optdfa.sweep.spec import Point, SweepSpec

#: test samples whose errors measure the projection quality after training
QUALITY_SAMPLES = 256


def available_cores() -> int:
    """CPU cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def threads_per_worker(workers: int, cores: int | None = None) -> int:
    """Torch threads per worker so that ``workers × threads ≤ cores`` (at least 1)."""
    cores = available_cores() if cores is None else cores
    return max(1, cores // max(1, workers))


# -- one run (in a worker) ----------------------------------------------------------------------
_DATA_CACHE: dict[str, Any] = {}


def _dataset(config: Any) -> Any:
    from optdfa.data import load_dataset

    key = repr(
        (config.dataset, config.data_dir, config.data_seed, config.train_subset, config.teacher)
    )
    if key not in _DATA_CACHE:
        _DATA_CACHE.clear()  # one dataset at a time per worker
        _DATA_CACHE[key] = load_dataset(
            config.dataset,
            data_dir=config.data_dir,
            data_seed=config.data_seed,
            teacher=config.teacher,
            train_subset=config.train_subset,
        )
    return _DATA_CACHE[key]


def _final_alignment(metrics: list[dict[str, Any]], summary: dict[str, Any]) -> dict[str, Any]:
    """Total gradient (signal) and update alignment of the last measurement, if any was made."""
    source = metrics[-1].get("alignment") if metrics else None
    if not isinstance(source, dict) or "signal" not in source:
        last = (summary.get("alignment") or {}).get("last")
        source = last if isinstance(last, dict) else {}

    def total(key: str) -> float | None:
        value = source.get(key)
        return value.get("total") if isinstance(value, dict) else None

    return {
        "final_gradient_alignment": total("signal"),
        "final_update_alignment": total("update"),
    }


def run_point(point: Point, runs_dir: str | None = None) -> dict[str, Any]:
    """Train one point and return its result row (raises on failure)."""
    from optdfa.sweep.projection import projection_quality
    from optdfa.training import train

    config = point.config
    data = _dataset(config)
    start, cpu_start = time.perf_counter(), time.process_time()
    result = train(config, None, progress=False, data=data)
    seconds = time.perf_counter() - start
    cpu_seconds = time.process_time() - cpu_start
    s = result.summary
    steps = s.get("steps") or 0
    row: dict[str, Any] = {
        "test_accuracy": s.get("test_accuracy"),
        "test_loss": s.get("test_loss"),
        "train_accuracy": s.get("train_accuracy"),
        "epochs": s.get("epochs"),
        "steps": steps,
        "frames": s.get("frames"),
        "frames_per_step": (s.get("frames") or 0.0) / steps if steps else None,
        "device_seconds": s.get("device_seconds"),
        "energy_joules": s.get("energy_joules"),
        "seconds": seconds,
        "cpu_seconds": cpu_seconds,
    }
    row.update(_final_alignment(result.metrics, s))
    trained = data.to(result.model.parameters().__next__().device)
    n = min(QUALITY_SAMPLES, len(trained.x_test))
    from optdfa.rules import loss_for_task

    row.update(
        projection_quality(
            result.rule,
            result.model,
            loss_for_task(trained.task),
            trained.x_test[:n],
            trained.y_test[:n],
        )
    )
    result.rule.close()
    if runs_dir is not None:
        atomic_write_jsonl(Path(runs_dir) / f"{point.point_id}.jsonl", result.metrics)
    return row


def _worker_init(threads: int) -> None:
    import torch

    torch.set_num_threads(threads)
    with contextlib.suppress(RuntimeError):  # already set in this process
        torch.set_num_interop_threads(1)


def _worker_run(point: Point, runs_dir: str) -> dict[str, Any]:
    return run_point(point, runs_dir)


# -- the sweep ----------------------------------------------------------------------------------
@dataclass
class SweepOutcome:
    """What :func:`run_sweep` did."""

    total: int
    skipped: int
    ran: int
    failed: int
    seconds: float
    out_dir: Path


def _base_row(spec: SweepSpec, point: Point) -> dict[str, Any]:
    return {
        "sweep": spec.name,
        "point_id": point.point_id,
        "setting_id": point.setting_id,
        "label": point.label,
        "params": point.params,
        "seed": point.seed,
        "config": point.config.to_dict(),
    }


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def run_sweep(
    spec: SweepSpec,
    out_dir: str | Path,
    *,
    workers: int | None = None,
    retry_failed: bool = True,
    report: bool = True,
    progress: Callable[[str], None] | None = None,
) -> SweepOutcome:
    """Run every point of ``spec`` not yet finished in ``out_dir`` (see the module docstring)."""
    workers = available_cores() if workers is None else int(workers)
    if workers < 1:
        raise OptdfaError(f"--workers must be a positive integer, got {workers}")
    points = spec.expand()
    out, _ = ensure_writable_dir(out_dir)
    runs_dir = out / "runs"
    runs_dir.mkdir(exist_ok=True)
    results = out / RESULTS_JSONL
    done = latest_rows(read_rows(results))
    todo = [
        p
        for p in points
        if p.point_id not in done or (retry_failed and done[p.point_id].get("status") != "ok")
    ]
    skipped = len(points) - len(todo)
    atomic_write_json(
        out / "sweep.json",
        {
            "name": spec.name,
            "description": spec.description,
            "source": spec.source,
            "seeds": spec.seeds,
            "base": spec.base,
            "grid": spec.grid,
            "points": spec.points,
            "reference": spec.reference,
            "plot": spec.plot,
            "axes": spec.axes,
        },
    )
    say = progress or (lambda _msg: None)
    say(
        f"sweep {spec.name}: {len(points)} runs, {skipped} already done, {len(todo)} to run "
        f"on {min(workers, max(1, len(todo)))} worker(s)"
    )
    start = time.perf_counter()
    failed = 0

    def record(point: Point, row: dict[str, Any] | None, error: BaseException | None) -> None:
        nonlocal failed
        line = _base_row(spec, point)
        if error is None:
            line.update(row or {})
            line.update(status="ok", error=None)
        else:
            failed += 1
            detail = "".join(traceback.format_exception_only(type(error), error)).strip()
            line.update(status="failed", error=detail)
        line["finished_at"] = _now()
        append_row(results, line)
        finished = len(points) - len(todo) + record.count + 1  # type: ignore[attr-defined]
        record.count += 1  # type: ignore[attr-defined]
        acc = line.get("test_accuracy")
        what = (f"accuracy {100 * acc:.2f}%" if isinstance(acc, float) else line["status"]) + (
            f" ({line['error']})" if error is not None else ""
        )
        say(f"[{finished}/{len(points)}] {_point_text(point)}: {what}")

    record.count = 0  # type: ignore[attr-defined]
    if todo and workers == 1:
        for point in todo:
            try:
                row = run_point(point, str(runs_dir))
            except KeyboardInterrupt:
                raise
            except Exception as exc:
                record(point, None, exc)
            else:
                record(point, row, None)
    elif todo:
        n = min(workers, len(todo))
        threads = threads_per_worker(n)
        ctx = multiprocessing.get_context("spawn")
        with cf.ProcessPoolExecutor(
            max_workers=n, mp_context=ctx, initializer=_worker_init, initargs=(threads,)
        ) as pool:
            futures = {pool.submit(_worker_run, p, str(runs_dir)): p for p in todo}
            try:
                for fut in cf.as_completed(futures):
                    point = futures[fut]
                    try:
                        row = fut.result()
                    except Exception as exc:  # includes a worker that died (BrokenProcessPool)
                        record(point, None, exc)
                    else:
                        record(point, row, None)
            except KeyboardInterrupt:
                for fut in futures:
                    fut.cancel()
                raise
    seconds = time.perf_counter() - start
    if report:
        from optdfa.sweep.report import write_report

        write_report(spec, out)
    return SweepOutcome(len(points), skipped, len(todo), failed, seconds, out)


def _point_text(point: Point) -> str:
    params = ", ".join(f"{k}={v}" for k, v in point.params.items())
    label = f"{point.label}: " if point.label else ""
    return f"{label}{params} seed {point.seed}"


def default_progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)
