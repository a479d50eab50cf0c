"""The ``bench --generate`` command body (kept out of cli.py, which only parses options)."""

from __future__ import annotations

import contextlib
import tempfile
from pathlib import Path

import click


def bench_generation_command(
    target, backends, batches, prompt_lengths, new_tokens, repeats, precisions, threads, seed, imports, unsafe, out,
    console,
) -> None:  # fmt: skip
    from ..cli_support import progress
    from ..models import classify
    from .bench import bench_generation
    from .report import bench_table, write_all

    ref = classify(str(target))
    with contextlib.ExitStack() as stack:
        root = Path(target)
        if not ref.is_export:  # a preset or .keras file: exported with --generate into a temporary directory
            from ..export_api import export

            tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="attnkit-gen-")))
            root = tmp / ref.name
            wanted = tuple(dict.fromkeys(("fp32",) + tuple(p for p in precisions if p in ("fp16", "int8"))))
            export(
                str(target), root, precision=",".join(wanted), generate=True, seed=seed, imports=imports,
                unsafe=unsafe, check=False, progress=progress,
            )  # fmt: skip
        report = bench_generation(
            root,
            backends=list(backends) if backends else None,
            batches=tuple(int(b) for b in batches),
            prompt_lengths=tuple(int(p) for p in prompt_lengths),
            new_tokens=tuple(int(n) for n in new_tokens),
            repeats=repeats,
            seed=seed,
            threads=threads,
            unsafe=unsafe,
            imports=imports,
            progress=progress,
        )
    console.print(bench_table(report, console.width))
    best = report.best()
    if best:
        click.echo(
            f"Best decode: {best.label} at batch {best.batch}, {best.tokens_per_s:.1f} tokens/s, "
            f"{best.speedup_vs_eager_recompute:.1f}x eager full recompute"
        )
    if out:
        for path in write_all(report, out):
            click.echo(f"wrote {path}")
