"""export(MODEL): trace once per format, write every artifact atomically, check agreement."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ..checks.agreement import VerifyReport, verify
from ..core.errors import AgreementError, AttnkitError
from ..core.names import (
    PLAN_PRECISIONS,
)
from ..exporters.manifest import Manifest, atomic_directory, check_writable_out
from .options import (
    DEFAULT_FORMATS,
    check_addition,
    check_tensorrt_options,
    openvino_decode_default,
    openvino_precisions,
    parse_formats,
    parse_precisions,
)
from .writers import plan_name, tensorrt_plan, write_artifacts, write_tensorrt


@dataclass
class ExportResult:
    """What ``export`` produced: the directory, its manifest and the export-time agreement check."""

    out: Path
    manifest: Manifest
    report: VerifyReport | None


@dataclass(frozen=True)
class ExportOptions:
    """Everything ``export`` can be asked for besides MODEL and --out (the CLI's flags, by name)."""

    formats: str | tuple[str, ...] = DEFAULT_FORMATS
    #: None: fp32, and for a --generate export with OpenVINO IR also the decode step with f16 weights, and in bf16 where
    #: this machine's OpenVINO plugin computes a bf16 hint in bf16 (:func:`attnkit.orchestration.options.openvino_decode_default`)
    precision: str | tuple[str, ...] | None = None
    opset: int = 17
    imports: tuple[str, ...] = ()
    seed: int = 0
    force: bool = False
    unsafe: bool = False
    check: bool = True
    fuse: bool = True
    per_channel: bool | None = None
    target: str | None = None
    trt_target: str | None = None
    batch: tuple[str, ...] = ()
    seq: tuple[str, ...] = ()
    trt_cache: str | Path | None = None
    atol: float | dict | None = None
    rtol: float | dict | None = None
    generate: bool = False
    #: the OpenVINO IR's precisions when not ``precision``'s (``run``'s defaults: those OpenVINO computes
    #: natively on this CPU, :func:`attnkit.core.targets.openvino_defaults`)
    openvino_precision: str | tuple[str, ...] | None = None
    #: the user's inputs (an .npz, :mod:`attnkit.core.data`): int8 calibrates on its calibration rows, the check
    #: also runs on its held-out rows with a task metric that must keep ``accuracy_target`` of fp32's
    data: str | Path | None = None
    accuracy_target: float | None = None


def export(
    model: str,
    out: str | Path | None = None,
    *,
    options: ExportOptions | None = None,
    progress: Callable[[str], None] | None = None,
    **overrides,
) -> ExportResult:
    """Export a preset or ``.keras`` model to SavedModel, ONNX, OpenVINO IR and/or TensorRT plans, with a manifest.

    Every field of :class:`ExportOptions` can be given as a keyword (``precision="fp32,int8"``), or
    all of them at once as ``options``; keywords override ``options``.

    Args:
        model: preset name or ``.keras`` path.
        out: export directory; default ``artifacts/<name>``.
        formats: subset of ``savedmodel``, ``onnx``, ``openvino``, ``tensorrt`` and ``triton`` (a model
            repository of the others).
        precision: comma list of ``fp32``, ``bf16``, ``fp16``, ``int8`` [default: fp32; with ``generate`` and
            OpenVINO IR, the decode step with f16 weights too, and in bf16 where OpenVINO computes bf16 natively here]. A SavedModel is traced under
            each TF policy listed (``savedmodel/1`` for fp32, ``savedmodel_<p>/1`` otherwise); the ONNX
            graph is exported float32 (``model.onnx``) and lowered on the graph to
            ``model.fp16.onnx`` / ``model.int8.onnx``.
        opset: ONNX opset.
        imports: modules registering custom layers of a ``.keras`` model.
        seed: weight seed (presets) and base seed of the check's random inputs.
        force: replace an existing non-empty ``out``.
        unsafe: allow unsafe Keras deserialisation.
        check: run :func:`attnkit.verify` on the artifacts before moving them into place.
        fuse: fuse decomposed LayerNorms into opset-17 ``LayerNormalization`` in the ONNX graphs.
        per_channel: int8 weight scales per output channel (True) or per tensor (False); default the target's
            int8 scheme's (per channel for U8U8 and U8S8).
        target: where the artifacts will run: ``portable`` (default: every x86-64 CPU with AVX2, and
            GPUs), ``host`` (this machine), a CPU class (``cpu-avx2``, ``cpu-avx512``,
            ``cpu-avx512-vnni``, ``cpu-amx``) or a TensorRT architecture (``sm89``). It decides the
            int8 scheme (see :mod:`attnkit.core.targets`); the manifest records it, the scheme and why.
        trt_target: GPU architecture a TensorRT plan is built for (``sm89``...); default: the local GPU.
        batch, seq: ``MIN:OPT:MAX`` ranges, one TensorRT optimisation profile per pair.
        trt_cache: timing-cache file reused across builds (default ``DIR/trt_timing.cache``).
        generate: also export the decode step with a KV cache (decoder and seq2seq models): SavedModel
            signatures ``prefill``/``decode_step``/``generate`` (+ ``encode``) and
            ``decoder_with_past*.onnx`` (+ ``encoder*.onnx``); see :mod:`attnkit.generation.export`.

    Returns:
        ExportResult with the directory, manifest and agreement report.

    Raises:
        AttnkitError: bad input (before any work starts).
        AgreementError: an artifact disagrees with the eager model (the directory is still written).
    """
    try:
        opts = dataclasses.replace(options or ExportOptions(), **overrides)
    except TypeError as e:
        raise TypeError(f"export() {e}; options are the fields of ExportOptions") from None
    from ..core.targets import machine_summary
    from ..exporters.onnx import check_opset
    from ..models import classify, resolve

    plan = _plan(opts)
    ref = classify(str(model), flag="MODEL")
    if ref.is_export:
        check_addition(Path(model), plan.requested, out)
        return add_tensorrt(
            model, plan.precisions, trt_target=plan.trt_target, batch=opts.batch, seq=opts.seq,
            trt_cache=opts.trt_cache, force=opts.force, progress=progress,
        )  # fmt: skip
    trt = tensorrt_plan(plan.formats, plan.trt_target)
    if "onnx" in plan.formats:
        check_opset(opts.opset)
    out = Path(out) if out else Path("artifacts") / ref.name
    check_writable_out(out, opts.force)
    say = progress or (lambda _msg: None)

    say(f"building {model}; artifacts for {plan.target.summary()}")
    keras_model, spec, info = resolve(model, seed=opts.seed, imports=opts.imports, unsafe=opts.unsafe)
    info["unsafe"] = opts.unsafe
    decoding = None
    if opts.generate:
        from ..models.keras_hub import decoding_for

        decoding = decoding_for(keras_model)  # refuses a model with no causal decoder before any work
    spec = dataclasses.replace(spec, opset=opts.opset)
    data = None
    if opts.data is not None:
        from ..core.data import load_data
        from ..models.keras_hub import tokenizer_of

        # refused with one line before anything is written; texts are tokenised with the model's own tokenizer
        data = load_data(opts.data, spec, tokenizer=lambda: tokenizer_of(keras_model))
        say(f"your data: {data.record()['split']} ({data.path})")
    if trt:
        from ..exporters.tensorrt import profiles_from

        trt["profiles"] = profiles_from(spec, opts.batch, opts.seq)
    manifest = Manifest(model=info, spec=spec, target=plan.target.to_dict(), machine=machine_summary(),
                        data=data.record() if data is not None else {})  # fmt: skip
    with atomic_directory(out, opts.force) as stage:
        write_artifacts(
            stage, model, keras_model, spec, plan.formats, plan.precisions, manifest, say, opts.fuse,
            opts.per_channel, plan.target, decoding, plan.ov_precisions, data, plan.ov_added,
        )  # fmt: skip
        if trt:
            _write_plans(stage, spec, plan.precisions, manifest, say, trt, opts.trt_cache)
        manifest.write(stage)
        report = _check(stage, out, manifest, opts, decoding is not None, data, say) if opts.check else None
        if report is not None and plan.ov_added:
            _drop_failed_default(stage, manifest, report, plan.ov_added, say)
    if plan.triton:
        from .package import package

        say("packaging the Triton model repository")
        package(out, triton=out / "triton", force=True, progress=say)
    if report is not None and not report.ok_where_fit:
        error = AgreementError(
            f"artifacts in `{out}` disagree with the eager model beyond tolerance; "
            f"see the agreement table, or run: attnkit verify {out}"
        )
        error.report = report
        raise error
    return ExportResult(out, manifest, report)


@dataclass(frozen=True)
class _Plan:
    """What ``export`` will write, validated from its options before any work."""

    requested: tuple[str, ...]  # the formats as asked (``triton`` included)
    formats: tuple[str, ...]  # the artifact formats (ONNX added where plans or IR are built from it)
    triton: bool  # a model repository of the others, made after they are in place
    precisions: tuple[str, ...]
    ov_precisions: tuple[str, ...] | None
    target: object  # attnkit.core.targets.Target
    trt_target: str | None
    ov_added: tuple[str, ...] = ()  # the OpenVINO decode step's default extras (options.openvino_decode_default)


def _plan(opts: ExportOptions) -> _Plan:
    """Formats, precisions and targets checked against each other (a missing package named with its extra)."""
    from ..core.targets import resolve as resolve_target

    requested = parse_formats(opts.formats)
    resolved = resolve_target(opts.target)
    if resolved.trt_target and opts.trt_target and opts.trt_target.lower() != resolved.trt_target:
        raise AttnkitError(
            f"--target {resolved.trt_target} and --trt-target {opts.trt_target} name different GPUs.",
            flag="--trt-target",
            hint="Give one of them.",
        )
    fmts = tuple(f for f in requested if f != "triton") or DEFAULT_FORMATS
    if ("tensorrt" in fmts or "openvino" in fmts) and "onnx" not in fmts:
        fmts = fmts + ("onnx",)  # plans and OpenVINO IR are built from the ONNX graphs
    if "openvino" in fmts:
        from ..exporters.openvino import require

        require()  # a missing package is named (with its extra) before any work
    precisions = parse_precisions("fp32" if opts.precision is None else opts.precision, fmts)
    ov_precisions = openvino_precisions(opts.openvino_precision, precisions, fmts)
    ov_added = openvino_decode_default(opts, fmts)
    check_tensorrt_options(fmts, precisions, opts.trt_target, opts.batch, opts.seq, opts.trt_cache)
    return _Plan(requested, fmts, "triton" in requested, precisions, ov_precisions, resolved,
                 resolved.trt_target or opts.trt_target, ov_added)  # fmt: skip


def _drop_failed_default(stage: Path, manifest: Manifest, report: VerifyReport, added, say) -> None:
    """The OpenVINO decode records of a precision :func:`~attnkit.orchestration.options.openvino_decode_default`
    added, their files (where no other record shares them) and their checks, removed where any of its checks failed,
    with a warning naming the flag that asks for it (then it is checked as asked)."""
    import shutil

    from ..runtimes.registry import format_of

    def ours(c, precision) -> bool:
        return c.precision == precision and format_of(c.backend) == "openvino"

    section = manifest.generation
    for precision in added:
        gen = report.generation.checks if report.generation is not None else []
        if section is None or not any(c.failed for c in gen + report.data_checks if ours(c, precision)):
            continue
        line = (f"openvino {precision} decode left out: its answers were outside {precision}'s tolerance on this "
                f"model; ask for it with --precision fp32,{precision} to see them")  # fmt: skip
        say(f"warning: {line}")
        report.notes.append(line)
        report.generation.checks = [c for c in gen if not ours(c, precision)]
        report.data_checks = [c for c in report.data_checks if not ours(c, precision)]
        dropped = [a for a in section.artifacts if (a.format, a.precision) == ("openvino", precision)]
        section.artifacts = [a for a in section.artifacts if a not in dropped]
        kept = {a.path for a in section.artifacts + manifest.artifacts}
        for path in {a.path for a in dropped} - kept:
            shutil.rmtree(stage / path, ignore_errors=True)
        _record_agreement(manifest, report)
        manifest.write(stage)


def _write_plans(stage: Path, spec, precisions, manifest: Manifest, say, trt: dict, trt_cache) -> None:
    """The forward pass's TensorRT plans and, for a --generate export, the decode step's."""
    cache = Path(trt_cache) if trt_cache else None
    write_tensorrt(stage, spec, precisions, manifest, say, trt, cache)
    if manifest.generation:
        from ..generation.export import write_tensorrt as write_step_plans

        write_step_plans(stage, manifest, precisions, trt, cache, say)


def _check(
    stage: Path, out: Path, manifest: Manifest, opts: ExportOptions, generation: bool, data, say
) -> VerifyReport:
    """verify on the staged export, recorded in its manifest (each artifact's worst agreement and the machine)."""
    say("checking agreement")
    report = verify(
        stage, atol=opts.atol, rtol=opts.rtol, seed=opts.seed + 1000, unsafe=opts.unsafe, progress=say,
        generation={} if generation else None, data=data, accuracy_target=opts.accuracy_target,
    )  # fmt: skip
    report.root = str(out)
    _record_agreement(manifest, report)
    if report.data is not None:
        manifest.data["checks"] = report.to_dict()["data"]["checks"]
    manifest.write(stage)
    for line in report.warnings:
        say(f"warning: {line}")
    return report


def add_tensorrt(
    root: str | Path, precisions, *, trt_target=None, batch=(), seq=(), trt_cache=None, force=False, progress=None
) -> ExportResult:
    """Build TensorRT plans from the ONNX graphs of an existing export directory, in place.

    Each plan, sidecar and the manifest are written atomically; other artifacts are untouched, and an
    existing plan is replaced only with ``force``.
    """
    from ..exporters.precision import onnx_file
    from ..exporters.tensorrt import profiles_from

    root = Path(root)
    manifest = Manifest.load(root)
    manifest.require_integrity(root)
    wanted = [p for p in precisions if p in PLAN_PRECISIONS]
    missing = [p for p in wanted if manifest.artifact("onnx", p) is None]
    if missing:
        raise AttnkitError(
            f"`{root}` has no {', '.join(onnx_file(p) for p in missing)} to build a {', '.join(missing)} plan from.",
            flag="--precision",
            hint=f"Export it first: attnkit export MODEL --format onnx --precision {','.join(missing)} --out NEW",
        )
    existing = [plan_name(p) for p in wanted if (root / plan_name(p)).exists()]
    if existing and not force:
        raise AttnkitError(
            f"`{root}` already has {', '.join(existing)}.", flag="--force", hint="Pass --force to rebuild it."
        )
    trt = tensorrt_plan(("tensorrt",), trt_target)
    trt["profiles"] = profiles_from(manifest.spec, batch, seq)
    write_tensorrt(
        root,
        manifest.spec,
        precisions,
        manifest,
        progress or (lambda _m: None),
        trt,
        Path(trt_cache) if trt_cache else None,
    )
    manifest.write(root)
    return ExportResult(root, manifest, None)


def _record_agreement(manifest: Manifest, report: VerifyReport) -> None:
    """Each artifact's worst agreement, with the machine it was measured on (a result holds there)."""
    from ..core.targets import machine_summary
    from ..runtimes.registry import get_runner

    machine = machine_summary()
    if report.generation is not None:
        manifest.generation.agreement = {
            "machine": machine,
            "prompt_lengths": report.generation.prompt_lengths,
            "max_new_tokens": report.generation.max_new_tokens,
            "checks": {
                c.label: {
                    k: getattr(c, k)
                    for k in ("passed", "token_match", "first_mismatch", "max_abs", "rel_l2", "skipped")
                }
                for c in report.generation.checks
            },
        }
    for (backend, precision), stats in report.summary().items():
        fmt = get_runner(backend).needs
        record = manifest.artifact("keras" if fmt == "keras" else fmt, precision)
        if record is not None:
            record.agreement = {**stats, "backend": backend, "machine": machine}
