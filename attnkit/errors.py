"""Typed errors. The CLI prints any `AttnkitError` as one line and exits non-zero.

Message style (house style point 5): the problem, what was given, what is valid, which flag fixes it.
"""

from __future__ import annotations


class AttnkitError(ValueError):
    """Base class of every error attnkit raises on purpose.

    Args:
        message: the problem, what was given and what is valid, in one sentence.
        flag: the command-line flag or argument that fixes it (e.g. ``--opset``), if any.
        hint: what to do, appended after the message.
    """

    exit_code = 2

    def __init__(self, message: str, *, flag: str | None = None, hint: str | None = None):
        self.flag = flag
        self.hint = hint
        parts = [f"{flag}: {message}" if flag else message]
        if hint:
            parts.append(hint)
        super().__init__(" ".join(parts))


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
