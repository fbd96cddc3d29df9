"""Hardware profiles: every number that defines a simulated OPU, with units, in one dataclass.

A profile is a TOML file (``hardware/profiles/NAME.toml``) with the sections ``[dmd]``,
``[medium]``, ``[camera]``, ``[cost]`` and ``[encoding]``; every field of :class:`OpuProfile`
must appear exactly once, in its section (see :data:`FIELDS`), and nothing else may. Fields have
unique names, so a profile is overridden field by field (``--opu adc_bits=6``)::

    profile = load_profile("lighton-aurora", {"adc_bits": 6, "encoder": "bitplane:3"})

Validation is strict and names the offending field: a missing or unknown field, a value of the
wrong type, a negative noise figure, ``adc_bits`` outside 1–16, a non-positive full well, …
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import tomllib

from optdfa.errors import OptdfaError

#: where ``load_profile("NAME")`` looks for ``NAME.toml`` (``OPTDFA_PROFILE_DIR`` comes first)
PROFILE_DIR = Path(__file__).resolve().parents[2] / "hardware" / "profiles"

DECODERS = ("reference", "ideal-linear")
NORMALISATIONS = ("pixel", "global")


@dataclass(frozen=True)
class FieldSpec:
    """One profile field: TOML section, Python type, unit and meaning."""

    name: str
    section: str
    kind: type
    unit: str
    doc: str


def _f(name: str, section: str, kind: type, unit: str, doc: str) -> FieldSpec:
    return FieldSpec(name, section, kind, unit, doc)


#: every profile field, in TOML order (the single source of truth for loading and docs)
FIELDS: tuple[FieldSpec, ...] = (
    # -- input: the digital micromirror device ------------------------------------------------
    _f("dmd_rows", "dmd", int, "mirrors", "DMD height"),
    _f("dmd_cols", "dmd", int, "mirrors", "DMD width"),
    # -- scattering medium ------------------------------------------------------------------------
    _f(
        "drift_per_frame",
        "medium",
        float,
        "1/frame",
        "decorrelation of the transmission matrix per frame: corr(H_t, H_t+1) = 1 - drift (0 = static)",
    ),
    _f(
        "power_jitter",
        "medium",
        float,
        "relative rms",
        "frame-to-frame laser power fluctuation; multiplies every pixel of a frame by 1 + jitter*N(0,1)",
    ),
    # -- camera -----------------------------------------------------------------------------------
    _f("camera_rows", "camera", int, "pixels", "largest readable region of interest, height"),
    _f("camera_cols", "camera", int, "pixels", "largest readable region of interest, width"),
    _f("exposure_s", "camera", float, "s", "exposure time of one frame"),
    _f(
        "quantum_efficiency",
        "camera",
        float,
        "e-/photon",
        "photo-electrons per incident photon, in (0, 1]",
    ),
    _f(
        "photon_rate",
        "camera",
        float,
        "photons/s",
        "mean photon rate reaching one camera pixel per DMD mirror switched on (speckle average)",
    ),
    _f("shot_noise", "camera", bool, "switch", "Poisson photon (and dark-current) shot noise"),
    _f(
        "poisson_exact_below_e",
        "camera",
        float,
        "e-",
        "shot noise is drawn exactly (Poisson) below this mean, as N(mu, mu) above (inf = always exact)",
    ),
    _f("dark_current_e_per_s", "camera", float, "e-/s", "dark current per pixel (0 = off)"),
    _f("read_noise_e", "camera", float, "e- rms", "read noise per pixel and frame (0 = off)"),
    _f("saturation", "camera", bool, "switch", "clip the collected charge at the full well"),
    _f("full_well_e", "camera", float, "e-", "full-well capacity (saturation charge) of a pixel"),
    _f("adc", "camera", bool, "switch", "digitise to integer DN (off: the output is electrons)"),
    _f("adc_bits", "camera", int, "bits", "ADC resolution, 1-16; codes 0 .. 2^bits - 1"),
    _f("gain_e_per_dn", "camera", float, "e-/DN", "conversion gain: electrons per digital number"),
    _f("offset_dn", "camera", float, "DN", "black level added before quantisation"),
    # -- cost -------------------------------------------------------------------------------------
    _f("frame_time_s", "cost", float, "s", "device time per frame (sets device_seconds)"),
    _f(
        "power_w",
        "cost",
        float,
        "W",
        "electrical power of the device while it runs (sets energy_joules)",
    ),
    # -- encoding the error, recovering a linear projection -------------------------------------
    _f(
        "encoder",
        "encoding",
        str,
        "spec",
        "error -> binary frames: stochastic | bitplane:K | ternary[:THRESHOLD] | bitplane-nearest:K",
    ),
    _f(
        "decoder",
        "encoding",
        str,
        "name",
        "intensities -> linear projection: reference | ideal-linear",
    ),
    _f(
        "reference_fraction",
        "encoding",
        float,
        "fraction",
        "share of the DMD mirrors in the always-on reference block (the reference power)",
    ),
    _f(
        "reference_normalisation",
        "encoding",
        str,
        "name",
        "pixel: divide each pixel by its calibrated reference amplitude; global: by the rms amplitude",
    ),
    _f(
        "calibration_frames",
        "encoding",
        int,
        "frames",
        "repeats of the reference and dark frames at calibration",
    ),
    _f(
        "recalibrate_every_frames",
        "encoding",
        int,
        "frames",
        "calibrate the reference again once this many frames were shown since the last time (0 = once; 1 = before every projection)",
    ),
    _f(
        "deduplicate_frames",
        "encoding",
        bool,
        "switch",
        "show each distinct frame of a projection once and reuse its measurement",
    ),
)

SECTIONS = ("dmd", "medium", "camera", "cost", "encoding")
_SPECS = {f.name: f for f in FIELDS}


@dataclass(frozen=True)
class OpuProfile:
    """A validated hardware profile (see :data:`FIELDS` for units); build with :func:`load_profile`."""

    dmd_rows: int
    dmd_cols: int
    drift_per_frame: float
    power_jitter: float
    camera_rows: int
    camera_cols: int
    exposure_s: float
    quantum_efficiency: float
    photon_rate: float
    shot_noise: bool
    poisson_exact_below_e: float
    dark_current_e_per_s: float
    read_noise_e: float
    saturation: bool
    full_well_e: float
    adc: bool
    adc_bits: int
    gain_e_per_dn: float
    offset_dn: float
    frame_time_s: float
    power_w: float
    encoder: str
    decoder: str
    reference_fraction: float
    reference_normalisation: str
    calibration_frames: int
    recalibrate_every_frames: int
    deduplicate_frames: bool
    #: profile name (file stem) and where it came from; not profile fields
    name: str = dataclasses.field(default="custom", compare=False)
    source: str = dataclasses.field(default="", compare=False)

    @property
    def dmd_mirrors(self) -> int:
        return self.dmd_rows * self.dmd_cols

    @property
    def camera_pixels(self) -> int:
        return self.camera_rows * self.camera_cols

    @property
    def max_dn(self) -> int:
        """Largest ADC code, ``2**adc_bits - 1``."""
        return 2**self.adc_bits - 1

    def fields(self) -> dict[str, Any]:
        """The profile fields as a flat dict (JSON/TOML-able; ``inf`` stays a float)."""
        return {f.name: getattr(self, f.name) for f in FIELDS}

    def to_toml_dict(self) -> dict[str, dict[str, Any]]:
        """Fields grouped by section, as in a profile file."""
        out: dict[str, dict[str, Any]] = {s: {} for s in SECTIONS}
        for f in FIELDS:
            out[f.section][f.name] = getattr(self, f.name)
        return out

    def replace(self, overrides: Mapping[str, Any], *, source: str = "override") -> OpuProfile:
        """A copy with some fields changed (validated like a file)."""
        values = self.fields()
        for key, value in overrides.items():
            if key not in _SPECS:
                raise OptdfaError(
                    f"{source}: unknown profile field {key!r}; valid fields: {', '.join(_SPECS)}"
                )
            values[key] = value
        return _build(values, name=self.name, source=self.source or source, where=source)


# -- loading ------------------------------------------------------------------------------------
def profile_dirs() -> list[Path]:
    """Folders searched for named profiles: ``$OPTDFA_PROFILE_DIR`` (if set), then :data:`PROFILE_DIR`."""
    dirs = []
    env = os.environ.get("OPTDFA_PROFILE_DIR")
    if env:
        dirs.append(Path(env))
    dirs.append(PROFILE_DIR)
    return dirs


def available_profiles() -> list[str]:
    """Names usable with :func:`load_profile` (``*.toml`` stems in :func:`profile_dirs`)."""
    names: set[str] = set()
    for d in profile_dirs():
        if d.is_dir():
            names.update(p.stem for p in d.glob("*.toml"))
    return sorted(names)


def _is_path(name: str) -> bool:
    return name.endswith(".toml") or os.sep in name or "/" in name


def resolve_profile_path(name_or_path: str | os.PathLike[str]) -> Path:
    """The TOML file behind a profile name or path (clear error listing the names if unknown)."""
    text = os.fspath(name_or_path)
    if _is_path(text):
        path = Path(text).expanduser()
        if not path.is_file():
            raise OptdfaError(f"profile file {path} does not exist")
        return path
    for d in profile_dirs():
        path = d / f"{text}.toml"
        if path.is_file():
            return path
    names = available_profiles()
    raise OptdfaError(
        f"unknown profile {text!r}; available profiles: {', '.join(names) or 'none found'} "
        f"(or give the path of a .toml file)"
    )


def load_profile(
    name_or_path: str | os.PathLike[str] | OpuProfile = "lighton-aurora",
    overrides: Mapping[str, Any] | None = None,
) -> OpuProfile:
    """Load a profile by name (see :func:`available_profiles`) or TOML path, then apply overrides."""
    if isinstance(name_or_path, OpuProfile):
        profile = name_or_path
    else:
        path = resolve_profile_path(name_or_path)
        try:
            with path.open("rb") as f:
                data = tomllib.load(f)
        except tomllib.TOMLDecodeError as exc:
            raise OptdfaError(f"profile {path} is not valid TOML: {exc}") from None
        except OSError as exc:
            raise OptdfaError(f"cannot read profile {path}: {exc}") from None
        profile = profile_from_dict(data, name=path.stem, source=str(path))
    if overrides:
        profile = profile.replace(dict(overrides), source="profile override")
    return profile


def profile_from_dict(
    data: Mapping[str, Any], *, name: str = "custom", source: str = "profile"
) -> OpuProfile:
    """Build a profile from the sectioned dict of a TOML file (strict: see the module docstring)."""
    values: dict[str, Any] = {}
    for key, table in data.items():
        if key == "description" and isinstance(table, str):
            continue
        if key not in SECTIONS:
            hint = f" (field {key!r} belongs in [{_SPECS[key].section}])" if key in _SPECS else ""
            raise OptdfaError(
                f"{source}: unknown section {key!r}{hint}; sections: {', '.join(SECTIONS)}"
            )
        if not isinstance(table, dict):
            raise OptdfaError(f"{source}: [{key}] must be a table of fields")
        for field_name, value in table.items():
            spec = _SPECS.get(field_name)
            if spec is None:
                raise OptdfaError(
                    f"{source}: unknown field {field_name!r} in [{key}]; valid fields there: "
                    f"{', '.join(f.name for f in FIELDS if f.section == key)}"
                )
            if spec.section != key:
                raise OptdfaError(
                    f"{source}: field {field_name!r} belongs in [{spec.section}], not [{key}]"
                )
            values[field_name] = value
    missing = [f"{f.name} ([{f.section}])" for f in FIELDS if f.name not in values]
    if missing:
        raise OptdfaError(f"{source}: missing field(s) {', '.join(missing)}")
    return _build(values, name=name, source=source, where=source)


# -- validation ---------------------------------------------------------------------------------
def _coerce(spec: FieldSpec, value: Any, where: str) -> Any:
    kind = spec.kind
    if kind is bool:
        ok = isinstance(value, bool)
    elif kind is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif kind is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    else:
        ok = isinstance(value, str)
    if not ok:
        expected = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}[
            kind
        ]
        raise OptdfaError(f"{where}: field {spec.name!r} must be {expected}, got {value!r}")
    if kind is float:
        value = float(value)
        if math.isnan(value):
            raise OptdfaError(f"{where}: field {spec.name!r} is NaN")
        if math.isinf(value) and spec.name != "poisson_exact_below_e":
            raise OptdfaError(f"{where}: field {spec.name!r} must be finite, got {value}")
    return value


def _rule(check: Callable[[Any], bool], message: str) -> tuple[Callable[[Any], bool], str]:
    return check, message


_COUNT = _rule(lambda v: v >= 1, "a positive integer")
_POSITIVE = _rule(lambda v: v > 0, "positive")
_NON_NEGATIVE = _rule(lambda v: v >= 0, "non-negative")
_NOISE_FIGURE = _rule(lambda v: v >= 0, "non-negative (a noise figure cannot be negative)")

#: per-field range checks: (predicate, what the value must be)
_RANGES: dict[str, tuple[Callable[[Any], bool], str]] = {
    "dmd_rows": _COUNT,
    "dmd_cols": _COUNT,
    "drift_per_frame": _rule(
        lambda v: 0 <= v <= 1, "in [0, 1] (a noise figure cannot be negative)"
    ),
    "power_jitter": _NOISE_FIGURE,
    "camera_rows": _COUNT,
    "camera_cols": _COUNT,
    "exposure_s": _POSITIVE,
    "quantum_efficiency": _rule(lambda v: 0 < v <= 1, "in (0, 1]"),
    "photon_rate": _POSITIVE,
    "poisson_exact_below_e": _NON_NEGATIVE,
    "dark_current_e_per_s": _NOISE_FIGURE,
    "read_noise_e": _NOISE_FIGURE,
    "full_well_e": _POSITIVE,
    "adc_bits": _rule(lambda v: 1 <= v <= 16, "between 1 and 16"),
    "gain_e_per_dn": _POSITIVE,
    "offset_dn": _NON_NEGATIVE,
    "frame_time_s": _POSITIVE,
    "power_w": _NON_NEGATIVE,
    "decoder": _rule(lambda v: v in DECODERS, f"one of {', '.join(DECODERS)}"),
    "reference_fraction": _rule(lambda v: 0 < v < 1, "strictly between 0 and 1"),
    "reference_normalisation": _rule(
        lambda v: v in NORMALISATIONS, f"one of {', '.join(NORMALISATIONS)}"
    ),
    "calibration_frames": _COUNT,
    "recalibrate_every_frames": _rule(lambda v: v >= 0, "a non-negative integer"),
}


def _build(values: dict[str, Any], *, name: str, source: str, where: str) -> OpuProfile:
    from optdfa.optics.encoders import parse_encoder

    coerced = {}
    for spec in FIELDS:
        value = _coerce(spec, values[spec.name], where)
        rule = _RANGES.get(spec.name)
        if rule is not None and not rule[0](value):
            raise OptdfaError(f"{where}: field {spec.name!r} must be {rule[1]}, got {value!r}")
        coerced[spec.name] = value
    if coerced["exposure_s"] > coerced["frame_time_s"]:
        raise OptdfaError(
            f"{where}: field 'exposure_s' ({coerced['exposure_s']} s) must not exceed "
            f"'frame_time_s' ({coerced['frame_time_s']} s)"
        )
    if coerced["offset_dn"] > 2 ** coerced["adc_bits"] - 1:
        raise OptdfaError(
            f"{where}: field 'offset_dn' ({coerced['offset_dn']}) exceeds the largest ADC code "
            f"{2 ** coerced['adc_bits'] - 1} of a {coerced['adc_bits']}-bit ADC"
        )
    try:
        parse_encoder(coerced["encoder"])
    except OptdfaError as exc:
        raise OptdfaError(f"{where}: field 'encoder': {exc}") from None
    return OpuProfile(**coerced, name=name, source=source)


def profile_field_table() -> str:
    """A Markdown table of every field (name, section, unit, meaning) for the docs."""
    rows = ["| field | section | unit | meaning |", "|---|---|---|---|"]
    rows += [
        f"| `{f.name}` | `[{f.section}]` | {f.unit} | {f.doc.replace('|', chr(92) + '|')} |"
        for f in FIELDS
    ]
    return "\n".join(rows)
