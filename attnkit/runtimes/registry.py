"""The backend registry: the one place that knows every backend, what it can do (``forward``,
``decode_step``, ``generate``), the artifact it reads for each, the precisions it runs, whether verify and
bench use it by default, and what the machine needs for it.

Runner modules register themselves with ``@register`` (from :mod:`.base`); this module imports them
all, so ``base`` never imports a runner and there is no import circle. A new backend is one module
plus its import below. verify, bench, the generation loop, verify and bench, ``env`` and the CLI's
choices read only the functions here.
"""

from __future__ import annotations

from ..core.errors import BackendError
from ..core.names import DECODE_STEP, FORWARD, GENERATE, PRECISIONS, TASKS
from ..core.targets import BF16_REQUIREMENT, affects_answers, mismatch
from ..exporters.manifest import ArtifactRecord

# isort: off
# Each module registers its runners; the import order is the registry's order (verify's and bench's rows).
from . import keras_runner, tf_runners, onnxruntime, genai, openvino, openvino_genai, openvino_genai_cb, tensorrt  # noqa: F401

# isort: on
from .base import REGISTRY, Loadable, Runner, Source, label

__all__ = [
    "Runner",
    "Source",
    "label",
    "get_runner",
    "runner_class",
    "runner_names",
    "split_backend",
    "hardware_warnings",
    "generation_pairs",
    "why_not",
]


def runner_names(task: str = FORWARD) -> list[str]:
    """Backends registered for ``task``, in registry order."""
    return [n for n, tasks in REGISTRY.items() if task in tasks]


def all_backends() -> list[str]:
    return list(REGISTRY)


def tasks_of(name: str) -> dict[str, type[Loadable]]:
    """``{task: runner class}`` of backend ``name`` (empty for an unknown name)."""
    return dict(REGISTRY.get(name, {}))


def generation_only(name: str) -> bool:
    """A registered backend with generation runners and no forward one (onnxruntime-genai, OpenVINO GenAI)."""
    return name in REGISTRY and FORWARD not in REGISTRY[name]


def verifier_for(fmt: str) -> str | None:
    """The backend that checks artifacts of format ``fmt`` (``keras`` -> tf-function, ``onnx`` -> onnxruntime)."""
    return next((n for n in runner_names() if (c := REGISTRY[n][FORWARD]).verifies and c.needs == fmt), None)


def bench_defaults() -> list[str]:
    """Backends ``bench`` measures when none are named (the CPU ones)."""
    return [n for n in runner_names() if REGISTRY[n][FORWARD].bench_default]


def format_of(name: str) -> str:
    """The artifact format a backend reads (its runners share it; a generation-only backend has no forward one)."""
    name = split_backend(name)[0]
    if generation_only(name):
        return next(iter(REGISTRY[name].values())).needs
    return get_runner(name).needs


def backends_for(precision: str, task: str = FORWARD) -> list[str]:
    """Registered backends that can run ``precision`` for ``task``."""
    return [n for n in runner_names(task) if precision in REGISTRY[n][task].precisions]


def split_backend(name: str) -> tuple[str, str | None]:
    """``onnxruntime-int8`` -> (``onnxruntime``, ``int8``); a plain name -> (name, None)."""
    base, _, suffix = name.rpartition("-")
    if name not in REGISTRY and base in REGISTRY and suffix in PRECISIONS:
        return base, suffix
    return name, None


def why_not(name: str, task: str) -> str:
    """Why backend ``name`` has no runner for ``task`` (its own words where it declared them)."""
    for cls in REGISTRY.get(name, {}).values():
        if task in cls.not_for:
            return cls.not_for[task]
    return f"`{name}` has no {task.replace('_', ' ')} runner"


def runner_class(name: str, task: str = FORWARD) -> type[Loadable]:
    """Runner class of backend ``name`` for ``task``.

    Raises:
        BackendError: unknown name, or a backend not registered for ``task``; the message lists the valid ones.
    """
    name = split_backend(name)[0]
    valid = runner_names(task)
    if task not in TASKS or name not in REGISTRY or task not in REGISTRY[name]:
        what = "a backend" if name not in REGISTRY else f"a {task.replace('_', ' ')} backend"
        reason = f" ({why_not(name, task)})" if name in REGISTRY else ""
        raise BackendError(
            f"`{name}` is not {what}{reason}. Valid: {', '.join(valid)} "
            "(optionally with a precision suffix, e.g. onnxruntime-int8).",
            flag="--backends",
        )
    return REGISTRY[name][task]


def get_runner(name: str) -> type[Runner]:
    """The forward runner class of backend ``name`` (see :func:`runner_class`)."""
    return runner_class(name, FORWARD)


def generation_runners(name: str) -> list[type[Loadable]]:
    """The decode-step and generate runners of a backend (either may be absent)."""
    return [REGISTRY[name][t] for t in (DECODE_STEP, GENERATE) if t in REGISTRY.get(name, {})]


def generation_pairs(source, names: list[str] | None = None) -> list[tuple[type[Loadable], str]]:
    """``(runner class, precision)`` of every generation runner the export's artifacts allow, in registry
    order, fp32 first; ``names`` (``NAME`` or ``NAME-PRECISION``) narrows them. A named backend that has
    no generation runner is refused with the reason."""
    section = source.generation
    wanted: dict[str, str | None] = {}
    for item in names or []:
        name, precision = split_backend(item)
        if not generation_runners(name):
            runner_class(name, DECODE_STEP)  # raises, naming the valid ones and why this one is not
        wanted[name] = precision
    for name in wanted:
        reasons = [r for cls in generation_runners(name) if (r := cls.inapplicable(source))]
        if reasons and len(reasons) == len(generation_runners(name)):
            raise BackendError(f"`{name}` has nothing to run in this export: {reasons[0]}.", flag="--backends")
    out = []
    for name in all_backends():
        if names and name not in wanted:
            continue
        for cls in generation_runners(name):
            if not cls.applies(source):
                continue
            for precision in cls.precisions:
                if wanted.get(name) not in (None, precision):
                    continue
                if cls.needs == "keras" and precision == "fp32" or section.artifact(cls.role, cls.needs, precision):
                    out.append((cls, precision))
    return out


def hardware_warnings(source: Source, pairs) -> dict[tuple[str, str], tuple[str, bool]]:
    """(backend, precision) -> (warning line, whether answers are affected) for each pair this
    machine lacks what its artifact was made for (see :mod:`attnkit.core.targets`)."""

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
