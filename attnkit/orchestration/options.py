"""What ``export`` is asked for, checked before any work: formats, precisions (and the OpenVINO IR's), TensorRT
options, and the precisions a --generate export adds by default for this machine."""

from __future__ import annotations

from pathlib import Path

from ..core.errors import AttnkitError
from ..core.names import PLAN_PRECISIONS, PRECISIONS, WEIGHT_ONLY
from ..tracing import canonical_precision

FORMATS = ("savedmodel", "onnx", "openvino", "tensorrt", "triton")
DEFAULT_FORMATS = ("savedmodel", "onnx")


def parse_formats(formats: str | list[str] | tuple[str, ...]) -> tuple[str, ...]:
    items = [f.strip() for f in (formats.split(",") if isinstance(formats, str) else formats) if f.strip()]
    bad = [f for f in items if f not in FORMATS]
    if bad or not items:
        raise AttnkitError(
            f"unknown format {', '.join(bad) or '(empty)'}. Valid formats: {', '.join(FORMATS)}.",
            flag="--format",
            hint="Give a comma-separated list, e.g. --format savedmodel,onnx.",
        )
    return tuple(dict.fromkeys(items))


def _canonical(precision: str | tuple[str, ...]) -> tuple[str, ...]:
    """``"fp32,FP16,fp32"`` or a tuple -> canonical names, in order, once each."""
    items = precision.split(",") if isinstance(precision, str) else list(precision)
    return tuple(dict.fromkeys(canonical_precision(p.strip(), PRECISIONS) for p in items if p.strip()))


def parse_precisions(precision: str | tuple[str, ...], fmts: tuple[str, ...]) -> tuple[str, ...]:
    """``"fp32,fp16,int8"`` -> canonical names, checked against the formats that can hold them."""
    from ..exporters.precision import BF16_REASON

    precs = _canonical(precision)
    if not precs:
        raise AttnkitError(f"is empty; give a comma list of {', '.join(PRECISIONS)}.", flag="--precision")
    onnx_only = [p for p in precs if p in ("int8",) + WEIGHT_ONLY]
    if onnx_only and "onnx" not in fmts:
        raise AttnkitError(
            f"{', '.join(onnx_only)} is produced on the ONNX graph only.",
            flag="--precision",
            hint="Add onnx to --format, e.g. --format savedmodel,onnx.",
        )
    if "bf16" in precs and "savedmodel" not in fmts and "openvino" not in fmts:
        raise AttnkitError(
            f"a bf16 ONNX graph is not produced: {BF16_REASON}.",
            flag="--precision",
            hint="Add savedmodel (a bf16 SavedModel) or openvino (its IR run in bf16) to --format.",
        )
    return precs


def openvino_precisions(asked, precisions: tuple[str, ...], fmts: tuple[str, ...]) -> tuple[str, ...]:
    """``--openvino-precision``: the OpenVINO IR's precisions, a subset of ``--precision`` (default: all of it)."""
    if asked is None:
        return precisions
    flag = "--openvino-precision"
    if "openvino" not in fmts:
        raise AttnkitError("applies to the OpenVINO IR only.", flag=flag, hint="Add openvino to --format.")
    chosen = _canonical(asked)
    outside = [p for p in chosen if p not in precisions]
    if not chosen or outside:
        raise AttnkitError(
            f"{', '.join(outside) or 'nothing'} is not among --precision's {','.join(precisions)}.",
            flag=flag,
            hint="Give a subset of --precision, e.g. --precision fp32,fp16,int8 --openvino-precision fp32,int8.",
        )
    return chosen


def check_tensorrt_options(fmts, precisions, trt_target, batch, seq, trt_cache) -> None:
    """TensorRT options without --format tensorrt, or a plan precision TensorRT builds none of: refused."""
    if "tensorrt" not in fmts:
        given = [
            f
            for f, v in (("--trt-target", trt_target), ("--batch", batch), ("--seq", seq), ("--trt-cache", trt_cache))
            if v
        ]
        if given:
            raise AttnkitError(
                "applies to TensorRT plans only, and --format has no tensorrt.",
                flag=given[0],
                hint="Add tensorrt to --format, or drop the option.",
            )
        return
    if not any(p in PLAN_PRECISIONS for p in precisions):
        raise AttnkitError(
            f"TensorRT plans are built for {', '.join(PLAN_PRECISIONS)}; asked for {', '.join(precisions)}. "
            "int8 plans need static Q/DQ quantisation, which attnkit does not produce.",
            flag="--precision",
            hint="Add fp32 or fp16 to --precision.",
        )


def check_addition(root: Path, requested: tuple[str, ...], out) -> None:
    """What may be added to an existing export directory: TensorRT plans, in place."""
    if set(requested) != {"tensorrt"}:
        raise AttnkitError(
            f"`{root}` is an export directory; only --format tensorrt can be added to it (asked: {','.join(requested)}).",
            flag="--format",
            hint="Export MODEL again into a new --out for other formats.",
        )
    if out is not None and Path(out).resolve() != root.resolve():
        raise AttnkitError(
            f"plans are added to `{root}` in place, not written to `{out}`.",
            flag="--out",
            hint=f"Drop --out, or copy the directory first (cp -r {root} {out}) and add plans to the copy.",
        )


def openvino_decode_default(opts, fmts: tuple[str, ...]) -> tuple[str, ...]:
    """The precisions added to the OpenVINO decode step of a ``--generate`` export with OpenVINO IR and no
    ``--precision``/``--openvino-precision`` given: ``fp16`` (the step with its weights stored in f16, computed in
    f32) on every CPU, and ``bf16`` first where this machine's OpenVINO plugin computes a bf16 hint in bf16 (asked of
    it, :func:`attnkit.core.machine.openvino_compiles`); else ``()``. The forward IR is not touched.

    Why: a decode step is bound by the bytes of weights it streams. With f16 weights (f32 compute, an f16 cache, more
    exact than bf16) mistral-160m decoded 1.89x faster than in f32 on an AVX2 EPYC (OpenVINO GenAI, one interleaved
    run) and its step ran 1.9x faster on AMD Zen 4 (BENCHMARKS.md). OpenVINO runs bf16 by default on a CPU with it,
    so that is what a user of OpenVINO GenAI gets there (1.4x f32's step on Zen 4); on a CPU without it a bf16 row
    would be the fp32 row again. bf16 costs no file (the fp32 IR under a bf16 hint); fp16 is a second IR of half
    the size. Both are checked like any row (their logits tolerance, tokens reported); where one fails, the export
    drops it with a warning (``attnkit.orchestration.export._drop_failed_default``) instead of failing, since
    nobody asked for it."""
    if opts.precision is not None or opts.openvino_precision is not None or not opts.generate:
        return ()
    if "openvino" not in fmts:
        return ()
    from ..core.machine import openvino_compiles

    return ("bf16", "fp16") if openvino_compiles("bf16") == "bf16" else ("fp16",)
