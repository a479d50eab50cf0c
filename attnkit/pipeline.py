"""run(MODEL): export -> verify -> bench -> package, and a report.md linking every file it wrote.

A failure in one stage or backend is written into the report and does not lose the others.
"""

from __future__ import annotations

import json
import shlex
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from string import Template

from .errors import AgreementError, AttnkitError


@dataclass
class RunSettings:
    """What ``run`` was asked to do (the report's reproduce section is built from it)."""

    model: str
    out: Path
    formats: list[str]
    precision: str
    batch_sizes: str
    seq_lens: str
    min_seconds: float
    trt_target: str | None
    trt_note: str | None
    target: str = "host"
    precision_notes: list[str] = field(default_factory=list)
    generate: bool = False
    serve: bool = False
    #: the OpenVINO IR's precisions when ``run`` kept fewer than ``precision`` (its native defaults)
    openvino_precision: str | None = None
    warmup: float = 0.5
    min_iterations: int = 5


@dataclass
class RunResult:
    out: Path
    report: Path
    files: list[Path] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    verify_report: object = None
    bench_report: object = None
    packaged: object = None
    generation_bench: object = None
    served: object = None  # serving.run.ServeResult with --serve
    #: why no heatmap was drawn, for a model whose attention weights attnkit cannot read (flash attention, or
    #: a layer inside another that takes no return_attention_scores and has no _masked_softmax): a note, not a
    #: failed stage
    attention_note: str | None = None


