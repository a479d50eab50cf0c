"""``run``'s report.md: every section from the data the stages returned (rendered at the edge, as tables are)."""

from __future__ import annotations

import json
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from string import Template


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


def agreement_markdown(report) -> str:
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
    from ..benchmark.report import to_markdown

    if bench_report is None:
        return "not run (see Failures)"
    warnings = "".join(f"- warning: {w}\n" for w in bench_report.warnings())
    from ..benchmark.results import pick_lines

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
    from ..generation.report import to_markdown

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
    from ..serving.report import to_markdown

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


def write_report(result: RunResult, settings: RunSettings) -> None:
    """report.md from :data:`REPORT`; each section is rendered by one small function above."""
    from ..exporters.manifest import Manifest, write_text_atomic

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
        agreement=agreement_markdown(result.verify_report) if result.verify_report else "not run",
        benchmark=_benchmark_section(result.bench_report),
        generation=_generation_section(result),
        attention=result.attention_note or "![per-head attention weights, first layer](attention.png)",
        serving=_serving_section(settings.out, result.packaged) + _served_section(result.served),
        environment=json.dumps(result.bench_report.environment if result.bench_report is not None else {}, indent=2),
        reproduce=_reproduce_section(settings),
    )
    write_text_atomic(result.report, text, flag="--out")
