"""Outputs: the commented profile TOML, the Markdown report, the JSON record and the figure."""

from __future__ import annotations

import math
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from optdfa.characterise.result import Characterisation
from optdfa.errors import OptdfaError
from optdfa.optics.profile import FIELDS, SECTIONS, profile_from_dict

#: output files
OUTPUT_FILES = ("profile.toml", "report.md", "characterisation.json", "characterisation.png")


# -- outputs -------------------------------------------------------------------------------------------
def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        text = f"{value:.6g}"
        return text if any(c in text for c in ".einf") else text + ".0"
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'


def profile_toml(result: Characterisation) -> str:
    """The measured profile as commented TOML (each field says where its value comes from)."""
    p = result.profile
    lines = [
        f"# Profile measured by 'optdfa characterise' on: {result.target}",
        f"# {datetime.now(timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}; base profile "
        f"{result.base_profile.name} ({result.base_profile.source or 'built in'}).",
        "# Fields marked 'copied' cannot be measured by this procedure.",
        f'description = "measured: {result.target}"',
    ]
    for section in SECTIONS:
        lines += ["", f"[{section}]"]
        for f in FIELDS:
            if f.section == section:
                line = f"{f.name} = {_toml_value(getattr(p, f.name))}"
                lines.append(f"{line:<36} # {f.unit}; {result.provenance[f.name]}")
    return "\n".join(lines) + "\n"


def _fmt(v: float) -> str:
    return f"{v:.4g}"


