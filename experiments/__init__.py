"""Reproducible studies built on optdfa (run from the repository root with ``python -m``)."""