def _agreement_markdown(report) -> str:
    lines = [
        "| backend | precision | shape | output | max abs | rel L2 | cosine | result |",
        "|---|---|---|---|---:|---:|---:|---|",
    ]
    for r in report.results:
        shape = r.shape
        if r.skipped or r.error:
            lines.append(
                f"| {r.backend} | {r.precision} | {shape} | - | | | | "
                f"{'skipped: ' + r.skipped if r.skipped else 'ERROR: ' + r.error} |"
            )
            continue
        for a in r.agreements:
            verdict = "pass" if a.passed else "FAIL: " + "; ".join(a.failures)
            lines.append(
                f"| {r.backend} | {r.precision} | {shape} | {a.output} | {a.max_abs:.2e} | {a.rel_l2:.2e} | "
                f"{a.cosine:.6f} | {verdict} |"
            )
    return "\n".join(lines)


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
) -> RunResult:
    """Export every format available here, verify, benchmark, package, and write ``out/report.md``.

    TensorRT plans are built when a GPU is present or ``trt_target`` names an architecture.
    ``precision`` defaults to the precisions native to this machine (:func:`attnkit.targets.native_precisions`);
    ``target`` is export's ``--target`` (default ``host``: run measures here, and its pick is for this machine);
    ``openvino_precision`` export's (default with
    ``precision`` defaulted: :func:`attnkit.targets.openvino_defaults`). ``generate`` (default: for decoder and
    seq2seq presets) also exports, verifies and benchmarks the decode step with a KV cache.
    """
    from .benchmark import report as bench_render
    from .benchmark.harness import StoppingRule
    from .benchmark.run import bench, parse_int_list
    from .export_api import export
    from .exporters.tensorrt import detect
    from .machine import gpu_unavailable_reason
    from .package import package
    from .targets import native_precisions

    # bad benchmark shapes are refused before anything is written
    batch_sizes, seq_lens = parse_int_list(batch_sizes, "--batch-sizes"), parse_int_list(seq_lens, "--seq-lens")
    rule = rule or StoppingRule(0.5, 5, 1.0)
    if serve:  # a missing serving venv is refused before anything is written
        from .serving.env import ServingEnv

        ServingEnv.locate()
    say = progress or (lambda _m: None)
    from .models import classify, get_preset
    from .targets import HOST
    from .targets import resolve as resolve_target

    target = target or HOST
    resolve_target(target)  # a bad --target or MODEL is refused before anything is said or written
    if classify(model, flag="MODEL").kind == "preset":
        get_preset(model)
    out = Path(out)
    precision_notes: list[str] = []
    defaulted = not precision
    if defaulted:
        precisions, precision_notes = native_precisions()
        precision = ",".join(precisions)
        for note in precision_notes:
            say(note)
    formats = ["savedmodel", "onnx"]
    from .runtimes.registry import get_runner

    no_openvino = get_runner("openvino").unavailable_reason()
    if openvino_precision is not None and no_openvino is not None:
        raise AttnkitError(
            f"OpenVINO is not available here: {no_openvino}.",
            flag="--openvino-precision",
            hint="Leave it out, or install the openvino extra (pip install 'attnkit[openvino]').",
        )
    if no_openvino is None:
        formats.append("openvino")  # OpenVINO IR beside the ONNX graph it is converted from
        if defaulted and openvino_precision is None:
            from .machine import cpu_features
            from .targets import openvino_defaults

            kept, notes = openvino_defaults(precisions, cpu_features())
            openvino_precision = ",".join(kept)
            precision_notes += notes
            for note in notes:
                say(note)
    trt_note = None
    if detect() is None:
        trt_note = "not built: no TensorRT Python package"
    elif trt_target or not gpu_unavailable_reason():
        formats.append("tensorrt")
    else:
        trt_note = f"not built: {gpu_unavailable_reason()}, and no --trt-target was given"
    failures: list[str] = []
    if generate is None:
        from .models import PRESETS

        generate = model in PRESETS and PRESETS[model].family in ("decoder", "seq2seq")
    say("export")
    try:
        exported = export(
            model,
            out,
            formats=",".join(formats),
            precision=precision,
            target=target,
            trt_target=trt_target,
            imports=imports,
            seed=seed,
            force=force,
            unsafe=unsafe,
            generate=generate,
            openvino_precision=openvino_precision,
            progress=say,
        )
        verify_report = exported.report
    except AgreementError as e:  # the directory is written; the report shows what disagreed
        verify_report = e.report
        failures.append(f"agreement: {e}")
    result = RunResult(out, out / "report.md", verify_report=verify_report)
    if verify_report is not None:
        result.warnings += verify_report.warnings
    bench_report = None
    say("bench")
    try:
        bench_report = bench(
            str(out),
            batch_sizes=batch_sizes,
            seq_lens=seq_lens,
            precisions=tuple(p for p in precision.split(",") if p),
            rule=rule,
            seed=seed,
            unsafe=unsafe,
            progress=say,
        )
        result.files += bench_render.write_all(bench_report, out / "bench")
        result.warnings += [w for w in bench_report.hardware if w not in result.warnings]
        _record_pick(out, bench_report)
    except Exception as e:  # keep going: the report says what failed
        failures.append(f"bench: {type(e).__name__}: {e}")
    if generate:
        say("bench-generate")
        try:
            from .generation.bench import bench_generation
            from .generation.report import write_all as write_generation

            result.generation_bench = bench_generation(
                out, prompt_lengths=(32,), new_tokens=(32, 128), repeats=2, seed=seed, unsafe=unsafe, progress=say
            )
            result.files += write_generation(result.generation_bench, out / "bench")
        except Exception as e:
            failures.append(f"bench-generate: {type(e).__name__}: {e}")
    say("attention heatmaps")
    try:
        from .attention_maps import capture, plot
        from .runtimes.base import Source

        source = Source(out, unsafe=unsafe)
        seq = min(32, source.spec.max_sequence or 32)
        try:
            maps = capture(source.keras_model, source.spec, source.spec.sample_feeds(1, seq, seed), 0)
        except AttnkitError as e:  # this model's attention cannot be captured (it says why): nothing failed
            maps, result.attention_note = None, f"not drawn: {e.message}"
            say(f"attention heatmaps {result.attention_note}")
        if maps is not None:
            plot(maps, out / "attention.png", title=source.spec.name)
            result.files.append(out / "attention.png")
    except Exception as e:
        failures.append(f"attention heatmaps: {type(e).__name__}: {e}")
    say("package")
    try:
        result.packaged = package(out, triton=out / "triton", tfserving=out / "tfserving", force=True, progress=say)
        result.warnings += [w for w in result.packaged.warnings if w not in result.warnings]
    except Exception as e:  # reported in report.md, like every other stage's failure
        failures.append(f"package: {type(e).__name__}: {e}")
    if serve and result.packaged is not None:
        say("serve")
        try:
            from .serving.report import write_all as write_loadtest
            from .serving.run import serve_load_tests

            result.served = serve_load_tests(out, result.packaged, progress=say)
            result.files += write_loadtest(result.served.reports, out / "bench")
        except Exception as e:
            failures.append(f"serve: {type(e).__name__}: {e}")
    result.failures, result.bench_report = failures, bench_report
    settings = RunSettings(
        model,
        out,
        formats,
        precision,
        ",".join(map(str, batch_sizes)),
        ",".join(map(str, seq_lens)),
        rule.min_seconds,
        trt_target,
        trt_note,
        target,
        precision_notes,
        generate,
        serve,
        openvino_precision if openvino_precision != precision else None,
        rule.warmup_s,
        rule.min_iterations,
    )
    _write_report(result, settings)
    return result