def report_markdown(result: Characterisation) -> str:
    """The human-readable report (tables and equations)."""
    m, base, pj = result.measured, result.base_profile, result.projection
    truth = "base profile (the simulator's truth)" if result.simulated else "base profile"
    lines = [
        "# OPU characterisation",
        "",
        f"Device: **{result.target}** — {len(result.ladder)} exposures, "
        f"{result.seconds:.1f} s. Figures: `characterisation.png`; profile: `profile.toml`.",
        "",
        "## Camera",
        "",
        f"| quantity | measured | {truth} | difference |",
        "|---|---|---|---|",
    ]

    def row(label: str, value: float, ref: float | None, se: float | None = None) -> None:
        val = _fmt(value) + (f" ± {_fmt(se)}" if se is not None and math.isfinite(se) else "")
        if ref is None:
            lines.append(f"| {label} | {val} | — | — |")
        else:
            diff = f"{100 * (value / ref - 1):+.2f} %" if ref else "—"
            lines.append(f"| {label} | {val} | {_fmt(ref)} | {diff} |")

    row("gain (e⁻/DN)", m["gain_e_per_dn"], base.gain_e_per_dn, m["gain_se_e_per_dn"])
    row("read noise (e⁻ rms)", m["read_noise_e"], base.read_noise_e, m["read_noise_se_e"])
    row("full well (e⁻)", m["full_well_e"], base.full_well_e)
    row("black level (DN)", m["offset_dn"], base.offset_dn)
    row(
        "photon rate × QE (e⁻/s per pixel per mirror)",
        result.profile.photon_rate * result.profile.quantum_efficiency,
        base.photon_rate * base.quantum_efficiency,
    )
    row("laser power jitter (rms)", m["power_jitter"], base.power_jitter, m["power_jitter_se"])
    row("drift per frame", m["drift_per_frame"], base.drift_per_frame, m["drift_se"])
    lines += [
        "",
        f"Saturation at {_fmt(m['saturation_dn'])} DN"
        + (
            " — the ADC's top code: the full well is where the ADC clips"
            if m["adc_limited"]
            else ""
        )
        + f"; {100 * m['saturated_fraction']:.1f} % of the pixels saturated at the longest "
        f"exposure. Largest code {int(m['max_code'])} → {result.profile.adc_bits}-bit ADC. "
        f"Linearity error {100 * m['linearity_error']:.2f} % (largest relative deviation of the "
        f"mean signal from S = k·t). Dark current "
        + (
            f"{_fmt(m['dark_current_e_per_s'])} e⁻/s."
            if m["dark_current_detected"]
            else "below the resolution of this run (copied)."
        ),
        "",
        "## Exposure ladder",
        "",
        "| exposure (µs) | mean signal (DN) | saturated | pixels in PTC | frame power rms |",
        "|---|---|---|---|---|",
    ]
    for r in result.ladder:
        lines.append(
            f"| {r['exposure_s'] * 1e6:.4g} | {r['mean_signal_dn']:.4g} | "
            f"{100 * r['saturated_fraction']:.1f} % | {r['pixels_used']} | "
            f"{r['frame_power_rms']:.4f} |"
        )
    lines += [
        "",
        "## Recovered projection (reference decoder, nominal exposure)",
        "",
        f"- superposition error ‖M̃(a+b) − M̃a − M̃b‖/‖M̃(a+b)‖: {pj['superposition_error']:.4f}",
        f"- repeatability (noise) ‖M̃x − M̃'x‖/(√2‖M̃x‖): {pj['repeatability_error']:.4f}",
    ]
    if "error_vs_exact" in pj:
        lines.append(
            f"- error vs the exact map ‖M̃x − M̃_exact x‖/‖M̃_exact x‖: {pj['error_vs_exact']:.4f} "
            f"(correlation {pj['correlation_vs_exact']:.4f})"
        )
    rate = f"{pj['frame_rate_hz']:.4g} frames/s over {pj['frames_shown']} frames"
    if result.simulated:
        rate += (
            f" of simulation (a property of this computer; the profile models "
            f"{1 / base.frame_time_s:.4g} frames/s)"
        )
    lines += [
        f"- achieved frame rate: {rate}",
        "",
        "## Method",
        "",
        "Photon transfer per pixel over repeated frames: frame power normalised (jitter), white "
        "variance σ² = 2V₁ − V₂ from the lag variances V_k = ½⟨(y_{f+k} − y_f)²⟩ (drift cancels); "
        "binned by mean signal m and fitted with Q(m/g + σ_r²/g²), Q(x) = x + 1/12 − "
        "Σ_k e^{−4π²k²x}/(2π²k²) the variance of rounded Gaussian samples "
        f"({m['ptc_points']} pixel points from {_fmt(m['ptc_lower_dn'])} DN). Read noise and "
        "black level: maximum likelihood of the raw codes of the dark and low-signal series "
        "(μ = a_p·t, DN = round((μ + ε)/g + o), ε ~ N(0, μ + σ_r² + (jμ)²)). Full well: "
        "g·(saturation level − o). Details: docs/lightonml.md.",
        "",
        "## Where each profile field comes from",
        "",
        "| field | value | source |",
        "|---|---|---|",
    ]
    for f in FIELDS:
        lines.append(
            f"| `{f.name}` | {_toml_value(getattr(result.profile, f.name))} | "
            f"{result.provenance[f.name]} |"
        )
    return "\n".join(lines) + "\n"


