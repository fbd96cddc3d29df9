"""Tables, plots and the markdown summary of a sweep's results.

Runs are grouped by setting (their seeds pooled); each quantity is reported as mean ± sample
standard deviation over the seeds that finished. Files written in the sweep folder:

- ``results.csv`` — every run of the current sweep file, last line per run;
- ``accuracy-<axis>.png`` — one per swept key: test accuracy (left) and alignment (right:
  the final gradient alignment with backprop when the runs measured it, and the projection
  fidelity) against the key's values, mean ± std over seeds, one line per combination of the
  other grid keys; labelled ``[[points]]`` are drawn as horizontal reference bands;
- ``accuracy-vs-frames.png`` — accuracy against device frames per training step;
- ``summary.md`` — the table per setting, the accuracy difference to the reference point, and
  failed runs with their errors.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from pathlib import Path
from typing import Any

from optdfa.outputs import atomic_write_text
from optdfa.sweep.results import (
    METRICS,
    RESULTS_CSV,
    RESULTS_JSONL,
    latest_rows,
    mean_std,
    read_rows,
    write_csv,
)
from optdfa.sweep.spec import SweepSpec


def setting_table(spec: SweepSpec, rows_by_id: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """One entry per setting (in sweep order): params, label, runs, failures, mean/std/n of METRICS."""
    groups: OrderedDict[int, dict[str, Any]] = OrderedDict()
    for point in spec.expand():
        g = groups.setdefault(
            point.index,
            {
                "index": point.index,
                "params": point.params,
                "label": point.label,
                "setting_id": point.setting_id,
                "runs": 0,
                "ok": 0,
                "failed": [],
                "rows": [],
            },
        )
        g["runs"] += 1
        row = rows_by_id.get(point.point_id)
        if row is None:
            continue
        if row.get("status") == "ok":
            g["ok"] += 1
            g["rows"].append(row)
        else:
            g["failed"].append((point.seed, row.get("error")))
    table = []
    for g in groups.values():
        for metric in METRICS:
            mean, std, n = mean_std(r.get(metric) for r in g["rows"])
            g[metric] = {"mean": mean, "std": std, "n": n}
        table.append(g)
    return table


def _fmt(stat: dict[str, Any], scale: float = 1.0, digits: int = 2) -> str:
    if stat["mean"] is None:
        return "—"
    if stat["n"] > 1:
        return f"{scale * stat['mean']:.{digits}f} ± {scale * stat['std']:.{digits}f}"
    return f"{scale * stat['mean']:.{digits}f}"


def _value_text(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def _setting_name(entry: dict[str, Any]) -> str:
    params = ", ".join(f"{k}={_value_text(v)}" for k, v in entry["params"].items())
    return f"**{entry['label']}** ({params})" if entry["label"] else params


def reference_entry(spec: SweepSpec, table: list[dict[str, Any]]) -> dict[str, Any] | None:
    if spec.reference is None:
        return None
    return next((e for e in table if e["label"] == spec.reference), None)


def summary_markdown(spec: SweepSpec, table: list[dict[str, Any]], stale: int) -> str:
    ref = reference_entry(spec, table)
    ref_acc = ref["test_accuracy"]["mean"] if ref else None
    lines = [f"# Sweep `{spec.name}`", ""]
    if spec.description:
        lines += [spec.description, ""]
    runs = sum(e["runs"] for e in table)
    ok = sum(e["ok"] for e in table)
    fails = sum(len(e["failed"]) for e in table)
    lines += [
        f"Source: `{spec.source}`; seeds {spec.seeds}; {len(table)} settings, {runs} runs: "
        f"{ok} finished, {fails} failed, {runs - ok - fails} not run yet."
        + (f" ({stale} older result lines belong to runs no longer in the file.)" if stale else ""),
        "",
        "Mean ± std over seeds. Accuracy in %; Δ = accuracy − the reference's"
        + (f" (`{spec.reference}`)" if spec.reference else " (no reference set)")
        + "; alignment = final gradient alignment with backprop (needs `align_every`); "
        "fidelity = cosine of the delivered feedback with the exact projection; SNR in dB; "
        "frames per training step; device seconds and joules per run; wall and CPU seconds per run.",
        "",
        "| setting | runs | accuracy % | Δ pp | alignment | fidelity | SNR dB | device SNR dB "
        "| frames/step | device s | J | wall s | CPU s |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for e in table:
        acc = e["test_accuracy"]["mean"]
        delta = "—" if acc is None or ref_acc is None else f"{100 * (acc - ref_acc):+.2f}"
        lines.append(
            f"| {_setting_name(e)} | {e['ok']}/{e['runs']} | {_fmt(e['test_accuracy'], 100)} "
            f"| {delta} | {_fmt(e['final_gradient_alignment'], 1, 3)} "
            f"| {_fmt(e['projection_fidelity'], 1, 4)} | {_fmt(e['projection_snr_db'], 1, 1)} "
            f"| {_fmt(e['device_snr_db'], 1, 1)} | {_fmt(e['frames_per_step'], 1, 1)} "
            f"| {_fmt(e['device_seconds'], 1, 2)} | {_fmt(e['energy_joules'], 1, 1)} "
            f"| {_fmt(e['seconds'], 1, 1)} | {_fmt(e['cpu_seconds'], 1, 1)} |"
        )
    failed = [(e, seed, err) for e in table for seed, err in e["failed"]]
    if failed:
        lines += ["", "## Failed runs", ""]
        for e, seed, err in failed:
            lines.append(f"- {_setting_name(e)}, seed {seed}: `{err}`")
    return "\n".join(lines) + "\n"


# -- plots --------------------------------------------------------------------------------------
def _numeric(values: list[Any]) -> bool:
    return all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)


def _log_scale(values: list[Any]) -> bool:
    if not _numeric(values):
        return False
    positive = [float(v) for v in values if float(v) > 0]
    return len(positive) == len(values) and max(positive) / min(positive) >= 100


def plot_axis(spec: SweepSpec, table: list[dict[str, Any]], axis: str, path: Path) -> bool:
    """Accuracy and alignment against one swept key (see the module docstring)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from optdfa.outputs import atomic_savefig

    on_axis = [e for e in table if axis in e["params"] and e["label"] is None]
    if not on_axis:
        on_axis = [e for e in table if axis in e["params"]]
    values: list[Any] = []
    for e in on_axis:
        if e["params"][axis] not in values:
            values.append(e["params"][axis])
    if not values:
        return False
    numeric = _numeric(values)
    position = (lambda v: float(v)) if numeric else (lambda v: float(values.index(v)))
    others = [k for k in spec.axes if k != axis]
    lines: OrderedDict[str, list[dict[str, Any]]] = OrderedDict()
    for e in on_axis:
        key = ", ".join(f"{k}={_value_text(e['params'][k])}" for k in others if k in e["params"])
        lines.setdefault(key, []).append(e)
    references = [e for e in table if e["label"] is not None and e not in on_axis]
    has_grad = any(e["final_gradient_alignment"]["mean"] is not None for e in table)
    fig, (ax_acc, ax_al) = plt.subplots(1, 2, figsize=(11, 4.2))
    x_all = [position(v) for v in values]
    span = (min(x_all), max(x_all))
    for i, ref in enumerate(references):
        stat = ref["test_accuracy"]
        if stat["mean"] is None:
            continue
        color = f"C{(len(lines) + i) % 10}"
        m, s = 100 * stat["mean"], 100 * (stat["std"] or 0)
        ax_acc.axhline(m, color=color, ls="--", lw=1, label=ref["label"])
        ax_acc.axhspan(m - s, m + s, color=color, alpha=0.12)
        fid = ref["projection_fidelity"]["mean"]
        if fid is not None:
            ax_al.axhline(fid, color=color, ls="--", lw=1, label=f"{ref['label']} (fidelity)")
    for i, (key, entries) in enumerate(lines.items()):
        entries = sorted(entries, key=lambda e: position(e["params"][axis]))
        xs = [position(e["params"][axis]) for e in entries]
        color = f"C{i % 10}"

        def series(metric: str, scale: float = 1.0, entries=entries):
            ms = [e[metric]["mean"] for e in entries]
            ss = [e[metric]["std"] or 0.0 for e in entries]
            return (
                [math.nan if m is None else scale * m for m in ms],
                [scale * s for s in ss],
            )

        m, s = series("test_accuracy", 100)
        ax_acc.errorbar(xs, m, yerr=s, fmt="o-", color=color, capsize=3, label=key or None)
        m, s = series("projection_fidelity")
        ax_al.errorbar(
            xs,
            m,
            yerr=s,
            fmt="s--",
            color=color,
            capsize=3,
            alpha=0.8,
            label=f"projection fidelity {key}".strip(),
        )
        if has_grad:
            m, s = series("final_gradient_alignment")
            ax_al.errorbar(
                xs,
                m,
                yerr=s,
                fmt="o-",
                color=color,
                capsize=3,
                label=f"gradient alignment {key}".strip(),
            )
    for ax in (ax_acc, ax_al):
        ax.set_xlabel(axis)
        ax.grid(alpha=0.3)
        if numeric and _log_scale(values):
            ax.set_xscale("log")
        if not numeric:
            ax.set_xticks(range(len(values)), [_value_text(v) for v in values], rotation=20)
        if span[0] == span[1]:
            ax.set_xlim(span[0] - 1, span[1] + 1)
    ax_acc.set_ylabel("test accuracy (%)")
    ax_al.set_ylabel("cosine")
    ax_al.set_title(
        "alignment (gradient vs backprop; projection vs exact)"
        if has_grad
        else "projection fidelity (no gradient alignment measured)",
        fontsize=9,
    )
    handles, labels = ax_acc.get_legend_handles_labels()
    if labels:
        ax_acc.legend(fontsize=7)
    handles, labels = ax_al.get_legend_handles_labels()
    if labels:
        ax_al.legend(fontsize=7)
    fig.suptitle(f"{spec.name}: mean ± std over {len(spec.seeds)} seed(s)")
    fig.tight_layout()
    atomic_savefig(path, fig, dpi=110)
    plt.close(fig)
    return True