def _record_pick(out: Path, bench_report) -> None:
    """The deployment pick into the manifest, with the machine it was measured on (it holds there)."""
    from .exporters.manifest import Manifest
    from .targets import machine_summary

    manifest = Manifest.load(out)
    manifest.pick = {**bench_report.pick(), "machine": machine_summary(), "target": manifest.target.get("name")}
    manifest.write(out)


REPORT = Template(
    """# attnkit report: $name

Created $created by attnkit $version.

$failures## Artifacts

| format | path | precision | bytes | sha256 |
|---|---|---|---:|---|
$artifacts
$trt_note
## Hardware

$hardware

## Agreement with the eager fp32 Keras model

$agreement

## Benchmark (one run, same machine)

$benchmark

$generation## Attention

$attention

## Serving

$serving

## Environment

```json
$environment
```

## Reproduce

```bash
$reproduce
```
"""
)


def _hardware_section(manifest, settings: RunSettings, warnings: list[str]) -> str:
    lines = []
    if manifest.target:
        t = manifest.target
        cls = f" ({t['cpu_class']})" if t["cpu_class"] != t["name"] else ""
        lines.append(f"- Target: `{t['name']}`{cls}. {t['why'][0].upper()}{t['why'][1:]}.")
    if manifest.machine:
        m = manifest.machine
        lines.append(f"- Exported on: {m['cpu']} ({m['class']}; {', '.join(m['features'])}).")
    lines += [f"- {note}." for note in settings.precision_notes]
    lines += [f"- **Warning:** {w}" for w in warnings]
    return "\n".join(lines) or "-"


def _benchmark_section(bench_report) -> str:
    from .benchmark.report import to_markdown

    if bench_report is None:
        return "not run (see Failures)"
    warnings = "".join(f"- warning: {w}\n" for w in bench_report.warnings())
    from .benchmark.results import pick_lines

    picks = "".join(f"**{line}.**\n\n" for line in pick_lines(bench_report.pick()))
    return (
        picks
        + to_markdown(bench_report.to_dict(raw=False))
        + "\n![throughput vs batch size](bench/throughput.png)\n\n"
        + "Raw data: [bench/results.json](bench/results.json), [bench/results.csv](bench/results.csv).\n"
        + ("\n" + warnings if warnings else "")
    ).rstrip("\n")