def plot_characterisation(result: Characterisation, path: Path) -> None:
    """Photon-transfer curve, linearity and projection scatter in one PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from optdfa.outputs import atomic_savefig

    m = result.measured
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.4))
    ax = axes[0]
    mean = np.asarray(result.ptc["mean"])
    var = np.asarray(result.ptc["variance"])
    edges = np.linspace(0, max(float(mean.max()), 1e-9), 41)
    idx = np.digitize(mean, edges)
    bx = [mean[idx == i].mean() for i in range(1, len(edges)) if (idx == i).sum() >= 5]
    by = [var[idx == i].mean() for i in range(1, len(edges)) if (idx == i).sum() >= 5]
    ax.plot(
        mean[:: max(1, mean.size // 3000)],
        var[:: max(1, mean.size // 3000)],
        ".",
        ms=1,
        alpha=0.3,
        color="0.6",
        label="pixels",
    )
    ax.plot(bx, by, "o", ms=4, label="binned")
    xs = np.linspace(0, result.ptc["fit_to"], 50)
    ax.plot(
        xs,
        xs / m["gain_e_per_dn"] + m["ptc_intercept_dn2"],
        "-",
        label=(f"fit: g = {m['gain_e_per_dn']:.4g} e⁻/DN"),
    )
    ax.axvline(result.ptc["fit_from"], ls=":", color="k", lw=0.8)
    ax.axvline(
        m["saturation_dn"] - m["offset_dn"],
        ls="--",
        color="r",
        lw=0.8,
        label=f"saturation ({m['full_well_e']:.4g} e⁻)",
    )
    ax.set(
        xlabel="mean signal (DN above black)",
        ylabel="temporal variance − 1/12 (DN²)",
        title="photon transfer",
    )
    ax.legend(fontsize=8)
    ax = axes[1]
    t = np.asarray(result.linearity["exposure_s"]) * 1e6
    s = np.asarray(result.linearity["signal_dn"])
    used = np.asarray(result.linearity["used"], dtype=bool)
    ax.loglog(t[used], s[used], "o", label="never-saturated pixels (fitted)")
    ax.loglog(
        t[~used], np.maximum(s[~used], 1e-3), "o", mfc="none", label="below 1 DN (not fitted)"
    )
    ax.loglog(t, m["linearity_slope_dn_per_s"] * t * 1e-6, "-", label="S = k·t")
    ax.set(
        xlabel="exposure (µs)",
        ylabel="mean signal (DN)",
        title=f"linearity (error {100 * m['linearity_error']:.2f} %)",
    )
    ax.legend(fontsize=8)
    ax = axes[2]
    u, w = result.projection["_scatter"]
    ax.plot(u, w, ".", ms=2, alpha=0.4)
    lim = float(np.abs(u).max()) if len(u) else 1.0
    ax.plot([-lim, lim], [-lim, lim], "k-", lw=0.8)
    if "error_vs_exact" in result.projection:
        ax.set(
            xlabel="exact M̃x",
            ylabel="recovered M̃x",
            title=f"projection (error {result.projection['error_vs_exact']:.3f})",
        )
    else:
        ax.set(
            xlabel="M̃x",
            ylabel="M̃a + M̃b",
            title=f"superposition (error {result.projection['superposition_error']:.3f})",
        )
    fig.suptitle(result.target)
    fig.tight_layout()
    atomic_savefig(path, fig, dpi=110)
    plt.close(fig)


def _json_ready(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _json_ready(v) for k, v in obj.items() if not str(k).startswith("_")}
    if isinstance(obj, (list, tuple)):
        return [_json_ready(v) for v in obj]
    if isinstance(obj, (np.floating, np.integer, np.bool_)):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def write_characterisation(
    result: Characterisation, out_dir: str | Path, *, overwrite: bool = False
) -> Path:
    """Write the four output files (atomically, after checking the profile loads back)."""
    import tomllib

    from optdfa.outputs import atomic_write_json, atomic_write_text, ensure_writable_dir

    out = Path(out_dir).expanduser()
    existing = [f for f in OUTPUT_FILES if (out / f).exists()]
    if existing and not overwrite:
        raise OptdfaError(
            f"{out} already holds a characterisation ({', '.join(existing)}); pass --overwrite "
            f"or choose another --out"
        )
    text = profile_toml(result)
    reloaded = profile_from_dict(tomllib.loads(text), name=result.profile.name)
    if reloaded != result.profile:
        raise OptdfaError("internal error: the written profile does not load back identically")
    report = report_markdown(result)
    payload = _json_ready(result.to_json())
    out, _ = ensure_writable_dir(out)
    plot_characterisation(result, out / "characterisation.png")
    atomic_write_json(out / "characterisation.json", payload)
    atomic_write_text(out / "report.md", report)
    atomic_write_text(out / "profile.toml", text)
    return out
