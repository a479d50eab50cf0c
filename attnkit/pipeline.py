"""run(MODEL): export -> verify -> bench -> package, and a report.md linking every file it wrote.

A failure in one stage or backend is written into the report and does not lose the others.
"""

from __future__ import annotations

import json
import shlex
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from .errors import AgreementError


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
    target: str = "portable"
    precision_notes: list[str] = field(default_factory=list)


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


def _agreement_markdown(report) -> str:
    lines = [
        "| backend | precision | shape | output | max abs | rel L2 | cosine | result |",
        "|---|---|---|---|---:|---:|---:|---|",
    ]
    for r in report.results:
        shape = f"{r.batch}x{r.seq}"
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
    batch_sizes: str = "1,8",
    seq_lens: str = "128",
    min_seconds: float = 1.0,
    imports: tuple[str, ...] = (),
    seed: int = 0,
    unsafe: bool = False,
    progress: Callable[[str], None] | None = None,
) -> RunResult:
    """Export every format available here, verify, benchmark, package, and write ``out/report.md``.

    TensorRT plans are built when a GPU is present or ``trt_target`` names an architecture.
    ``precision`` defaults to the precisions native to this machine (:func:`attnkit.targets.native_precisions`);
    ``target`` is export's ``--target`` (default ``portable``).
    """
    from .benchmark import report as bench_render
    from .benchmark.harness import StoppingRule
    from .benchmark.run import bench, parse_int_list
    from .export_api import export
    from .exporters.tensorrt import detect
    from .machine import gpu_unavailable_reason
    from .package import package
    from .targets import native_precisions

    parse_int_list(batch_sizes, "--batch-sizes")  # bad benchmark shapes are refused before anything is written
    parse_int_list(seq_lens, "--seq-lens")
    say = progress or (lambda _m: None)
    out = Path(out)
    precision_notes: list[str] = []
    if not precision:
        precisions, precision_notes = native_precisions()
        precision = ",".join(precisions)
        for note in precision_notes:
            say(note)
    formats = ["savedmodel", "onnx"]
    trt_note = None
    if detect() is None:
        trt_note = "not built: no TensorRT Python package"
    elif trt_target or not gpu_unavailable_reason():
        formats.append("tensorrt")
    else:
        trt_note = f"not built: {gpu_unavailable_reason()}, and no --trt-target was given"
    failures: list[str] = []
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
            rule=StoppingRule(0.5, 5, min_seconds),
            seed=seed,
            unsafe=unsafe,
            progress=say,
        )
        result.files += bench_render.write_all(bench_report, out / "bench")
        result.warnings += [w for w in bench_report.hardware if w not in result.warnings]
    except Exception as e:  # keep going: the report says what failed
        failures.append(f"bench: {type(e).__name__}: {e}")
    say("attention heatmaps")
    try:
        from .attention_maps import capture, plot
        from .runtimes.base import Source

        source = Source(out, unsafe=unsafe)
        seq = min(32, source.spec.max_sequence or 32)
        maps = capture(source.keras_model, source.spec, source.spec.sample_feeds(1, seq, seed), 0)
        plot(maps, out / "attention.png", title=source.spec.name)
        result.files.append(out / "attention.png")
    except Exception as e:
        failures.append(f"attention heatmaps: {type(e).__name__}: {e}")
    say("package")
    try:
        result.packaged = package(out, triton=out / "triton", tfserving=out / "tfserving", force=True, progress=say)
    except Exception as e:  # reported in report.md, like every other stage's failure
        failures.append(f"package: {type(e).__name__}: {e}")
    result.failures, result.bench_report = failures, bench_report
    settings = RunSettings(
        model,
        out,
        formats,
        precision,
        batch_sizes,
        seq_lens,
        min_seconds,
        trt_target,
        trt_note,
        target or "portable",
        precision_notes,
    )
    _write_report(result, settings)
    return result


