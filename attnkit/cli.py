"""Command line: each command parses options and calls one public API function.

Every error reaches the user as one line on stderr with a non-zero exit code and no traceback
(``ATTNKIT_DEBUG=1`` shows it). Heavy libraries are imported inside commands, so ``--help`` is fast.
"""

from __future__ import annotations

import json
from pathlib import Path

import click

from ._version import __version__
from .cli_support import AttnkitGroup, emit, progress, stages
from .cli_support import console as _console
from .cli_types import BACKENDS, FORMATS, POSITIVE_INTS, PRECISIONS, TOLERANCE, tolerances
from .errors import AttnkitError
from .runtimes.registry import bench_defaults, runner_names, verifier_for


@click.group(cls=AttnkitGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="attnkit")
def cli():
    """Export, verify, benchmark and package Keras attention models.

    SavedModel (TF Serving), ONNX (fp32/fp16/int8), TensorRT plans, Triton repositories.

    \b
    attnkit models                         list the presets
    attnkit export encoder-tiny            SavedModel + ONNX in artifacts/encoder-tiny, agreement checked
    attnkit verify artifacts/encoder-tiny  every artifact vs the eager fp32 model
    attnkit bench encoder-tiny --out b     every backend vs the eager baseline
    attnkit run encoder-tiny               all of it, plus Triton/TF Serving layouts and report.md
    attnkit env                            what this machine can run
    """


