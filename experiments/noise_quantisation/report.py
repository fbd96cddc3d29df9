"""Collect the noise/quantisation studies into docs/results: figures and the designer's numbers.

    optdfa sweep experiments/noise_quantisation/<study>.toml --out runs/noise_quantisation/<study>
    python experiments/noise_quantisation/report.py [--runs runs/noise_quantisation]

(``run_all.sh`` does both.) Reads each study's ``results.jsonl`` through the sweep's own
tables, copies its figures to ``docs/results/noise-quantisation/`` and writes
``docs/results/noise-quantisation.json``: per study the table of settings (accuracy mean ± std,
Δ to the reference, fidelity, SNRs, frames), and the answers a hardware designer asks for —
fewest ADC bits and lowest device SNR within 0.5 pp of the ideal device, encoder accuracy per
frame, where projection fidelity and accuracy break — plus the figure ``accuracy-vs-snr.png``
pooling every study that uses the default encoder.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import statistics
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
STUDIES = (
    "adc-bits",
    "read-noise",
    "photon-budget",
    "full-well",
    "ternary-threshold",
    "encoder",
    "reference-power",
    "medium-drift",
)
TOLERANCE_PP = 0.5


def _tables(runs: Path) -> dict[str, tuple[Any, list[dict[str, Any]]]]:
    from optdfa.sweep import load_sweep
    from optdfa.sweep.report import setting_table
    from optdfa.sweep.results import latest_rows, read_rows

    out = {}
    for name in STUDIES:
        spec = load_sweep(REPO / "experiments" / "noise_quantisation" / f"{name}.toml")
        rows = latest_rows(read_rows(runs / name / "results.jsonl"))
        out[name] = (spec, setting_table(spec, rows))
    return out


def _acc(entry: dict[str, Any]) -> float | None:
    m = entry["test_accuracy"]["mean"]
    return None if m is None else 100.0 * m


def _ref(spec: Any, table: list[dict[str, Any]], label: str) -> dict[str, Any] | None:
    return next((e for e in table if e["label"] == label), None)


def _paired(entry: dict[str, Any], ref: dict[str, Any] | None) -> tuple[float | None, float | None]:
    """Mean and standard error of the per-seed accuracy difference to ``ref`` (same seeds), pp."""
    if ref is None:
        return None, None
    base = {r["seed"]: r["test_accuracy"] for r in ref["rows"]}
    diffs = [
        100.0 * (r["test_accuracy"] - base[r["seed"]]) for r in entry["rows"] if r["seed"] in base
    ]
    if not diffs:
        return None, None
    mean = statistics.fmean(diffs)
    se = statistics.stdev(diffs) / math.sqrt(len(diffs)) if len(diffs) > 1 else None
    return mean, se


def _row(
    entry: dict[str, Any], ref_acc: float | None, ref: dict[str, Any] | None = None
) -> dict[str, Any]:
    acc = _acc(entry)
    paired, paired_se = _paired(entry, ref)
    return {
        "paired_delta_pp": paired,
        "paired_delta_se_pp": paired_se,
        "setting": entry["label"] or entry["params"],
        "params": entry["params"],
        "runs_ok": entry["ok"],
        "runs": entry["runs"],
        "failed": len(entry["failed"]),
        "accuracy": acc,
        "accuracy_std": None if acc is None else 100.0 * entry["test_accuracy"]["std"],
        "delta_pp": None if acc is None or ref_acc is None else acc - ref_acc,
        "gradient_alignment": entry["final_gradient_alignment"]["mean"],
        "gradient_alignment_std": entry["final_gradient_alignment"]["std"],
        "fidelity": entry["projection_fidelity"]["mean"],
        "snr_db": entry["projection_snr_db"]["mean"],
        "device_snr_db": entry["device_snr_db"]["mean"],
        "frames_per_step": entry["frames_per_step"]["mean"],
        "wall_seconds": entry["seconds"]["mean"],
    }


def _fewest_within(rows: list[dict[str, Any]], key: str, ascending_better: bool) -> Any:
    """The smallest value of ``key`` from which on every setting is within tolerance."""
    ranked = sorted(
        (r for r in rows if key in r["params"]),
        key=lambda r: r["params"][key],
        reverse=not ascending_better,
    )
    best = None
    for r in ranked:  # from the best setting towards the worst
        ok = r["delta_pp"] is not None and r["delta_pp"] >= -TOLERANCE_PP and r["failed"] == 0
        if not ok:
            break
        best = r["params"][key]
    return best


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", default=str(REPO / "runs" / "noise_quantisation"))
    parser.add_argument("--docs", default=str(REPO / "docs" / "results"))
    args = parser.parse_args(argv)
    runs, docs = Path(args.runs), Path(args.docs)
    figures = docs / "noise-quantisation"
    figures.mkdir(parents=True, exist_ok=True)
    tables = _tables(runs)
    result: dict[str, Any] = {"tolerance_pp": TOLERANCE_PP, "studies": {}}
    pooled = []
    for name, (spec, table) in tables.items():
        ideal = _ref(spec, table, "ideal device")
        digital = _ref(spec, table, "digital")
        ref = ideal or digital
        ref_acc = _acc(ref) if ref else None
        rows = [_row(e, ref_acc, ref) for e in table]
        result["studies"][name] = {
            "description": spec.description,
            "reference": ref["label"] if ref else None,
            "reference_accuracy": ref_acc,
            "digital_accuracy": _acc(digital) if digital else None,
            "seeds": len(spec.seeds),
            "rows": rows,
            "wall_seconds_total": sum(
                (e["seconds"]["mean"] or 0) * e["seconds"]["n"] for e in table
            ),
        }
        for fig in (runs / name).glob("*.png"):
            shutil.copy(fig, figures / f"{name}--{fig.name}")
        if name != "encoder" and name != "ternary-threshold" and ideal:
            pooled += [
                (name, r)
                for r in rows
                if r["device_snr_db"] is not None and not isinstance(r["setting"], str)
            ]
    s = result["studies"]
    answers: dict[str, Any] = {}
    if "adc-bits" in s:
        answers["fewest_adc_bits"] = _fewest_within(s["adc-bits"]["rows"], "opu.adc_bits", False)
    if "read-noise" in s:
        answers["largest_read_noise_e"] = _fewest_within(
            s["read-noise"]["rows"], "opu.read_noise_e", True
        )
    if "photon-budget" in s:
        answers["lowest_photon_rate"] = _fewest_within(
            s["photon-budget"]["rows"], "opu.photon_rate", False
        )
    if "full-well" in s:
        answers["smallest_full_well_e"] = _fewest_within(
            s["full-well"]["rows"], "opu.full_well_e", False
        )
    per_study = {}
    for name, r_list in ((n, s[n]["rows"]) for n in s if n not in ("encoder", "ternary-threshold")):
        ok = [r for r in r_list if isinstance(r["setting"], dict) and r["failed"] == 0]
        inside = [r for r in ok if r["delta_pp"] is not None and r["delta_pp"] >= -TOLERANCE_PP]
        out = [r for r in ok if r["delta_pp"] is not None and r["delta_pp"] < -TOLERANCE_PP]
        per_study[name] = {
            "lowest_device_snr_db_within": min(
                (r["device_snr_db"] for r in inside if r["device_snr_db"] is not None), default=None
            ),
            "highest_device_snr_db_outside": max(
                (r["device_snr_db"] for r in out if r["device_snr_db"] is not None), default=None
            ),
            "lowest_fidelity_within": min(
                (r["fidelity"] for r in inside if r["fidelity"] is not None), default=None
            ),
            "highest_fidelity_outside": max(
                (r["fidelity"] for r in out if r["fidelity"] is not None), default=None
            ),
            "lowest_gradient_alignment_within": min(
                (r["gradient_alignment"] for r in inside if r["gradient_alignment"] is not None),
                default=None,
            ),
            "highest_gradient_alignment_outside": max(
                (r["gradient_alignment"] for r in out if r["gradient_alignment"] is not None),
                default=None,
            ),
        }
    answers["per_study"] = per_study
    within = [r for _, r in pooled if r["delta_pp"] is not None and r["delta_pp"] >= -TOLERANCE_PP]
    outside = [r for _, r in pooled if r["delta_pp"] is None or r["delta_pp"] < -TOLERANCE_PP]
    answers["lowest_device_snr_db_within"] = min((r["device_snr_db"] for r in within), default=None)
    answers["highest_device_snr_db_outside"] = max(
        (r["device_snr_db"] for r in outside), default=None
    )
    answers["lowest_fidelity_within"] = min(
        (r["fidelity"] for r in within if r["fidelity"] is not None), default=None
    )
    answers["highest_fidelity_outside"] = max(
        (r["fidelity"] for r in outside if r["fidelity"] is not None), default=None
    )
    if "encoder" in s:
        answers["encoders"] = [
            {
                "encoder": r["params"].get("opu.encoder", r["setting"]),
                "accuracy": r["accuracy"],
                "accuracy_std": r["accuracy_std"],
                "frames_per_step": r["frames_per_step"],
            }
            for r in s["encoder"]["rows"]
        ]
    result["answers"] = answers
    _snr_figure(pooled, figures / "accuracy-vs-snr.png")
    (docs / "noise-quantisation.json").write_text(json.dumps(result, indent=2, default=str) + "\n")
    print(json.dumps(answers, indent=2, default=str))
    return 0


def _snr_figure(pooled: list[tuple[str, dict[str, Any]]], path: Path) -> None:
    """Δ accuracy against device SNR and fidelity; settings below the axis drawn as ▼ at its floor."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    floor = -6.0
    fig, (ax, bx, cx) = plt.subplots(1, 3, figsize=(16, 4.3))
    names = sorted({n for n, _ in pooled})
    for i, name in enumerate(names):
        pts = [r for n, r in pooled if n == name and r["delta_pp"] is not None]
        for a, key in ((ax, "device_snr_db"), (bx, "fidelity"), (cx, "gradient_alignment")):
            pts_k = [r for r in pts if r[key] is not None]
            inside = [r for r in pts_k if r["delta_pp"] >= floor]
            below = [r for r in pts_k if r["delta_pp"] < floor]
            a.errorbar(
                [r[key] for r in inside],
                [r["delta_pp"] for r in inside],
                yerr=[r["paired_delta_se_pp"] or 0 for r in inside],
                fmt="o",
                color=f"C{i}",
                capsize=2,
                label=name,
            )
            a.plot([r[key] for r in below], [floor + 0.15] * len(below), "v", color=f"C{i}", ms=8)
    for a in (ax, bx, cx):
        a.axhline(-TOLERANCE_PP, color="k", ls="--", lw=1)
        a.axhline(0, color="k", lw=0.5)
        a.set_ylabel("accuracy − ideal device (pp, paired by seed)")
        a.set_ylim(floor, 2)
        a.grid(alpha=0.3)
    ax.set_xlabel("device SNR of the recovered projection (dB)")
    bx.set_xlabel("projection fidelity (cosine with the exact projection)")
    cx.set_xlabel("final gradient alignment with backprop (cosine)")
    ax.legend(fontsize=7, loc="lower right")
    fig.suptitle(
        "DFA on digits, Aurora-class device varied one figure at a time "
        "(mean ± s.e. over 8 seeds; ▼ = below the axis)",
        fontsize=10,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    sys.exit(main())