def _write_report(result: RunResult, settings: RunSettings) -> None:
    from .benchmark.report import to_markdown
    from .exporters.manifest import Manifest, write_text_atomic

    out, model, q = settings.out, settings.model, shlex.quote
    verify_report, bench_report, packaged = result.verify_report, result.bench_report, result.packaged
    precision, batch_sizes, seq_lens = settings.precision, settings.batch_sizes, settings.seq_lens
    min_seconds, trt_target, formats, trt_note = (
        settings.min_seconds,
        settings.trt_target,
        settings.formats,
        settings.trt_note,
    )
    manifest = Manifest.load(out)
    trt = f" --trt-target {trt_target}" if trt_target else ""
    lines = [
        f"# attnkit report: {manifest.spec.name}",
        "",
        f"Created {manifest.created} by attnkit {manifest.attnkit}.",
        "",
    ]
    if result.failures:
        lines += ["## Failures", ""] + [f"- {f}" for f in result.failures] + [""]
    lines += ["## Artifacts", "", "| format | path | precision | bytes | sha256 |", "|---|---|---|---:|---|"]
    lines += [
        f"| {a.format} | [{a.path}]({a.path}) | {a.precision} | {a.bytes} | `{a.sha256[:16]}…` |"
        for a in manifest.artifacts
    ]
    if trt_note:
        lines += ["", f"TensorRT: {trt_note}."]
    lines += ["", "## Hardware", ""]
    if manifest.target:
        lines += [f"- Target: `{manifest.target['name']}` ({manifest.target['cpu_class']}). {manifest.target['why']}."]
    if manifest.machine:
        lines += [
            f"- Exported on: {manifest.machine['cpu']} ({manifest.machine['class']}; "
            f"{', '.join(manifest.machine['features'])})."
        ]
    lines += [f"- {note}." for note in settings.precision_notes]
    lines += [f"- **Warning:** {w}" for w in result.warnings]
    lines += ["", "## Agreement with the eager fp32 Keras model", ""]
    lines += [_agreement_markdown(verify_report) if verify_report else "not run", ""]
    lines += ["## Benchmark (one run, same machine)", ""]
    if bench_report is not None:
        lines += [
            to_markdown(bench_report.to_dict(raw=False)),
            "",
            "![throughput vs batch size](bench/throughput.png)",
            "",
            "Raw data: [bench/results.json](bench/results.json), [bench/results.csv](bench/results.csv).",
            "",
        ]
        warnings = bench_report.warnings()
        lines += [f"- warning: {w}" for w in warnings] + ([""] if warnings else [])
    else:
        lines += ["not run (see Failures)", ""]
    lines += ["## Attention", "", "![per-head attention weights, first layer](attention.png)", ""]
    lines += ["## Serving", ""]
    if packaged:
        lines += ["Triton model repository: [triton/](triton/)", ""]
        lines += [
            f"- `{m['name']}` ({m['platform']}, {m['precision']}) from `{m['artifact']}`" for m in packaged.triton
        ]
        lines += ["", "```bash", f"tritonserver --model-repository={q(str((out / 'triton').resolve()))}"]
        if "triton" in packaged.requests:
            req = Path(packaged.requests["triton"])
            model_name = req.stem.removeprefix("request_")
            lines += [f"curl -s localhost:8000/v2/models/{model_name}/infer -d @{q(str(req.resolve()))}"]
        lines += ["```", ""]
        for m in packaged.tfserving:
            if m["precision"] == "fp32":
                base = Path(m["path"]).parent.resolve()
                lines += [
                    "TF Serving:",
                    "",
                    "```bash",
                    f"tensorflow_model_server --rest_api_port=8501 --model_name={m['name']} "
                    f"--model_base_path={q(str(base))}",
                ]
                if "tfserving" in packaged.requests:
                    lines += [
                        f"curl -s localhost:8501/v1/models/{m['name']}:predict "
                        f"-d @{q(str(Path(packaged.requests['tfserving']).resolve()))}"
                    ]
                lines += ["```", ""]
    env = bench_report.environment if bench_report is not None else {}
    lines += ["## Environment", "", "```json", json.dumps(env, indent=2), "```", ""]
    lines += [
        "## Reproduce",
        "",
        "```bash",
        f"attnkit run {q(model)} --out {q(str(out))} --force --precision {precision} --target {settings.target} "
        f"--batch-sizes {batch_sizes} --seq-lens {seq_lens} --min-seconds {min_seconds}{trt}",
        "# or step by step:",
        f"attnkit export {q(model)} --out {q(str(out))} --force --format {','.join(formats)} --precision {precision} "
        f"--target {settings.target}{trt}",
        f"attnkit verify {q(str(out))}",
        f"attnkit bench {q(str(out))} --precision {precision} --batch-sizes {batch_sizes} --seq-lens {seq_lens} "
        f"--out {q(str(out / 'bench'))}",
        f"attnkit package {q(str(out))} --triton {q(str(out / 'triton'))} --tfserving {q(str(out / 'tfserving'))} --force",
        "```",
        "",
    ]
    write_text_atomic(result.report, "\n".join(lines), flag="--out")