def _generation_section(result: RunResult) -> str:
    """Token-by-token verification and the generation benchmark (``--generate``), or nothing."""
    from .generation.report import to_markdown

    report = getattr(result.verify_report, "generation", None)
    if report is None and result.generation_bench is None:
        return ""
    lines = ["## Generation (decode step with a KV cache)", ""]
    if report is not None:
        lengths = ", ".join(map(str, report.prompt_lengths))
        lines += [
            f"Greedy tokens vs eager full recompute: batch {report.batch}, prompt lengths {lengths}, "
            f"{report.max_new_tokens} new tokens.",
            "",
            "| backend | token match | first differing step | steps compared | max abs (logits) | rel L2 | result |",
            "|---|---:|---:|---:|---:|---:|---|",
        ]
        for c in report.checks:
            if c.skipped or c.error:
                lines.append(f"| {c.label} | skipped: {c.skipped or c.error} ||||||")
                continue
            verdict = "pass" if c.passed else "FAIL: " + "; ".join(c.failures)
            first = "none" if c.first_mismatch is None else c.first_mismatch
            stats = f"{c.max_abs:.2e} | {c.rel_l2:.2e}" if c.steps_compared else "– (tokens only) | –"
            lines.append(f"| {c.label} | {c.token_match:.1%} | {first} | {c.steps_compared} | {stats} | {verdict} |")
        lines.append("")
    if result.generation_bench is not None:
        lines += [
            to_markdown(result.generation_bench.to_dict()),
            "![tokens/s and latency per token](bench/generation.png)",
            "",
            "Raw data: [bench/generation.json](bench/generation.json), [bench/generation.csv](bench/generation.csv).",
            "",
        ]
    return "\n".join(lines) + "\n"


def _serving_section(out: Path, packaged) -> str:
    q = shlex.quote
    if not packaged:
        return "not packaged (see Failures)"
    lines = ["Triton model repository: [triton/](triton/)", ""]
    lines += [f"- `{m['name']}` ({m['platform']}, {m['precision']}) from `{m['artifact']}`" for m in packaged.triton]
    lines += ["", "```bash", f"tritonserver --model-repository={q(str((out / 'triton').resolve()))}"]
    if "triton" in packaged.requests:
        req = Path(packaged.requests["triton"])
        model_name = req.stem.removeprefix("request_")
        lines.append(f"curl -s localhost:8000/v2/models/{model_name}/infer -d @{q(str(req.resolve()))}")
    lines += [
        "# on a machine without Triton's C++ backends: Triton's own server with attnkit's stand-in backends",
        f"attnkit serve triton {q(str((out / 'triton').resolve()))}",
        "```",
    ]
    for m in [m for m in packaged.tfserving if m["precision"] == "fp32"]:
        base = Path(m["path"]).parent.resolve()
        lines += ["", "TF Serving:", "", "```bash"]
        lines.append(
            f"tensorflow_model_server --rest_api_port=8501 --model_name={m['name']} --model_base_path={q(str(base))}"
        )
        if "tfserving" in packaged.requests:
            req = q(str(Path(packaged.requests["tfserving"]).resolve()))
            lines.append(f"curl -s localhost:8501/v1/models/{m['name']}:predict -d @{req}")
        if "tfserving_generate" in packaged.requests:
            req = q(str(Path(packaged.requests["tfserving_generate"]).resolve()))
            lines.append(f"curl -s localhost:8501/v1/models/{m['name']}:predict -d @{req}  # generate signature")
        lines.append(f"attnkit serve tfserving {q(str(base))}  # attnkit's REST stand-in, not tensorflow_model_server")
        lines.append("```")
    return "\n".join(lines)


