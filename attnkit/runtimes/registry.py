"""The backend registry: the one place that knows every backend, the artifact format it reads, the
precisions it runs, whether verify and bench use it by default, and what the machine needs for it.

Runner modules register themselves with ``@register`` (from :mod:`.base`); this module imports them
all, so ``base`` never imports a runner and there is no import circle. A new backend is one module
plus its import below.
"""

from __future__ import annotations

from ..errors import BackendError
from ..exporters.manifest import ArtifactRecord
from ..targets import BF16_REQUIREMENT, affects_answers, mismatch

# isort: off
# Each module registers its runners; the import order is the registry's order (verify's and bench's rows).
from . import keras_runner, tf_runners, onnxruntime, tensorrt  # noqa: F401

# isort: on
from .base import RUNNERS, Runner, Source

__all__ = ["RUNNERS", "Runner", "Source", "get_runner", "runner_names", "split_backend", "hardware_warnings"]


def _ensure_registered() -> None:
    """Nothing to do: importing this module imported every runner module (their @register ran)."""


def runner_names() -> list[str]:
    _ensure_registered()
    return list(RUNNERS)


def verifier_for(fmt: str) -> str | None:
    """The backend that checks artifacts of format ``fmt`` (``keras`` -> tf-function, ``onnx`` -> onnxruntime)."""
    _ensure_registered()
    return next((n for n, cls in RUNNERS.items() if cls.verifies and cls.needs == fmt), None)


def bench_defaults() -> list[str]:
    """Backends ``bench`` measures when none are named (the CPU ones)."""
    _ensure_registered()
    return [n for n, cls in RUNNERS.items() if cls.bench_default]


def format_of(name: str) -> str:
    """The artifact format a backend reads."""
    return get_runner(name).needs


def backends_for(precision: str) -> list[str]:
    """Registered backends that can run ``precision``."""
    _ensure_registered()
    return [n for n, cls in RUNNERS.items() if precision in cls.precisions]


def split_backend(name: str) -> tuple[str, str | None]:
    """``onnxruntime-int8`` -> (``onnxruntime``, ``int8``); a plain name -> (name, None)."""
    _ensure_registered()
    base, _, suffix = name.rpartition("-")
    if name not in RUNNERS and base in RUNNERS and suffix in ("fp32", "bf16", "fp16", "int8"):
        return base, suffix
    return name, None


def get_runner(name: str) -> type[Runner]:
    """Runner class by name.

    Raises:
        BackendError: unknown name; the message lists the valid ones.
    """
    _ensure_registered()
    name = split_backend(name)[0]
    if name not in RUNNERS:
        raise BackendError(
            f"`{name}` is not a backend. Valid backends: {', '.join(RUNNERS)} "
            "(optionally with a precision suffix, e.g. onnxruntime-int8).",
            flag="--backends",
        )
    return RUNNERS[name]


def hardware_warnings(source: Source, pairs) -> dict[tuple[str, str], tuple[str, bool]]:
    """(backend, precision) -> (warning line, whether answers are affected) for each pair this
    machine lacks what its artifact was made for (see :mod:`attnkit.targets`)."""

    out = {}
    for name, precision in pairs:
        needs = get_runner(name).needs
        record = source.manifest.artifact(needs, precision) if needs != "keras" else None
        if record is None and precision == "bf16" and needs in ("keras", "savedmodel"):
            record = ArtifactRecord(needs, f"{name} [bf16]", "bf16", extra={"requires": BF16_REQUIREMENT})
        line = mismatch(record) if record is not None else None
        if line:
            out[(name, precision)] = (line, affects_answers(record))
    return out
