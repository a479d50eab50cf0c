"""The click group with every command registered on it (imported by :func:`attnkit.cli.main` and
``attnkit.cli.cli``)."""

from __future__ import annotations

# isort: off
from .group import cli
from . import commands, bench  # noqa: E402,F401  (each module adds its commands to `cli`)
from .serve import serve, tune  # noqa: E402

# isort: on
cli.add_command(serve)
cli.add_command(tune)

__all__ = ["cli"]
