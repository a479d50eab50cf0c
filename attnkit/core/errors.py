"""Typed errors. The CLI prints any `AttnkitError` as one line and exits non-zero.

Message style (house style point 5): the problem, what was given, what is valid, which flag fixes it.
"""

from __future__ import annotations

#: library parameters whose name is not their flag's (``--warmup`` is ``warmup_s``); the others are the flag
#: without dashes, ``-`` read as ``_`` (``--batch-sizes`` is ``batch_sizes``), or the argument in lower case
PARAMS = {
    "--format": "formats",
    "--import": "imports",
    "--warmup": "warmup_s",
    "--stability": "stability_pct",
    "--json": "json_out",
    "--server": "url",
    "DIR": "root",
    "MODEL_OR_DIR": "model",
    "--max-prompt-length": "prompt_length",
}


def param_of(flag: str) -> str:
    """The library parameter a CLI flag or argument sets: ``--batch-sizes`` -> ``batch_sizes``."""
    return PARAMS.get(flag) or (flag[2:].replace("-", "_") if flag.startswith("--") else flag.lower())


class AttnkitError(ValueError):
    """Base class of every error attnkit raises on purpose.

    ``str(error)`` names the library parameter (``batch_sizes: ...``), as a Python caller knows it;
    :meth:`for_cli` names the flag that sets it (``--batch-sizes: ...``), as the command line shows it.

    Args:
        message: the problem, what was given and what is valid, in one sentence.
        flag: the command-line flag or argument that fixes it (e.g. ``--opset``), if any; its parameter is
            :func:`param_of` it.
        hint: what to do, appended after the message (it may name flags: it is advice for the CLI user).
    """

    exit_code = 2

    def __init__(self, message: str, *, flag: str | None = None, hint: str | None = None):
        self.flag = flag
        self.param = param_of(flag) if flag else None
        self.message = message
        self.hint = hint
        super().__init__(self._render(self.param))

    def _render(self, name: str | None) -> str:
        return " ".join([f"{name}: {self.message}" if name else self.message] + ([self.hint] if self.hint else []))

    def for_cli(self) -> str:
        """The message as the command line shows it: naming the flag instead of the parameter."""
        return self._render(self.flag)


class ModelError(AttnkitError):
    """A model cannot be built, loaded or traced from what was given."""


class ExportError(AttnkitError):
    """An export step failed or its output directory is not usable."""


class ArtifactError(AttnkitError):
    """An export directory or artifact is missing, tampered with or inconsistent."""


class BackendError(AttnkitError):
    """A backend is unknown or cannot run here."""


class DependencyError(AttnkitError):
    """An optional dependency is missing."""

    def __init__(self, package: str, extra: str, what: str):
        super().__init__(
            f"{what} needs the Python package `{package}`, which is not installed.",
            hint=f"Install it with: pip install 'attnkit[{extra}]'",
        )


class AgreementError(AttnkitError):
    """Exported artifacts disagree with the eager reference beyond their tolerance."""

    exit_code = 1
