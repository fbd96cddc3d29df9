"""Sweep files: a base training config, seeds, and a grid and/or a list of points (TOML).

A sweep file::

    name = "adc-bits"                      # optional (default: the file's stem)
    description = "ADC resolution of the camera"
    seeds = 3                              # 0, 1, 2 — or an explicit list: [0, 1, 2]
    reference = "ideal device"             # optional: the label of the point others compare to

    [base]                                 # TrainConfig fields, as in `optdfa train --config`
    dataset = "digits"
    backend = "sim-opu"
    backend_options = { profile = "lighton-aurora" }

    [grid]                                 # every combination of the axes
    "opu.adc_bits" = [1, 2, 4, 8, 12]

    [[points]]                             # extra points, each a table of axis keys
    label = "ideal device"
    profile = "ideal"

Axis keys (grid and points):

- a :class:`~optdfa.config.TrainConfig` field: ``lr``, ``hidden``, ``dataset``, ``backend`` …
  (not ``seed``: seeds come from ``seeds``);
- ``opu.FIELD`` — a hardware-profile field (``optdfa.optics.profile.FIELDS`` is the single source
  of truth), stored in ``backend_options.overrides``;
- ``profile`` — the hardware profile (name or path), ``backend_options.profile``;
- ``backend_options.NAME`` — any other option of the feedback backend.

Every key and every value is validated before anything runs; the first problem raises one
:class:`~optdfa.errors.OptdfaError` naming the file, the axis and the key. A point whose backend
takes no hardware profile (e.g. ``backend = "digital"`` as a reference) drops the base's
``backend_options``; setting ``opu.*`` or ``profile`` on such a point is an error.

Each resolved run (config + seed) has a stable id: a hash of its canonical JSON (``data_dir``
left out, so the same sweep on another machine finds the same ids).
"""

from __future__ import annotations

import copy
import hashlib
import itertools
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from optdfa.config import TrainConfig, load_toml
from optdfa.errors import OptdfaError

#: top-level keys of a sweep file
SWEEP_KEYS = ("name", "description", "seeds", "reference", "plot", "base", "grid", "points")
#: keys of a point table that are not axes
POINT_META = ("label",)
OPU_PREFIX = "opu."
OPTION_PREFIX = "backend_options."
#: TrainConfig fields a sweep axis may not set
_NOT_AXES = {
    "seed": "seeds come from the top-level 'seeds'",
    "backend_options": "use opu.FIELD, profile or backend_options.NAME",
}
#: TrainConfig fields left out of a point's id (they do not change the result)
_ID_EXCLUDED = ("data_dir",)


@dataclass(frozen=True)
class Point:
    """One run of a sweep: the axis values that define it, its seed and its resolved config."""

    params: dict[str, Any]
    seed: int
    config: TrainConfig
    label: str | None = None
    #: index of the grid/points entry (stable order for tables and plots)
    index: int = 0

    @property
    def point_id(self) -> str:
        return config_id(self.config)

    @property
    def setting_id(self) -> str:
        """The id of the point's setting, seed left out (groups the seeds of one setting)."""
        return config_id(self.config.replace(seed=0))


