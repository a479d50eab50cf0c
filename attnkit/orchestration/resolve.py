"""Orchestration: resolve MODEL_OR_DIR to an export directory, exporting on the fly when it is a preset or a
``.keras`` file, and the public ``bench`` / ``bench_generation`` that accept either.

The one helper for "export on the fly into a temporary directory" (bench, bench-generate and run ask here);
the services below (:mod:`attnkit.benchmark`, :mod:`attnkit.generation`) only ever see export directories.
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

from ..core.names import LOWERED_PRECISIONS, ONNX_PRECISIONS, TF_PRECISIONS


@contextlib.contextmanager
def resolved_export(
    model: str | Path,
    *,
    target: str | None = None,
    formats: tuple[str, ...] = ("savedmodel", "onnx"),
    precisions: tuple[str, ...] = ("fp32",),
    generate: bool = False,
    seed: int = 0,
    imports: tuple[str, ...] = (),
    unsafe: bool = False,
    progress: Callable[[str], None] | None = None,
    data=None,
) -> Iterator[tuple[Path, bool]]:
    """``(export directory, exported on the fly)``. An export directory is yielded as is; a preset or
    ``.keras`` file is exported (``formats``, ``precisions``; ``generate`` adds the decode step) for ``target``
    (default ``host``: the commands that export on the fly measure on this machine, so its int8 scheme and its
    OpenVINO int8 search are the ones that count here) into a temporary directory that is removed when the block
    ends, however it ends.

    Raises:
        AttnkitError: MODEL_OR_DIR names nothing usable (the error names ``MODEL_OR_DIR``); ``target`` is not one,
            or is given for an export directory (whose artifacts were made for the target it records).
    """
    from ..core.errors import AttnkitError
    from ..core.targets import HOST
    from ..core.targets import resolve as resolve_target
    from ..models import classify
    from .export import export

    if classify(str(model)).is_export:
        if target is not None:
            from ..exporters.manifest import Manifest

            made_for = (Manifest.load(Path(model)).target or {}).get("name", "portable")
            raise AttnkitError(
                f"`{model}` is an export directory, made for --target {made_for}; --target applies to a preset or "
                f".keras file exported on the fly.",
                flag="--target",
                hint=f"Drop --target, or re-export: attnkit export MODEL --target {target}.",
            )
        yield Path(model), False
        return
    target = target or HOST
    resolved = resolve_target(target)  # a bad --target is refused before any work
    precisions = tuple(
        p for p in dict.fromkeys(precisions)
        if (p in TF_PRECISIONS and "savedmodel" in formats) or (p in ONNX_PRECISIONS and "onnx" in formats)
        or (p in ("fp32", "bf16", "fp16", "int8") and "openvino" in formats)
    ) or ("fp32",)  # fmt: skip
    tmp = Path(tempfile.mkdtemp(prefix="attnkit-export-"))
    try:
        say = progress or (lambda _m: None)
        say(
            f"exporting {model} ({', '.join(formats)}; {', '.join(precisions)}) for {resolved.summary()} "
            "into a temporary directory"
        )
        export(
            str(model),
            tmp / "export",
            target=target,
            formats=formats,
            precision=",".join(precisions),
            generate=generate,
            seed=seed,
            imports=imports,
            unsafe=unsafe,
            check=False,
            force=True,
            data=data,
        )  # fmt: skip  (one progress line for the whole temporary export, as before)
        yield tmp / "export", True
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def bench(model: str | Path, *, target: str | None = None, data=None, accuracy_target: float | None = None,
          **kwargs):  # fmt: skip
    """:func:`attnkit.benchmark.run.bench` on a preset, a ``.keras`` file or an export directory.

    A preset or ``.keras`` file is exported on the fly for ``target`` (default ``host``: this machine, where it is
    measured) with exactly the formats and precisions the requested backends read (validated first: bad shapes
    or names are refused before any export). With ``data`` (an ``.npz`` of the user's inputs) the on-the-fly
    export calibrates on it, and every measured backend x precision is checked on its held-out rows
    (:func:`gate_on_data`): a row whose task metric does not keep ``accuracy_target`` of fp32's does not agree,
    and the pick never takes it.
    """
    from ..benchmark.run import bench as run_bench
    from ..benchmark.run import plan_of

    plan = plan_of(kwargs.get("backends"), kwargs.get("precisions", ("fp32",)), kwargs.get("baseline", True),
                   kwargs.get("batch_sizes", (1, 8, 32)), kwargs.get("seq_lens", (128,)))  # fmt: skip
    formats = tuple(dict.fromkeys(f for f, _ in plan.exports)) or ("onnx",)
    with resolved_export(
        model, target=target, formats=formats, precisions=tuple(p for _, p in plan.exports),
        seed=kwargs.get("seed", 0), imports=kwargs.get("imports", ()), unsafe=kwargs.get("unsafe", False),
        progress=kwargs.get("progress"), data=data,
    ) as (root, on_the_fly):  # fmt: skip
        if data is not None:  # refused before anything is measured
            from ..runtimes.base import Source

            data = Source(root, unsafe=kwargs.get("unsafe", False), imports=kwargs.get("imports", ())).data(data)
        report = run_bench(root, on_the_fly=on_the_fly, **kwargs)
        if on_the_fly:
            report.config["target"] = str(model)
        if data is not None:
            gate_on_data(report, root, data, accuracy_target, kwargs.get("unsafe", False), kwargs.get("progress"))
        return report


def gate_on_data(report, root, data, accuracy_target, unsafe: bool = False, progress=None) -> None:
    """Each measured backend x precision checked on the held-out rows of ``data`` (verify's
    :func:`attnkit.checks.task.check_data`), recorded in its rows' agreement; a row that does not keep the
    target share of fp32's task metric there disagrees (its speed does not count, the pick skips it)."""
    from dataclasses import asdict

    from ..checks.agreement import resolve_tolerance
    from ..checks.task import check_data
    from ..core.metrics import ACCURACY_TARGET
    from ..runtimes.base import Source

    source = Source(root, unsafe=unsafe)
    loaded = source.data(data)
    target = ACCURACY_TARGET if accuracy_target is None else accuracy_target
    pairs = list(dict.fromkeys((m.backend, m.precision) for m in report.measurements if m.latency))
    base, checks = check_data(source, pairs, loaded, lambda p: resolve_tolerance(p, None, None), target, progress)
    by_pair = {(c.backend, c.precision): c for c in checks}
    report.config["data"] = {**loaded.record(), "accuracy_target": target,
                             "fp32_eager": asdict(base) if base is not None else None}  # fmt: skip
    for m in report.measurements:
        c = by_pair.get((m.backend, m.precision))
        if c is None or m.agreement is None:
            continue
        m.agreement["data"] = c.to_dict()
        if not c.passed:
            m.agreement["passed"] = False
            m.agreement.setdefault("failures", []).append(f"on your data: {c.verdict or c.error or c.skipped}")


def bench_generation(
    model: str | Path, *, target: str | None = None, precisions: tuple[str, ...] = ("fp32",), **kwargs
):
    """:func:`attnkit.generation.bench.bench_generation` on a preset, a ``.keras`` file or a ``--generate``
    export; a model is exported on the fly for ``target`` with ``--generate`` in fp32 and the reduced
    ``precisions`` asked."""
    from ..generation.bench import bench_generation as run

    wanted = ("fp32",) + tuple(p for p in precisions if p in LOWERED_PRECISIONS)
    with resolved_export(
        model, target=target, precisions=wanted, generate=True, seed=kwargs.get("seed", 0), imports=kwargs.get("imports", ()),
        unsafe=kwargs.get("unsafe", False), progress=kwargs.get("progress"), data=kwargs.get("data"),
    ) as (root, _):  # fmt: skip
        return run(root, **kwargs)
