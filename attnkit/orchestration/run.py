"""run(MODEL): export -> verify -> bench -> package, and a report.md linking every file it wrote.

A failure in one stage or backend is written into the report and does not lose the others.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from pathlib import Path

from ..core.errors import AgreementError, AttnkitError
from .report import RunResult, RunSettings


def run(
    model: str,
    out: str | Path,
    *,
    force: bool = False,
    trt_target: str | None = None,
    target: str | None = None,
    precision: str | None = None,
    openvino_precision: str | None = None,
    batch_sizes: str | tuple[int, ...] = (1, 8),
    seq_lens: str | tuple[int, ...] = (128,),
    rule=None,
    imports: tuple[str, ...] = (),
    seed: int = 0,
    unsafe: bool = False,
    generate: bool | None = None,
    serve: bool = False,
    progress: Callable[[str], None] | None = None,
    data: str | Path | None = None,
    accuracy_target: float | None = None,
) -> RunResult:
    """Export every format available here, verify, benchmark, package, and write ``out/report.md``.

    TensorRT plans are built when a GPU is present or ``trt_target`` names an architecture.
    ``precision`` defaults to the precisions native to this machine (:func:`attnkit.core.targets.native_precisions`);
    ``target`` is export's ``--target`` (default ``host``: run measures here, and its pick is for this machine);
    ``openvino_precision`` export's (default with ``precision`` defaulted:
    :func:`attnkit.core.targets.openvino_defaults`). ``generate`` (default: for decoder and seq2seq presets) also
    exports, verifies and benchmarks the decode step with a KV cache. ``data`` (an ``.npz`` of the user's inputs)
    calibrates the export's int8 and gates the check and the bench's pick by the task metric on its held-out rows
    (``accuracy_target`` of fp32's, default 0.99). Each stage after the export is run by
    :func:`_stage`: a failure is written into the report and does not lose the other stages.
    """
    from .report import write_report

    say = progress or (lambda _m: None)
    settings = plan(model, out, trt_target, target, precision, openvino_precision, batch_sizes, seq_lens, rule,
                    generate, serve, say)  # fmt: skip
    data_options = {"data": data, "accuracy_target": accuracy_target}
    result = _export_stage(settings, force, imports, seed, unsafe, data_options, say)
    _bench_stage(result, settings, seed, unsafe, data_options, say)
    if settings.generate:
        with _stage(result, "bench-generate", say):
            from ..generation.bench import bench_generation
            from ..generation.report import write_all as write_generation

            result.generation_bench = bench_generation(
                result.out, prompt_lengths=(32,), new_tokens=(32, 128), repeats=2, seed=seed, unsafe=unsafe,
                progress=say,
            )  # fmt: skip
            result.files += write_generation(result.generation_bench, result.out / "bench")
    with _stage(result, "attention heatmaps", say):
        _attention(result, seed, unsafe, say)
    with _stage(result, "package", say):
        from .package import package

        out = result.out
        result.packaged = package(out, triton=out / "triton", tfserving=out / "tfserving", force=True, progress=say)
        result.warnings += [w for w in result.packaged.warnings if w not in result.warnings]
    if settings.serve and result.packaged is not None:
        with _stage(result, "serve", say):
            from ..serving.report import write_all as write_loadtest
            from ..serving.run import serve_load_tests

            result.served = serve_load_tests(result.out, result.packaged, progress=say)
            result.files += write_loadtest(result.served.reports, result.out / "bench")
    write_report(result, settings)
    return result


def plan(model, out, trt_target, target, precision, openvino_precision, batch_sizes, seq_lens, rule, generate, serve,
         say) -> RunSettings:  # fmt: skip
    """What ``run`` will do, decided and validated before anything is written: formats (OpenVINO where installed,
    TensorRT where a GPU or ``trt_target`` is), precisions (this machine's native ones by default, each left out
    with a note), shapes, the stopping rule and whether generation is measured."""
    from ..benchmark.harness import StoppingRule
    from ..benchmark.run import parse_int_list
    from ..core.targets import HOST, native_precisions
    from ..core.targets import resolve as resolve_target
    from ..models import PRESETS, classify, get_preset

    # bad benchmark shapes are refused before anything is written
    batch_sizes, seq_lens = parse_int_list(batch_sizes, "--batch-sizes"), parse_int_list(seq_lens, "--seq-lens")
    rule = rule or StoppingRule(0.5, 5, 1.0)
    if serve:  # a missing serving venv is refused before anything is written
        from ..serving.env import ServingEnv

        ServingEnv.locate()
    target = target or HOST
    resolve_target(target)  # a bad --target or MODEL is refused before anything is said or written
    if classify(model, flag="MODEL").kind == "preset":
        get_preset(model)
    notes: list[str] = []
    defaulted = not precision
    if defaulted:
        precisions, notes = native_precisions()
        precision = ",".join(precisions)
    formats = ["savedmodel", "onnx"]
    ov_formats, openvino_precision, ov_notes = _openvino_plan(precision, openvino_precision, defaulted)
    formats += ov_formats
    notes += ov_notes
    for note in notes:
        say(note)
    trt_format, trt_note = _tensorrt_plan(trt_target)
    formats += trt_format
    if generate is None:
        generate = model in PRESETS and PRESETS[model].family in ("decoder", "seq2seq")
    return RunSettings(
        model, Path(out), formats, precision, ",".join(map(str, batch_sizes)), ",".join(map(str, seq_lens)),
        rule.min_seconds, trt_target, trt_note, target, notes, generate, serve,
        openvino_precision if openvino_precision != precision else None, rule.warmup_s, rule.min_iterations,
    )  # fmt: skip


def _openvino_plan(precision: str, openvino_precision: str | None, defaulted: bool):
    """``(formats, the IR's precisions, notes)``: OpenVINO where installed; with ``precision`` defaulted, only the
    precisions its plugin computes natively here (:func:`attnkit.core.targets.openvino_defaults`)."""
    from ..runtimes.registry import get_runner

    no_openvino = get_runner("openvino").unavailable_reason()
    if openvino_precision is not None and no_openvino is not None:
        raise AttnkitError(
            f"OpenVINO is not available here: {no_openvino}.",
            flag="--openvino-precision",
            hint="Leave it out, or install the openvino extra (pip install 'attnkit[openvino]').",
        )
    if no_openvino is not None:
        return [], openvino_precision, []
    if defaulted and openvino_precision is None:  # OpenVINO IR beside the ONNX graph it is converted from
        from ..core.machine import cpu_features
        from ..core.targets import openvino_defaults

        kept, notes = openvino_defaults(precision.split(","), cpu_features())
        return ["openvino"], ",".join(kept), notes
    return ["openvino"], openvino_precision, []


def _tensorrt_plan(trt_target: str | None) -> tuple[list[str], str | None]:
    """``(formats, note)``: plans where a TensorRT package is and a GPU or ``trt_target`` to build for."""
    from ..core.machine import gpu_unavailable_reason
    from ..exporters.tensorrt import detect

    if detect() is None:
        return [], "not built: no TensorRT Python package"
    if trt_target or not gpu_unavailable_reason():
        return ["tensorrt"], None
    return [], f"not built: {gpu_unavailable_reason()}, and no --trt-target was given"


@contextlib.contextmanager
def _stage(result: RunResult, name: str, say):
    """One stage of ``run``: announced, and a failure recorded for report.md instead of raised."""
    say(name)
    try:
        yield
    except Exception as e:  # keep going: the report says what failed
        result.failures.append(f"{name}: {type(e).__name__}: {e}")


def _export_stage(settings: RunSettings, force, imports, seed, unsafe, data_options: dict, say) -> RunResult:
    """Export with its agreement check; a disagreement is a failure in the report, not the end of the run."""
    from .export import export

    say("export")
    failures = []
    try:
        exported = export(
            settings.model, settings.out, formats=",".join(settings.formats), precision=settings.precision,
            target=settings.target, trt_target=settings.trt_target, imports=imports, seed=seed, force=force,
            unsafe=unsafe, generate=settings.generate, openvino_precision=settings.openvino_precision, progress=say,
            **data_options,
        )  # fmt: skip
        verify_report = exported.report
    except AgreementError as e:  # the directory is written; the report shows what disagreed
        verify_report = e.report
        failures.append(f"agreement: {e}")
    result = RunResult(settings.out, settings.out / "report.md", verify_report=verify_report, failures=failures)
    if verify_report is not None:
        result.warnings += verify_report.warnings
    return result


def _bench_stage(result: RunResult, settings: RunSettings, seed: int, unsafe: bool, data_options: dict, say) -> None:
    from ..benchmark import report as bench_render
    from ..benchmark.harness import StoppingRule
    from ..benchmark.run import bench

    with _stage(result, "bench", say):
        rule = StoppingRule(settings.warmup, settings.min_iterations, settings.min_seconds)
        result.bench_report = bench(
            str(result.out), batch_sizes=settings.batch_sizes, seq_lens=settings.seq_lens,
            precisions=tuple(p for p in settings.precision.split(",") if p), rule=rule, seed=seed, unsafe=unsafe,
            progress=say,
        )  # fmt: skip
        if data_options["data"] is not None:
            from .resolve import gate_on_data

            gate_on_data(result.bench_report, result.out, data_options["data"], data_options["accuracy_target"],
                         unsafe, say)  # fmt: skip
        result.files += bench_render.write_all(result.bench_report, result.out / "bench")
        result.warnings += [w for w in result.bench_report.hardware if w not in result.warnings]
        _record_pick(result.out, result.bench_report)


def _attention(result: RunResult, seed: int, unsafe: bool, say) -> None:
    """Per-head heatmaps of the first layer; a model whose attention cannot be captured gets a note, not a failure."""
    from ..checks.attention_maps import capture, plot
    from ..runtimes.base import Source

    source = Source(result.out, unsafe=unsafe)
    seq = min(32, source.spec.max_sequence or 32)
    try:
        maps = capture(source.keras_model, source.spec, source.spec.sample_feeds(1, seq, seed), 0)
    except AttnkitError as e:  # this model's attention cannot be captured (it says why): nothing failed
        result.attention_note = f"not drawn: {e.message}"
        say(f"attention heatmaps {result.attention_note}")
        return
    plot(maps, result.out / "attention.png", title=source.spec.name)
    result.files.append(result.out / "attention.png")


def _record_pick(out: Path, bench_report) -> None:
    """The deployment pick into the manifest, with the machine it was measured on (it holds there)."""
    from ..core.targets import machine_summary
    from ..exporters.manifest import Manifest

    manifest = Manifest.load(out)
    env = bench_report.environment or {}
    threads = (env.get("threads") or {}).get("requested") or env.get("cores")  # what the rows were measured with
    manifest.pick = {**bench_report.pick(), "machine": machine_summary(), "target": manifest.target.get("name"),
                     "threads": threads}  # fmt: skip
    manifest.write(out)