@dataclass
class SweepSpec:
    """A validated sweep file (see the module docstring)."""

    name: str
    description: str
    seeds: list[int]
    base: dict[str, Any]
    grid: dict[str, list[Any]]
    points: list[dict[str, Any]]
    reference: str | None = None
    #: swept keys that get a figure (default: the grid's axes, else every key points vary)
    plot: list[str] | None = None
    source: str = "sweep"
    #: settings in order (grid combinations first, then the listed points), before seeds
    settings: list[tuple[dict[str, Any], str | None]] = field(default_factory=list)

    @property
    def plot_axes(self) -> list[str]:
        """Keys that get a figure: ``plot`` if given, else the grid's axes, else the points' keys."""
        if self.plot is not None:
            return list(self.plot)
        return list(self.grid) or self.axes

    @property
    def axes(self) -> list[str]:
        """Swept keys, in declaration order (grid axes, then keys that only points set)."""
        keys = list(self.grid)
        for p in self.points:
            keys += [k for k in p if k not in POINT_META and k not in keys]
        return keys

    def expand(self) -> list[Point]:
        """Every run: each setting × each seed (validated configs)."""
        out = []
        for index, (params, label) in enumerate(self.settings):
            for seed in self.seeds:
                config = resolve_config(self.base, params, seed, self.source, label)
                out.append(Point(dict(params), seed, config, label, index))
        return out

    def first_seeds(self, count: int) -> SweepSpec:
        """The same sweep on the first ``count`` of its seeds (a quicker, smaller study)."""
        if not 1 <= count <= len(self.seeds):
            raise OptdfaError(
                f"{self.source}: --seeds must be between 1 and the file's {len(self.seeds)} "
                f"seeds, got {count}"
            )
        spec = copy.deepcopy(self)
        spec.seeds = spec.seeds[:count]
        return spec

    def with_base(self, **changes: Any) -> SweepSpec:
        """The same sweep with base fields changed (e.g. ``dataset="mnist"``), re-validated."""
        clash = sorted(k for k in changes if k in self.axes)
        if clash:
            raise OptdfaError(
                f"{self.source}: cannot override {', '.join(clash)} for the whole sweep: "
                f"the sweep varies it"
            )
        spec = copy.deepcopy(self)
        spec.base.update(changes)
        spec.expand()  # validates every point with the new base
        return spec


