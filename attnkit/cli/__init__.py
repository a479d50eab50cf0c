"""Command line: commands, not modes. Each command parses its options (shared groups from :mod:`.options`,
Polygraphy's ``tools/args`` pattern) and calls one library function.

Every error reaches the user as one line on stderr with a non-zero exit code and no traceback
(``ATTNKIT_DEBUG=1`` shows it). Heavy libraries are imported inside commands, so ``--help`` is fast.
"""

from __future__ import annotations

# isort: off
from .group import cli
from . import commands, bench  # noqa: E402,F401  (each module adds its commands to `cli`)
from .serve import serve  # noqa: E402

# isort: on
cli.add_command(serve)


def main() -> None:
    cli(prog_name="attnkit")


__all__ = ["cli", "main"]