def plot_frames(spec: SweepSpec, table: list[dict[str, Any]], path: Path) -> bool:
    """Accuracy against frames per training step (one point per setting)."""
    pts = [
        e for e in table if e["frames_per_step"]["mean"] and e["test_accuracy"]["mean"] is not None
    ]
    if not pts:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from optdfa.outputs import atomic_savefig

    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    for i, e in enumerate(pts):
        name = e["label"] or ", ".join(_value_text(v) for v in e["params"].values())
        ax.errorbar(
            e["frames_per_step"]["mean"],
            100 * e["test_accuracy"]["mean"],
            yerr=100 * (e["test_accuracy"]["std"] or 0),
            fmt="o",
            color=f"C{i % 10}",
            capsize=3,
            label=name,
        )
    ax.set_xscale("log")
    ax.set_xlabel("device frames per training step")
    ax.set_ylabel("test accuracy (%)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    ax.set_title(f"{spec.name}: accuracy per frame spent")
    fig.tight_layout()
    atomic_savefig(path, fig, dpi=110)
    plt.close(fig)
    return True


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in text).strip("-")


def write_report(spec: SweepSpec, out_dir: str | Path) -> list[dict[str, Any]]:
    """Regenerate ``results.csv``, the plots and ``summary.md`` from ``results.jsonl``."""
    out = Path(out_dir)
    rows_all = read_rows(out / RESULTS_JSONL)
    by_id = latest_rows(rows_all)
    current = {p.point_id: p for p in spec.expand()}
    rows = [by_id[i] for i in current if i in by_id]
    stale = len({r["point_id"] for r in rows_all} - set(current))
    write_csv(out / RESULTS_CSV, rows, spec.axes)
    table = setting_table(spec, by_id)
    for axis in spec.plot_axes:
        plot_axis(spec, table, axis, out / f"accuracy-{_slug(axis)}.png")
    plot_frames(spec, table, out / "accuracy-vs-frames.png")
    atomic_write_text(out / "summary.md", summary_markdown(spec, table, stale))
    return table