# -- canonical ids ------------------------------------------------------------------------------
def canonical(value: Any) -> Any:
    """JSON-able canonical form (floats stay floats: 1 and 1.0 differ only where types do)."""
    if isinstance(value, dict):
        return {str(k): canonical(v) for k, v in sorted(value.items())}
    if isinstance(value, (list, tuple)):
        return [canonical(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return repr(value)
    return value


def config_id(config: TrainConfig) -> str:
    """A 16-hex-digit id of a resolved config (``data_dir`` excluded)."""
    data = {k: v for k, v in config.to_dict().items() if k not in _ID_EXCLUDED}
    text = json.dumps(canonical(data), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


# -- loading ------------------------------------------------------------------------------------
def load_sweep(path: str | Path) -> SweepSpec:
    """Read and fully validate a sweep file (every point resolved before anything runs)."""
    path = Path(path)
    data = load_toml(path)
    return sweep_from_dict(data, source=str(path), default_name=path.stem)


def sweep_from_dict(
    data: dict[str, Any], *, source: str = "sweep", default_name: str = "sweep"
) -> SweepSpec:
    unknown = sorted(set(data) - set(SWEEP_KEYS))
    if unknown:
        raise OptdfaError(
            f"{source}: unknown key(s) {', '.join(unknown)}; a sweep file has {', '.join(SWEEP_KEYS)}"
        )
    name = data.get("name", default_name)
    description = data.get("description", "")
    for key, value in (("name", name), ("description", description)):
        if not isinstance(value, str):
            raise OptdfaError(f"{source}: '{key}' must be a string, got {value!r}")
    if not name.strip():
        raise OptdfaError(f"{source}: 'name' must not be empty")
    seeds = _seeds(data.get("seeds", 1), source)
    base = data.get("base", {})
    if not isinstance(base, dict):
        raise OptdfaError(f"{source}: [base] must be a table of training-config fields")
    if "seed" in base:
        raise OptdfaError(f"{source}: [base] sets 'seed'; give the seeds as the top-level 'seeds'")
    try:
        TrainConfig.from_dict(base, source=f"{source} [base]").validate()
    except OptdfaError as exc:
        raise OptdfaError(_prefixed(exc, f"{source} [base]")) from None
    grid = data.get("grid", {})
    if not isinstance(grid, dict):
        raise OptdfaError(f"{source}: [grid] must be a table of axis = [values]")
    for key, values in grid.items():
        if not isinstance(values, list):
            raise OptdfaError(
                f"{source}: grid axis {key!r} must be a list of values, got {values!r}"
            )
        if not values:
            raise OptdfaError(f"{source}: grid axis {key!r} has no values")
        _check_key(key, source, "grid")
        if len({json.dumps(canonical(v), sort_keys=True) for v in values}) != len(values):
            raise OptdfaError(f"{source}: grid axis {key!r} lists a value twice: {values!r}")
    points = data.get("points", [])
    if not isinstance(points, list) or not all(isinstance(p, dict) for p in points):
        raise OptdfaError(f"{source}: 'points' must be an array of tables ([[points]])")
    for i, p in enumerate(points):
        for key in p:
            if key not in POINT_META:
                _check_key(key, source, f"points[{i}]")
        if "label" in p and not isinstance(p["label"], str):
            raise OptdfaError(f"{source}: points[{i}] label must be a string, got {p['label']!r}")
    settings: list[tuple[dict[str, Any], str | None]] = []
    if grid:
        keys = list(grid)
        for combo in itertools.product(*(grid[k] for k in keys)):
            settings.append((dict(zip(keys, combo, strict=True)), None))
    for p in points:
        settings.append(({k: v for k, v in p.items() if k not in POINT_META}, p.get("label")))
    if not settings:
        raise OptdfaError(
            f"{source}: the sweep is empty: give a [grid] with at least one axis or [[points]]"
        )
    labels = [label for _, label in settings if label is not None]
    if len(set(labels)) != len(labels):
        raise OptdfaError(f"{source}: point labels must be unique, got {labels}")
    reference = data.get("reference")
    if reference is not None and reference not in labels:
        raise OptdfaError(
            f"{source}: reference {reference!r} is not the label of a point; labels: "
            f"{', '.join(labels) or 'none'}"
        )
    spec_plot = data.get("plot")
    if spec_plot is not None and (
        not isinstance(spec_plot, list) or not all(isinstance(k, str) for k in spec_plot)
    ):
        raise OptdfaError(f"{source}: 'plot' must be a list of swept keys, got {spec_plot!r}")
    spec = SweepSpec(
        name=name,
        description=description,
        seeds=seeds,
        base=dict(base),
        grid={k: list(v) for k, v in grid.items()},
        points=[dict(p) for p in points],
        reference=reference,
        plot=spec_plot,
        source=source,
        settings=settings,
    )
    missing = [k for k in spec_plot or [] if k not in spec.axes]
    if missing:
        raise OptdfaError(
            f"{source}: 'plot' names {', '.join(missing)}, which the sweep does not vary; "
            f"swept keys: {', '.join(spec.axes)}"
        )
    runs = spec.expand()  # resolves and validates every point
    seen: dict[str, int] = {}
    for run in runs:
        if run.point_id in seen:
            raise OptdfaError(
                f"{source}: settings {seen[run.point_id] + 1} and {run.index + 1} resolve to the "
                f"same training run ({_describe(run.params, run.label)}); remove one"
            )
        seen[run.point_id] = run.index
    return spec


def _seeds(value: Any, source: str) -> list[int]:
    if isinstance(value, int) and not isinstance(value, bool):
        if value < 1:
            raise OptdfaError(f"{source}: 'seeds' must be a positive count or a list, got {value}")
        return list(range(value))
    if isinstance(value, list) and value:
        if not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in value):
            raise OptdfaError(f"{source}: 'seeds' must list non-negative integers, got {value!r}")
        if len(set(value)) != len(value):
            raise OptdfaError(f"{source}: 'seeds' lists a seed twice: {value!r}")
        return list(value)
    raise OptdfaError(
        f"{source}: 'seeds' must be a positive count or a non-empty list of integers, got {value!r}"
    )


def _check_key(key: str, source: str, where: str) -> None:
    """Reject a key that addresses nothing (values are checked when points are resolved)."""
    from optdfa.optics.profile import FIELDS

    if key.startswith(OPU_PREFIX):
        name = key[len(OPU_PREFIX) :]
        if name not in {f.name for f in FIELDS}:
            raise OptdfaError(
                f"{source}: {where} key {key!r}: unknown hardware-profile field {name!r}; "
                f"valid: {', '.join(OPU_PREFIX + f.name for f in FIELDS)}"
            )
        return
    if key == "profile":
        return
    if key.startswith(OPTION_PREFIX):
        if not key[len(OPTION_PREFIX) :] or key[len(OPTION_PREFIX) :] in ("profile", "overrides"):
            raise OptdfaError(
                f"{source}: {where} key {key!r}: write 'profile' or 'opu.FIELD' for the "
                f"hardware profile"
            )
        return
    if key in _NOT_AXES:
        raise OptdfaError(f"{source}: {where} key {key!r} cannot be swept: {_NOT_AXES[key]}")
    fields = [f for f in TrainConfig.__dataclass_fields__ if f not in _NOT_AXES]
    if key not in fields:
        raise OptdfaError(
            f"{source}: {where}: unknown key {key!r}; a key is a training field "
            f"({', '.join(fields)}), opu.FIELD (a hardware-profile field), profile, or "
            f"backend_options.NAME"
        )


def _describe(params: dict[str, Any], label: str | None) -> str:
    text = ", ".join(f"{k}={v!r}" for k, v in params.items())
    return f"{label}: {text}" if label else text


def _prefixed(exc: OptdfaError, where: str) -> str:
    text = str(exc)
    return text if text.startswith(where) else f"{where}: {text}"


def _uses_profile(backend: str) -> bool:
    from optdfa.backends import backend_class

    return bool(getattr(backend_class(backend), "uses_opu_profile", False))


def resolve_config(
    base: dict[str, Any],
    params: dict[str, Any],
    seed: int,
    source: str = "sweep",
    label: str | None = None,
) -> TrainConfig:
    """The TrainConfig of one point (validated; profile overrides checked against the profile)."""
    where = f"{source}: point ({_describe(params, label)})"
    data = copy.deepcopy(base)
    options = data.get("backend_options", {})
    options = copy.deepcopy(options) if isinstance(options, dict) else options
    profile_keys = []
    for key, value in params.items():
        if key.startswith(OPU_PREFIX):
            overrides = dict(options.get("overrides", {}) or {})
            overrides[key[len(OPU_PREFIX) :]] = value
            options["overrides"] = overrides
            profile_keys.append(key)
        elif key == "profile":
            options["profile"] = value
            profile_keys.append(key)
        elif key.startswith(OPTION_PREFIX):
            options[key[len(OPTION_PREFIX) :]] = value
        else:
            data[key] = value
    data["seed"] = seed
    try:
        backend = data.get("backend", TrainConfig.backend)
        method = data.get("method", TrainConfig.method)
        if isinstance(backend, str) and isinstance(method, str):
            from optdfa.backends import available_backends

            if backend in available_backends() and not (method == "dfa" and _uses_profile(backend)):
                if profile_keys:
                    raise OptdfaError(
                        f"{', '.join(profile_keys)} set for a run with method {method!r} and "
                        f"backend {backend!r}, which has no hardware profile"
                    )
                if params.get("backend") is not None or params.get("method") is not None:
                    options = {}  # a digital/bp/fa reference point: the base's options do not apply
        if options:
            data["backend_options"] = options
        else:
            data.pop("backend_options", None)
        config = TrainConfig.from_dict(data, source="config")
        config.validate()
        if config.method == "dfa" and _uses_profile(config.backend):
            from optdfa.optics.profile import load_profile

            opts = config.backend_options
            overrides = opts.get("overrides", {}) or {}
            if not isinstance(overrides, dict):
                raise OptdfaError(f"backend option overrides must be a table, got {overrides!r}")
            load_profile(opts.get("profile", "lighton-aurora"), overrides)
    except OptdfaError as exc:
        raise OptdfaError(f"{where}: {exc}") from None
    return config