@cli.command()
@click.option(
    "--seq", default=128, show_default=True, type=click.IntRange(min=1), help="Sequence length for the FLOPs column."
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def models(seq: int, as_json: bool):
    """List the presets with dims, parameter count and FLOPs per sequence."""
    from .models.presets import list_models
    from .render import models_table

    rows = list_models(seq)
    if as_json:
        click.echo(json.dumps(rows, indent=2))
    else:
        _console().print(models_table(rows))


_import_option = click.option(
    "--import",
    "imports",
    multiple=True,
    metavar="MODULE",
    help="Module or .py file registering custom layers (repeatable).",
)


_unsafe_option = click.option(
    "--unsafe",
    is_flag=True,
    help="Allow unsafe Keras deserialisation (Lambda layers) of model.keras. Trusted files only; "
    "never taken from a manifest.",
)


@cli.command()
@click.argument("model")
@click.option("--out", type=click.Path(path_type=Path), help="Export directory [default: artifacts/<name>].")
@click.option(
    "--format",
    "formats",
    type=FORMATS,
    default="savedmodel,onnx",
    show_default=True,
    help="Comma list of: savedmodel, onnx, tensorrt (plans from the ONNX graphs), triton (a model repository "
    "in DIR/triton).",
)
@click.option(
    "--precision",
    type=PRECISIONS,
    default="fp32",
    show_default=True,
    help="Comma list of fp32, bf16, fp16, int8. SavedModels are traced under each TF policy (bf16 = "
    "mixed_bfloat16, fp16 = mixed_float16); ONNX is lowered on the graph (model.fp16.onnx, model.int8.onnx with "
    "the --target's int8 scheme); plans are fp32/fp16.",
)
@click.option(
    "--opset",
    default=17,
    show_default=True,
    type=int,
    help="ONNX opset; one the installed tf2onnx cannot target is refused with its range.",
)
@_import_option
@click.option("--seed", default=0, show_default=True, type=int, help="Weight seed (presets) and input seed.")
@click.option("--force", is_flag=True, help="Replace an existing non-empty --out.")
@click.option("--unsafe", is_flag=True, help="Allow unsafe Keras deserialisation (Lambda layers). Trusted files only.")
@click.option("--check/--no-check", default=True, help="Check the artifacts agree with the eager model (default on).")
@click.option(
    "--fuse/--no-fuse", default=True, help="Fuse tf2onnx's decomposed LayerNorms into LayerNormalization (default on)."
)
@click.option("--per-channel", is_flag=True, help="Per-channel int8 weight scales.")
@click.option(
    "--target",
    default="portable",
    show_default=True,
    help="Where the artifacts will run; decides the int8 scheme: portable (any x86-64 CPU with AVX2, and GPUs), "
    "host (this machine), cpu-avx2, cpu-avx512, cpu-avx512-vnni, cpu-amx, or a TensorRT architecture (sm89).",
)
@click.option(
    "--trt-target", help="GPU architecture of the TensorRT plan, e.g. sm89 (TensorRT-RTX) [default: local GPU]."
)
@click.option("--batch", multiple=True, metavar="MIN:OPT:MAX", help="Batch range of a TensorRT profile (repeatable).")
@click.option("--seq", multiple=True, metavar="MIN:OPT:MAX", help="Sequence range of a TensorRT profile (repeatable).")
@click.option("--trt-cache", type=click.Path(path_type=Path), help="Timing-cache file reused across builds.")
@click.option(
    "--generate",
    is_flag=True,
    help="Also export the decode step with a KV cache (decoder and seq2seq models): SavedModel signatures "
    "prefill, decode_step, generate (+ encode) and decoder_with_past.onnx (+ encoder.onnx), in each precision.",
)
def export(model, out, **options):
    """Export MODEL (a preset name or a .keras file) and check the artifacts agree with it.

    MODEL may also be an export directory with --format tensorrt: plans are then built from its ONNX
    graphs and added to it in place.
    """
    from .errors import AgreementError
    from .export_api import ExportOptions
    from .export_api import export as run_export

    try:
        result = run_export(model, out, options=ExportOptions(**options), progress=progress)
    except AgreementError as e:
        _print_report_of(e)
        raise
    if result.report is not None:
        from .render import agreement_table

        _console().print(agreement_table(result.report, _console().width))
        _print_generation(result.report)
        _warn(result.report.warnings)
    paths = [a.path for a in result.manifest.all_artifacts()]
    click.echo(f"exported {', '.join(paths)} to {result.out}")


def _print_generation(report) -> None:
    if getattr(report, "generation", None) is not None:
        from .generation.report import verify_table

        _console().print(verify_table(report.generation, _console().width))


def _warn(lines) -> None:
    """One ``Warning:`` line on stderr per hardware mismatch (or other caveat)."""
    for line in lines:
        click.echo(f"Warning: {line}", err=True)


def _print_report_of(error) -> None:
    report = getattr(error, "report", None)
    if report is not None:
        from .render import agreement_table

        _console().print(agreement_table(report, _console().width))


@cli.command()
@click.argument("directory", metavar="DIR", type=click.Path(path_type=Path))
@click.option(
    "--backends",
    type=BACKENDS,
    help=f"Comma list of: {', '.join(runner_names())} (NAME-PRECISION pins one) [default: per artifact, "
    + ", ".join(f"{fmt}: {verifier_for(fmt)}" for fmt in ("keras", "savedmodel", "onnx", "tensorrt"))
    + "].",
)
@click.option("--atol", type=TOLERANCE, multiple=True, help="Element-wise absolute tolerance, e.g. 1e-4 or fp16=1e-2.")
@click.option("--rtol", type=TOLERANCE, multiple=True, help="Element-wise relative tolerance, e.g. 1e-3 or bf16=0.1.")
@click.option("--seed", default=0, show_default=True, type=int, help="Seed of the random inputs.")
@click.option("--json", "json_path", type=click.Path(path_type=Path), help="Write the report as JSON to this file.")
@click.option("--locate", is_flag=True, help="Also find the first Keras layer whose ONNX counterpart diverges.")
@click.option(
    "--generate/--no-generate",
    default=True,
    help="On a --generate export, also check greedy generation token by token against eager full recompute "
    "(default on).",
)
@click.option("--max-new-tokens", default=32, show_default=True, type=int, help="Tokens generated per prompt.")
@click.option("--prompt-length", default=16, show_default=True, type=int, help="Longest prompt (others shorter).")
@_import_option
@_unsafe_option
def verify(
    directory, backends, atol, rtol, seed, json_path, locate, generate, max_new_tokens, prompt_length, imports, unsafe
):
    """Check every artifact in DIR against the eager fp32 Keras model; exit 0 only if all agree."""
    from .errors import AgreementError
    from .render import agreement_table
    from .verification import verify as run_verify

    if json_path:
        from .exporters.manifest import check_writable_file

        check_writable_file(json_path, "--json")
    report = run_verify(
        directory,
        backends=list(backends) if backends else None,
        atol=tolerances(atol, "--atol"),
        rtol=tolerances(rtol, "--rtol"),
        seed=seed,
        unsafe=unsafe,
        imports=imports,
        progress=progress,
        generation={"max_new_tokens": max_new_tokens, "prompt_length": prompt_length} if generate else None,
    )
    _console().print(agreement_table(report, _console().width))
    _print_generation(report)
    _warn(report.warnings)
    data = report.to_dict()
    if locate:
        data["locate"] = _locate_all(directory, report, atol, rtol, seed, unsafe=unsafe, imports=imports)
    if json_path:
        from .exporters.manifest import write_text_atomic

        write_text_atomic(json_path, json.dumps(data, indent=2), flag="--json")
    if not any(r.passed or r.failed for r in report.results):
        reasons = sorted({r.skipped for r in report.results if r.skipped})
        raise AttnkitError(
            f"nothing was checked in `{directory}`: every check was skipped ({'; '.join(reasons)}).",
            flag="--backends",
            hint="Run on a machine that has the backend, or choose other --backends.",
        )
    if not report.ok:
        raise AgreementError(f"{report.failed_checks} check(s) failed in `{directory}`.")
    skipped = sum(r.skipped is not None for r in report.results)
    click.echo(
        f"all {len(report.results) - skipped} checks passed" + (f", {skipped} skipped (see table)" if skipped else "")
    )


@cli.command()
@click.argument("target", metavar="MODEL_OR_DIR")
@click.option(
    "--backends",
    type=BACKENDS,
    help=f"Comma list of: {', '.join(runner_names())} (NAME-PRECISION pins one) [default: {','.join(bench_defaults())}].",
)
@click.option("--batch-sizes", type=POSITIVE_INTS, help="Batch sizes [default: 1,8,32; with --generate 1].")
@click.option("--seq-lens", type=POSITIVE_INTS, default="128", show_default=True, help="Sequence lengths.")
@click.option(
    "--precision",
    "precisions",
    type=PRECISIONS,
    default="fp32",
    show_default=True,
    help="Comma list of precisions (fp32, bf16, fp16, int8) for backends that support them.",
)
@click.option("--threads", type=click.IntRange(min=1), help="Intra-op threads for TensorFlow and ONNX Runtime.")
@click.option("--warmup", default=1.0, show_default=True, type=float, help="Warm-up seconds per backend and shape.")
@click.option("--min-iterations", default=10, show_default=True, type=int, help="Timed calls at least.")
@click.option("--min-seconds", default=2.0, show_default=True, type=float, help="Timed seconds at least.")
@click.option("--seed", default=0, show_default=True, type=int, help="Seed of the inputs (and weights of presets).")
@click.option("--no-baseline", is_flag=True, help="Do not measure eager Keras (no speedup column).")
@_import_option
@_unsafe_option
@click.option(
    "--out",
    type=click.Path(path_type=Path),
    help="Write results.json, results.csv, throughput.png here (with --generate: generation.json/.csv/.png).",
)
@click.option(
    "--generate",
    is_flag=True,
    help="Benchmark generation token by token (a --generate export, or a decoder/seq2seq MODEL exported on the "
    "fly): time to first token, inter-token latency, tokens/s, speedup over full recompute, % of memory bandwidth.",
)
@click.option("--prompt-lengths", type=POSITIVE_INTS, default="32", show_default=True, help="With --generate.")
@click.option("--new-tokens", type=POSITIVE_INTS, default="32,128", show_default=True, help="With --generate.")
@click.option(
    "--repeats", default=3, show_default=True, type=click.IntRange(min=1), help="Timed generations (--generate)."
)
@click.option(
    "--server",
    metavar="URL",
    help="Load-test a running KServe v2 endpoint (http://127.0.0.1:PORT or grpc://127.0.0.1:PORT); MODEL is the "
    "model's name on the server. Sweeps --concurrency; each level: --warmup s, then --min-seconds s measured.",
)
@click.option("--request", type=click.Path(path_type=Path), help="With --server: a KServe v2 JSON request to send.")
@click.option(
    "--concurrency",
    type=POSITIVE_INTS,
    default="1,2,4,8,16",
    show_default=True,
    help="With --server: in-flight requests.",
)
@click.option(
    "--max-requests", default=100_000, show_default=True, type=click.IntRange(min=1), help="With --server: per level."
)
def bench(
    target,
    backends,
    batch_sizes,
    seq_lens,
    precisions,
    threads,
    warmup,
    min_iterations,
    min_seconds,
    seed,
    no_baseline,
    imports,
    unsafe,
    out,
    generate,
    prompt_lengths,
    new_tokens,
    repeats,
    server,
    request,
    concurrency,
    max_requests,
):
    """Benchmark every backend against the eager Keras baseline, in one run.

    MODEL_OR_DIR is a preset, a .keras file (both exported on the fly into a temporary directory)
    or an export directory (used as is; a requested backend without its artifact is refused).
    With --server, MODEL_OR_DIR is the name of a model on a running server (a load test: throughput,
    p50/p90/p99 latency and errors per concurrency level; --out gets loadtest.json/.csv/.png).
    """
    from .benchmark import report as render
    from .benchmark.harness import StoppingRule
    from .benchmark.run import bench as run_bench
    from .exporters.manifest import check_writable_out

    if out:
        check_writable_out(out, force=True)
    if request and not server:
        raise AttnkitError("is only used with --server.", flag="--request", hint="Add --server URL.")
    if server:
        from .serving.cli import bench_server_command

        bench_server_command(
            target, server, request, concurrency, warmup, min_seconds, max_requests,
            int((batch_sizes or (1,))[0]), int(seq_lens[0]), seed, out,
        )  # fmt: skip
        return
    if generate:
        from .generation.cli import bench_generation_command

        bench_generation_command(
            target, backends, batch_sizes or (1,), prompt_lengths, new_tokens, repeats, precisions, threads, seed,
            imports, unsafe, out, _console(),
        )  # fmt: skip
        return
    rule = StoppingRule(warmup, min_iterations, min_seconds)
    with stages() as (stage, on_start, on_measurement):
        report = run_bench(
            target,
            backends=list(backends) if backends else None,
            batch_sizes=batch_sizes or (1, 8, 32),
            seq_lens=seq_lens,
            precisions=precisions,
            threads=threads,
            rule=rule,
            seed=seed,
            baseline=not no_baseline,
            imports=imports,
            unsafe=unsafe,
            progress=stage,
            on_start=on_start,
            on_measurement=on_measurement,
        )
    _console().print(render.table(report, _console().width))
    for warning in report.warnings():
        click.echo(f"Warning: {warning}", err=True)
    if out:
        for path in render.write_all(report, out):
            click.echo(f"wrote {path}")


@cli.command()
@click.argument("model", metavar="MODEL")
@click.option(
    "--out", type=click.Path(path_type=Path), default="attention.png", show_default=True, help="PNG file to write."
)
@click.option("--layer", default=0, show_default=True, type=int, help="Which attention layer (0 = first, -1 = last).")
@click.option("--seq", default=32, show_default=True, type=click.IntRange(min=1), help="Sequence length of the input.")
@click.option("--seed", default=0, show_default=True, type=int, help="Seed of the input (and weights of presets).")
@_import_option
def attention(model, out, layer, seq, seed, imports):
    """Per-head attention-weight heatmaps of one layer for one random input.

    MODEL is a preset, a .keras file or an export directory.
    """
    from .attention_maps import capture, maps_for, plot
    from .exporters.manifest import check_writable_file

    if out.suffix.lower() != ".png":
        raise AttnkitError(f"`{out}` must end in .png.", flag="--out")
    check_writable_file(out, "--out")
    maps = maps_for(model, layer=layer, seq=seq, seed=seed, imports=imports, capture=capture)
    plot(maps, out, title=model)
    click.echo(f"wrote {out}: {maps.weights.shape[0]} heads of {maps.layer}")


def _locate_all(directory, report, atol, rtol, seed, unsafe=False, imports=()) -> list[dict]:
    """Run --locate on every ONNX artifact; print the first diverging layer of each."""
    from .locate import locate_all
    from .render import locate_table

    out = []
    for result in locate_all(
        directory,
        tolerances(atol, "--atol"),
        tolerances(rtol, "--rtol"),
        seed=seed,
        unsafe=unsafe,
        imports=imports,
        progress=progress,
    ):
        _console().print(locate_table(result))
        out.append(result.to_dict())
    return out


@cli.command()
@click.argument("plan", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print the sidecar as JSON.")
def inspect(plan, as_json):
    """Show what a TensorRT PLAN holds: flavour, target, profiles, I/O and its engine layers."""
    from .exporters.tensorrt import read_sidecar
    from .render import plan_tables

    sidecar = read_sidecar(plan)
    emit(sidecar, as_json, plan_tables)


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of tables.")
def env(as_json):
    """What this machine can run: every backend and precision, available or why not."""
    from .env import report
    from .render import env_tables

    emit(report(), as_json, env_tables)


@cli.command()
@click.argument("directory", metavar="DIR", type=click.Path(path_type=Path))
@click.option("--triton", type=click.Path(path_type=Path), help="Triton model repository to write (or add) models to.")
@click.option("--tfserving", type=click.Path(path_type=Path), help="TF Serving base directory (<name>/<version>/).")
@click.option("--version", "version", default=1, show_default=True, type=int, help="Model version, >= 1.")
@click.option("--name", help="Base model name [default: the manifest's].")
@click.option("--force", is_flag=True, help="Write into a non-Triton --triton path / over an existing version.")
@click.option("--no-warmup", is_flag=True, help="No model_warmup in the Triton configs.")
def package(directory, triton, tfserving, version, name, force, no_warmup):
    """Lay out DIR's artifacts for Triton and TF Serving, with configs checked against each artifact."""
    from .package import package as run_package

    result = run_package(
        directory,
        triton=triton,
        tfserving=tfserving,
        version=version,
        name=name,
        force=force,
        warmup=not no_warmup,
        progress=progress,
    )
    for m in result.triton:
        click.echo(f"triton: {m['name']} ({m['platform']}) -> {m['path']}")
    for m in result.tfserving:
        click.echo(f"tf serving: {m['name']} version {m['version']} -> {m['path']}")
    for what, path in result.requests.items():
        click.echo(f"request example ({what}): {path}")
    _warn(result.warnings)


@cli.command("run")
@click.argument("model")
@click.option("--out", type=click.Path(path_type=Path), help="Output directory [default: artifacts/<name>].")
@click.option("--force", is_flag=True, help="Replace an existing non-empty --out.")
@click.option(
    "--precision",
    type=PRECISIONS,
    default=None,
    help="Precisions to export and bench [default: those native here: fp32,fp16,int8, and bf16 on CPUs "
    "with bf16 instructions].",
)
@click.option(
    "--target",
    default="portable",
    show_default=True,
    help="Where the artifacts will run (see attnkit export --help).",
)
@click.option("--trt-target", help="Build TensorRT plans for this GPU architecture (e.g. sm89) even without a GPU.")
@click.option("--batch-sizes", type=POSITIVE_INTS, default="1,8", show_default=True, help="Benchmark batch sizes.")
@click.option("--seq-lens", type=POSITIVE_INTS, default="128", show_default=True, help="Benchmark sequence lengths.")
@click.option("--min-seconds", default=1.0, show_default=True, type=float, help="Timed seconds per measurement.")
@_import_option
@_unsafe_option
@click.option("--seed", default=0, show_default=True, type=int)
@click.option(
    "--generate/--no-generate",
    default=None,
    help="Also export, verify and bench generation with a KV cache [default: on for decoder and seq2seq presets].",
)
@click.option(
    "--serve",
    is_flag=True,
    help="Also load the ONNX model in Triton's own server (needs `make serving`) and load-test it with dynamic "
    "batching on and off (bench/loadtest.*, report.md).",
)
def run_command(
    model, out, force, precision, target, trt_target, batch_sizes, seq_lens, min_seconds, imports, unsafe, seed,
    generate, serve,
):  # fmt: skip
    """Export -> verify -> bench -> package MODEL, and write DIR/report.md linking everything."""
    from .models import classify
    from .pipeline import run

    name = classify(model, flag="MODEL").name
    result = run(
        model,
        out or Path("artifacts") / name,
        force=force,
        trt_target=trt_target,
        precision=",".join(precision) if precision else None,
        target=target,
        batch_sizes=",".join(batch_sizes),
        seq_lens=",".join(seq_lens),
        min_seconds=min_seconds,
        imports=imports,
        seed=seed,
        unsafe=unsafe,
        generate=generate,
        serve=serve,
        progress=progress,
    )
    _warn(result.warnings)
    click.echo(f"report: {result.report}")
    if result.failures:
        raise AttnkitError(
            f"{len(result.failures)} stage(s) failed; see {result.report}: {result.failures[0][:200]}",
            hint="The other stages' results are in the report.",
        )


def _serve_group():
    from .serving.cli import serve

    return serve


cli.add_command(_serve_group())


def main() -> None:
    cli(prog_name="attnkit")


if __name__ == "__main__":
    main()
