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

from .names import LOWERED_PRECISIONS, ONNX_PRECISIONS, TF_PRECISIONS


@contextlib.contextmanager
def resolved_export(
    target: str | Path,
    *,
    formats: tuple[str, ...] = ("savedmodel", "onnx"),
    precisions: tuple[str, ...] = ("fp32",),
    generate: bool = False,
    seed: int = 0,
    imports: tuple[str, ...] = (),
    unsafe: bool = False,
    progress: Callable[[str], None] | None = None,
) -> Iterator[tuple[Path, bool]]:
    """``(export directory, exported on the fly)``. An export directory is yielded as is; a preset or
    ``.keras`` file is exported (``formats``, ``precisions``; ``generate`` adds the decode step) into a
    temporary directory that is removed when the block ends, however it ends.

    Raises:
        AttnkitError: MODEL_OR_DIR names nothing usable (the error names ``MODEL_OR_DIR``).
    """
    from .export_api import export
    from .models import classify

    if classify(str(target)).is_export:
        yield Path(target), False
        return
    precisions = tuple(
        p for p in dict.fromkeys(precisions)
        if (p in TF_PRECISIONS and "savedmodel" in formats) or (p in ONNX_PRECISIONS and "onnx" in formats)
        or (p in ("fp32", "bf16", "fp16", "int8") and "openvino" in formats)
    ) or ("fp32",)  # fmt: skip
    tmp = Path(tempfile.mkdtemp(prefix="attnkit-export-"))
    try:
        say = progress or (lambda _m: None)
        say(f"exporting {target} ({', '.join(formats)}; {', '.join(precisions)}) into a temporary directory")
        export(
            str(target),
            tmp / "export",
            formats=formats,
            precision=",".join(precisions),
            generate=generate,
            seed=seed,
            imports=imports,
            unsafe=unsafe,
            check=False,
            force=True,
        )  # fmt: skip  (one progress line for the whole temporary export, as before)
        yield tmp / "export", True
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def bench(target: str | Path, **kwargs):
    """:func:`attnkit.benchmark.run.bench` on a preset, a ``.keras`` file or an export directory.

    A preset or ``.keras`` file is exported on the fly with exactly the formats and precisions the
    requested backends read (validated first: bad shapes or names are refused before any export).
    """
    from .benchmark.run import bench as run_bench
    from .benchmark.run import plan_of

    plan = plan_of(kwargs.get("backends"), kwargs.get("precisions", ("fp32",)), kwargs.get("baseline", True),
                   kwargs.get("batch_sizes", (1, 8, 32)), kwargs.get("seq_lens", (128,)))  # fmt: skip
    formats = tuple(dict.fromkeys(f for f, _ in plan.exports)) or ("onnx",)
    with resolved_export(
        target, formats=formats, precisions=tuple(p for _, p in plan.exports), seed=kwargs.get("seed", 0),
        imports=kwargs.get("imports", ()), unsafe=kwargs.get("unsafe", False), progress=kwargs.get("progress"),
    ) as (root, on_the_fly):  # fmt: skip
        report = run_bench(root, on_the_fly=on_the_fly, **kwargs)
        if on_the_fly:
            report.config["target"] = str(target)
        return report


def bench_generation(target: str | Path, *, precisions: tuple[str, ...] = ("fp32",), **kwargs):
    """:func:`attnkit.generation.bench.bench_generation` on a preset, a ``.keras`` file or a ``--generate``
    export; a model is exported on the fly with ``--generate`` in fp32 and the reduced ``precisions`` asked."""
    from .generation.bench import bench_generation as run

    wanted = ("fp32",) + tuple(p for p in precisions if p in LOWERED_PRECISIONS)
    with resolved_export(
        target, precisions=wanted, generate=True, seed=kwargs.get("seed", 0), imports=kwargs.get("imports", ()),
        unsafe=kwargs.get("unsafe", False), progress=kwargs.get("progress"),
    ) as (root, _):  # fmt: skip
        return run(root, **kwargs)