def _served_section(served) -> str:
    """With --serve: the load test of the ONNX model in Triton's own server, batching on vs off."""
    if served is None:
        return ""
    from .serving.report import to_markdown

    on, off = served.reports[0], served.reports[-1]
    best_on = max(lv.inferences_per_s for lv in on.levels)
    best_off = max(lv.inferences_per_s for lv in off.levels)
    return "\n".join(
        [
            "",
            "",
            f"### Under load: `{served.model}` in tritonserver 2.51 (stand-in onnxruntime backend)",
            "",
            f"The served answer to the request example matches onnxruntime on the same file: max abs difference "
            f"{served.max_abs_diff:.2e} (limit 1e-05). Closed loop at each concurrency, {on.warmup_s:g} s warm-up, "
            f">= {on.window_s:g} s (and >= 4 answers per client) measured; request {', '.join(f'{n} {s}' for n, s in on.request_shapes.items())}. "
            f"Best throughput: {best_on:.0f} inferences/s with dynamic batching, {best_off:.0f} without "
            f"({best_on / best_off:.2f}x). The server's own batch size is Triton's inferences per execution.",
            "",
            to_markdown(served.reports),
            "![throughput vs latency](bench/loadtest.png)",
        ]
    )


def _reproduce_section(settings: RunSettings) -> str:
    q, out, model = shlex.quote, settings.out, settings.model
    trt = f" --trt-target {settings.trt_target}" if settings.trt_target else ""
    shapes = f"--batch-sizes {settings.batch_sizes} --seq-lens {settings.seq_lens}"
    # the precisions as run, so the lines record what it recorded on any CPU (run's defaults depend on this one)
    ov = f" --openvino-precision {settings.openvino_precision}" if settings.openvino_precision else ""
    return "\n".join(
        [
            f"attnkit run {q(model)} --out {q(str(out))} --force --precision {settings.precision}{ov} "
            f"--target {settings.target} {shapes} --warmup {settings.warmup} --min-iterations {settings.min_iterations} "
            f"--min-seconds {settings.min_seconds}{trt}" + (" --serve" if settings.serve else ""),
            "# or step by step:",
            f"attnkit export {q(model)} --out {q(str(out))} --force --format {','.join(settings.formats)} "
            f"--precision {settings.precision}{ov} --target {settings.target}{trt}"
            + (" --generate" if settings.generate else ""),
            f"attnkit verify {q(str(out))}",
            f"attnkit bench {q(str(out))} --precision {settings.precision} {shapes} --out {q(str(out / 'bench'))}",
            *(
                [
                    f"attnkit bench-generate {q(str(out))} --prompt-lengths 32 --new-tokens 32,128 --repeats 2 "
                    f"--out {q(str(out / 'bench'))}"
                ]  # fmt: skip
                if settings.generate
                else []
            ),
            f"attnkit package {q(str(out))} --triton {q(str(out / 'triton'))} --tfserving {q(str(out / 'tfserving'))} --force",
        ]
    )


def _write_report(result: RunResult, settings: RunSettings) -> None:
    """report.md from :data:`REPORT`; each section is rendered by one small function above."""
    from .exporters.manifest import Manifest, write_text_atomic

    manifest = Manifest.load(settings.out)
    failures = "".join(f"- {f}\n" for f in result.failures)
    text = REPORT.substitute(
        name=manifest.spec.name,
        created=manifest.created,
        version=manifest.attnkit,
        failures=f"## Failures\n\n{failures}\n" if failures else "",
        artifacts="\n".join(
            f"| {a.format} | [{a.path}]({a.path}) | {a.precision} | {a.bytes} | `{a.sha256[:16]}…` |"
            for a in manifest.artifacts
        ),
        trt_note=f"\nTensorRT: {settings.trt_note}.\n" if settings.trt_note else "",
        hardware=_hardware_section(manifest, settings, result.warnings),
        agreement=_agreement_markdown(result.verify_report) if result.verify_report else "not run",
        benchmark=_benchmark_section(result.bench_report),
        generation=_generation_section(result),
        attention=result.attention_note or "![per-head attention weights, first layer](attention.png)",
        serving=_serving_section(settings.out, result.packaged) + _served_section(result.served),
        environment=json.dumps(result.bench_report.environment if result.bench_report is not None else {}, indent=2),
        reproduce=_reproduce_section(settings),
    )
    write_text_atomic(result.report, text, flag="--out")
