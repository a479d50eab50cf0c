"""The commands that export, check and package one model: models, export, verify, attention, inspect, env,
package, run. Each parses its options (shared groups from :mod:`.options`) and calls one library function."""

from __future__ import annotations

from pathlib import Path

import click

from ..core.errors import AttnkitError
from ..runtimes.registry import runner_names, verifier_for
from .group import cli
from .options import DATA, IMPORTS, JSON, MODEL_LOADING, SEED, shapes, target, timing
from .support import console as _console
from .support import emit, progress
from .types import BACKENDS, FORMATS, PRECISIONS, TOLERANCE, tolerances

#: export ships artifacts elsewhere; run measures here (and its pick is for this machine)
SHIPPED, MEASURED_HERE = target("portable"), target("host")
#: run's bench: fewer shapes and shorter timing than bench's own defaults (run does everything else too)
RUN_SHAPES, RUN_TIMING = shapes("1,8"), timing(min_seconds=1.0, warmup=0.5, min_iterations=5)

#: export's and run's: the OpenVINO IR's precisions when not all of --precision
OPENVINO_PRECISION = click.option(
    "--openvino-precision",
    type=PRECISIONS,
    help="The OpenVINO IR's precisions, a subset of --precision [default: all of it; for run without --precision, "
    "those OpenVINO computes natively here], e.g. fp32,int8 to leave out fp16 where the CPU computes it in f32.",
)


@cli.command()
@click.option(
    "--seq", default=128, show_default=True, type=click.IntRange(min=1), help="Sequence length for the FLOPs column."
)
@JSON
def models(seq: int, **kw):
    """List the presets with dims, parameter count and FLOPs per sequence."""
    from ..models.presets import list_models
    from .render import models_table

    emit(list_models(seq), JSON.parse(kw), lambda rows: [models_table(rows)])


@cli.command()
@click.argument("model")
@click.option("--out", type=click.Path(path_type=Path), help="Export directory [default: artifacts/<name>].")
@click.option(
    "--format",
    "formats",
    type=FORMATS,
    default="savedmodel,onnx",
    show_default=True,
    help="Comma list of: savedmodel, onnx, openvino (IR from the ONNX graph), tensorrt (plans from the ONNX "
    "graphs), triton (a model repository in DIR/triton).",
)
@click.option(
    "--precision",
    type=PRECISIONS,
    default=None,
    help="Comma list of fp32, bf16, fp16, int8, q8, q4 [default: fp32; with --generate --format openvino, the "
    "decode step with f16 weights too, and in bf16 where OpenVINO computes bf16 natively here]. SavedModels are traced under each TF policy (bf16 = "
    "mixed_bfloat16, fp16 = mixed_float16); ONNX is lowered on the graph (model.fp16.onnx, model.int8.onnx with "
    "the --target's int8 scheme, q8/q4 weight-only MatMulNBits); OpenVINO IR is one fp32 IR run under each precision hint, int8 a "
    "weight-only IR (NNCF); plans are fp32/fp16.",
)
@OPENVINO_PRECISION
@click.option(
    "--opset",
    default=17,
    show_default=True,
    type=int,
    help="ONNX opset; one the installed tf2onnx cannot target is refused with its range.",
)
@MODEL_LOADING
@SEED
@click.option("--force", is_flag=True, help="Replace an existing non-empty --out.")
@click.option("--check/--no-check", default=True, help="Check the artifacts agree with the eager model (default on).")
@click.option(
    "--fuse/--no-fuse",
    default=True,
    help="Fuse tf2onnx's decomposed LayerNorms into LayerNormalization and rewrite its GELU into the form "
    "onnxruntime and OpenVINO fuse (default on).",
)
@click.option(
    "--per-channel/--per-tensor",
    default=None,
    help="int8 weight scales per output channel or one per tensor [default: the --target scheme's: per channel].",
)
@SHIPPED
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
@DATA
def export(model, out, **options):
    """Export MODEL (a preset name or a .keras file) and check the artifacts agree with it.

    MODEL may also be an export directory with --format tensorrt: plans are then built from its ONNX
    graphs and added to it in place.
    """
    from ..core.errors import AgreementError
    from ..orchestration.export import ExportOptions
    from ..orchestration.export import export as run_export

    options.update(MODEL_LOADING.parse(options), target=SHIPPED.parse(options), **DATA.parse(options))
    try:
        result = run_export(model, out, options=ExportOptions(**options), progress=progress)
    except AgreementError as e:
        if getattr(e, "report", None) is not None:
            _print_tables(e.report)  # a failing generation or data check is in the later tables, not the first
        raise
    if result.report is not None:
        _print_tables(result.report)
        _warn(result.report.warnings)
    paths = list(dict.fromkeys(a.path for a in result.manifest.all_artifacts()))  # one IR serves fp32 and bf16
    click.echo(f"exported {', '.join(paths)} to {result.out}")


