"""Feedback backends, chosen by name.

Built-in backends are listed in :data:`BUILTIN_BACKENDS`; third-party packages add theirs via
the entry-point group ``optdfa.backends`` (``name = "package.module:BackendClass"``), the class
being a :class:`FeedbackBackend` subclass. Use :func:`create_backend` to build one by name.
"""

from __future__ import annotations

import importlib
from importlib.metadata import entry_points
from typing import Any

from optdfa.backends.base import (
    COUNTER_KEYS,
    FeedbackBackend,
    FeedbackBlock,
    FeedbackLayout,
    reference_block_std,
)
from optdfa.errors import OptdfaError, choice_error

ENTRY_POINT_GROUP = "optdfa.backends"

#: name -> "module:Class" of the backends shipped with optdfa (imported lazily)
BUILTIN_BACKENDS: dict[str, str] = {
    "digital": "optdfa.backends.digital:DigitalBackend",
    "sim-opu": "optdfa.backends.sim_opu:SimOpuBackend",
    "lightonml": "optdfa.backends.lightonml_backend:LightonmlBackend",
}


def _plugin_backends() -> dict[str, Any]:
    return {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)}


def available_backends() -> list[str]:
    """Names of all backends: built-in and registered through entry points."""
    return sorted(set(BUILTIN_BACKENDS) | set(_plugin_backends()))


def backend_class(name: str) -> type[FeedbackBackend]:
    """The class registered under ``name`` (built-ins first, then entry points)."""
    if name in BUILTIN_BACKENDS:
        module_name, _, attr = BUILTIN_BACKENDS[name].partition(":")
        cls = getattr(importlib.import_module(module_name), attr)
    else:
        plugins = _plugin_backends()
        if name not in plugins:
            raise choice_error("backend", name, available_backends())
        try:
            cls = plugins[name].load()
        except Exception as exc:  # a broken third-party plugin
            raise OptdfaError(
                f"backend {name!r} could not be loaded from its entry point: {exc}"
            ) from None
    if not (isinstance(cls, type) and issubclass(cls, FeedbackBackend)):
        raise OptdfaError(f"backend {name!r} does not name a FeedbackBackend subclass")
    return cls


def create_backend(name: str, **options: Any) -> FeedbackBackend:
    """Build the backend ``name`` with its options (unknown options are an error)."""
    return backend_class(name)(**options)


__all__ = [
    "BUILTIN_BACKENDS",
    "COUNTER_KEYS",
    "ENTRY_POINT_GROUP",
    "FeedbackBackend",
    "FeedbackBlock",
    "FeedbackLayout",
    "available_backends",
    "backend_class",
    "create_backend",
    "reference_block_std",
]
