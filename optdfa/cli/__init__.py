"""Command-line interface (``optdfa …``)."""