def _print_tables(report) -> None:
    """An export's check: the agreement table, then the generation and data tables where it has them."""
    from .render import agreement_table

    _console().print(agreement_table(report, _console().width))
    _print_generation(report)
    _print_data(report)


def _print_data(report) -> None:
    if report.data is not None:
        from .render import data_table

        _console().print(data_table(report, _console().width))


def _print_generation(report) -> None:
    if getattr(report, "generation", None) is not None:
        from ..generation.report import verify_table

        _console().print(verify_table(report.generation, _console().width))


def _warn(lines) -> None:
    """One ``Warning:`` line on stderr per hardware mismatch (or other caveat)."""
    for line in lines:
        click.echo(f"Warning: {line}", err=True)


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
@SEED
@JSON
@click.option("--locate", is_flag=True, help="Also find the first Keras layer whose ONNX counterpart diverges.")
@click.option(
    "--generate/--no-generate",
    default=None,
    help="Check generation token by token against eager full recompute [default: when DIR is a --generate "
    "export; --generate refuses one that is not].",
)
@click.option(
    "--max-new-tokens",
    type=int,
    help="Tokens generated per prompt [default: 32, or half the model's maximum length where that is shorter].",
)
@click.option(
    "--max-prompt-length",
    "prompt_length",
    type=int,
    help="Longest prompt (others shorter) [default: 16, or what the model's positions leave beside the new tokens].",
)
@MODEL_LOADING
@DATA
def verify(directory, backends, atol, rtol, locate, generate, max_new_tokens, prompt_length, **kw):
    """Check every artifact in DIR against the eager fp32 Keras model; exit 0 only if all agree."""
    from ..checks.agreement import verify as run_verify
    from ..core.errors import AgreementError
    from .render import agreement_table

    seed, json_out, loading, data = SEED.parse(kw), JSON.parse(kw), MODEL_LOADING.parse(kw), DATA.parse(kw)
    imports, unsafe = loading["imports"], loading["unsafe"]
    report = run_verify(
        directory,
        backends=list(backends) if backends else None,
        atol=tolerances(atol, "--atol"),
        rtol=tolerances(rtol, "--rtol"),
        seed=seed,
        unsafe=unsafe,
        imports=imports,
        progress=progress,
        generation={"max_new_tokens": max_new_tokens, "prompt_length": prompt_length}
        if generate is not False
        else None,
        require_generation=bool(generate),
        **data,
    )
    if json_out != "-":
        _console().print(agreement_table(report, _console().width))
        _print_generation(report)
        _print_data(report)
    _warn(report.warnings)
    data = report.to_dict()
    if locate:
        data["locate"] = _locate_all(directory, report, atol, rtol, seed, unsafe=unsafe, imports=imports)
    if json_out:
        emit(data, json_out, lambda _d: [])
    checks = report.results + (report.generation.checks if report.generation is not None else []) + report.data_checks
    if not any(r.passed or r.failed for r in checks):
        reasons = sorted({r.skipped for r in checks if r.skipped})
        raise AttnkitError(
            f"nothing was checked in `{directory}`: every check was skipped ({'; '.join(reasons)}).",
            flag="--backends",
            hint="Run on a machine that has the backend, or choose other --backends.",
        )
    if not report.ok:
        raise AgreementError(f"{report.failed_checks} check(s) failed in `{directory}`.")
    skipped = sum(r.skipped is not None for r in checks)
    click.echo(f"all {len(checks) - skipped} checks passed" + (f", {skipped} skipped (see table)" if skipped else ""))


@cli.command()
@click.argument("model", metavar="MODEL")
@click.option(
    "--out", type=click.Path(path_type=Path), default="attention.png", show_default=True, help="PNG file to write."
)
@click.option("--layer", default=0, show_default=True, type=int, help="Which attention layer (0 = first, -1 = last).")
@click.option("--seq", default=32, show_default=True, type=click.IntRange(min=1), help="Sequence length of the input.")
@SEED
@IMPORTS
def attention(model, out, layer, seq, **kw):
    """Per-head attention-weight heatmaps of one layer for one random input.

    MODEL is a preset, a .keras file or an export directory.
    """
    from ..checks.attention_maps import capture, maps_for, plot
    from ..exporters.manifest import check_writable_file

    seed, imports = SEED.parse(kw), IMPORTS.parse(kw)
    if out.suffix.lower() != ".png":
        raise AttnkitError(f"`{out}` must end in .png.", flag="--out")
    check_writable_file(out, "--out")
    maps = maps_for(model, layer=layer, seq=seq, seed=seed, imports=imports, capture=capture)
    plot(maps, out, title=model)
    click.echo(f"wrote {out}: {maps.weights.shape[0]} heads of {maps.layer}")


def _locate_all(directory, report, atol, rtol, seed, unsafe=False, imports=()) -> list[dict]:
    """Run --locate on every ONNX artifact; print the first diverging layer of each."""
    from ..checks.locate import locate_all
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
@JSON
def inspect(plan, **kw):
    """Show what a TensorRT PLAN holds: flavour, target, profiles, I/O and its engine layers."""
    from ..exporters.tensorrt import read_sidecar
    from .render import plan_tables

    json_out = JSON.parse(kw)
    emit(read_sidecar(plan), json_out, plan_tables)


@cli.command()
@JSON
def env(**kw):
    """What this machine can run: every backend, task and precision, available or why not."""
    from ..checks.env import report
    from .render import env_tables

    json_out = JSON.parse(kw)
    emit(report(), json_out, env_tables)


@cli.command()
@click.argument("directory", metavar="DIR", type=click.Path(path_type=Path))
@click.option("--triton", type=click.Path(path_type=Path), help="Triton model repository to write (or add) models to.")
@click.option("--tfserving", type=click.Path(path_type=Path), help="TF Serving base directory (<name>/<version>/).")
@click.option("--version", "version", default=1, show_default=True, type=int, help="Model version, >= 1.")
@click.option("--name", help="Base model name [default: the manifest's].")
@click.option("--force", is_flag=True, help="Write into a non-Triton --triton path / over an existing version.")
@click.option("--no-warmup", is_flag=True, help="No model_warmup in the Triton configs.")
@click.option(
    "--pick",
    type=click.Choice(["latency", "throughput"]),
    help="Package for Triton only the artifact of this deployment pick (`attnkit run` records it).",
)
@click.option(
    "--kserve",
    metavar="URI",
    help="Also write REPO/inferenceservice.yaml: KServe serving the --triton repository from this storage URI "
    "(s3://, gs://, pvc://...), with the CPUs the model was measured with.",
)
def package(directory, triton, tfserving, version, name, force, no_warmup, pick, kserve):
    """Lay out DIR's artifacts for Triton and TF Serving, with configs checked against each artifact."""
    from ..orchestration.package import package as run_package

    result = run_package(
        directory,
        triton=triton,
        tfserving=tfserving,
        version=version,
        name=name,
        force=force,
        warmup=not no_warmup,
        pick=pick,
        kserve=kserve,
        progress=progress,
    )
    for m in result.triton:
        click.echo(f"triton: {m['name']} ({m['platform']}) -> {m['path']}")
    for m in result.tfserving:
        click.echo(f"tf serving: {m['name']} version {m['version']} -> {m['path']}")
    for what, path in result.requests.items():
        click.echo(f"request example ({what}): {path}")
    if result.kserve:
        click.echo(f"kserve: {result.kserve} (kubectl apply -f it once the repository is at its storageUri)")
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
@MEASURED_HERE
@click.option("--trt-target", help="Build TensorRT plans for this GPU architecture (e.g. sm89) even without a GPU.")
@RUN_SHAPES
@RUN_TIMING
@OPENVINO_PRECISION
@MODEL_LOADING
@SEED
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
@DATA
def run_command(model, out, force, precision, trt_target, openvino_precision,
                generate, serve, **kw):  # fmt: skip
    """Export -> verify -> bench -> package MODEL, and write DIR/report.md linking everything."""
    from ..models import classify
    from ..orchestration.run import run

    seed, loading, target = SEED.parse(kw), MODEL_LOADING.parse(kw), MEASURED_HERE.parse(kw)
    (batch_sizes, seq_lens), rule, data = RUN_SHAPES.parse(kw), RUN_TIMING.parse(kw), DATA.parse(kw)
    imports, unsafe = loading["imports"], loading["unsafe"]

    name = classify(model, flag="MODEL").name
    result = run(
        model,
        out or Path("artifacts") / name,
        force=force,
        trt_target=trt_target,
        precision=",".join(precision) if precision else None,
        openvino_precision=",".join(openvino_precision) if openvino_precision else None,
        target=target,
        batch_sizes=batch_sizes,
        seq_lens=seq_lens,
        rule=rule,
        **data,
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
