"""Measure the ONNX graph passes on an export directory, with the bench harness.

Variants of the fp32 graph: tf2onnx's raw output, its LayerNorms fused only (attnkit before the GELU
rewrite), attnkit's ``model.onnx`` (both passes), onnxruntime's own offline-optimised model
(``optimized_model_filepath``, ORT_ENABLE_EXTENDED), and onnxruntime.transformers' BERT fusions
(``optimize_model``, opt_level 0); then the LayerNorm-only graph and ``model.onnx`` lowered to int8 with the
export's own scheme. For each: op counts in the file and in onnxruntime's session graph (``Gelu`` is fused
there), session creation time, and latency at one shape. Prints markdown; ``--json`` writes the data.

    python scripts/measure_onnx_passes.py DIR --batch 8 --seq 128 [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import onnx
import onnxruntime as ort

from attnkit.benchmark.harness import StoppingRule, measure
from attnkit.core.targets import INT8_SCHEMES
from attnkit.exporters.onnx import convert
from attnkit.exporters.passes import fuse_layernorm, op_counts
from attnkit.exporters.precision import to_int8
from attnkit.runtimes.base import Source
from attnkit.tracing import trace

SHOWN = (
    "LayerNormalization",
    "SkipLayerNormalization",
    "Attention",
    "MultiHeadAttention",
    "Gelu",
    "FastGelu",
    "BiasGelu",
    "FusedMatMul",
    "MatMul",
    "GlobalAveragePool",
    "Erf",
)


def session(path: str, level=ort.GraphOptimizationLevel.ORT_ENABLE_ALL, save_to: str | None = None):
    options = ort.SessionOptions()
    options.graph_optimization_level = level
    options.log_severity_level = 3
    if save_to:
        options.optimized_model_filepath = save_to
    t0 = time.perf_counter()
    s = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
    return s, time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("dir")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seq", type=int, default=128)
    ap.add_argument("--min-seconds", type=float, default=5.0)
    ap.add_argument("--json")
    args = ap.parse_args()
    source = Source(args.dir)
    spec = source.spec
    cfg = source.manifest.model.get("config", {})
    feeds = spec.sample_feeds(args.batch, args.seq, seed=0)
    rule = StoppingRule(warmup_s=1.0, min_iterations=10, min_seconds=args.min_seconds)
    workdir = tempfile.TemporaryDirectory(prefix="attnkit-passes-")  # removed when the script ends (its finalizer)
    tmp = Path(workdir.name)
    variants = {}
    raw = convert(trace(source.keras_model, spec), spec, spec.opset)
    onnx.save(raw, tmp / "raw.onnx")
    variants["tf2onnx raw"] = tmp / "raw.onnx"
    layernorm_only = fuse_layernorm(raw)[0]
    onnx.save(layernorm_only, tmp / "ln.onnx")
    variants["LayerNorm fused only (Erfc GELU)"] = tmp / "ln.onnx"
    model_onnx = "attnkit passes (model.onnx: LayerNorm + GELU)"
    variants[model_onnx] = source.path("onnx", "fp32")
    session(
        str(variants[model_onnx]),
        ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
        save_to=str(tmp / "ort.onnx"),
    )
    variants["onnxruntime offline-optimised (EXTENDED)"] = tmp / "ort.onnx"
    from onnxruntime.transformers.optimizer import optimize_model

    optimized = optimize_model(
        str(variants[model_onnx]),
        model_type="bert",
        num_heads=cfg.get("num_heads", 0),
        hidden_size=cfg.get("d_model", 0),
        opt_level=0,
    )
    optimized.save_model_to_file(str(tmp / "bert.onnx"))
    variants["onnxruntime.transformers bert fusions"] = tmp / "bert.onnx"
    int8 = source.manifest.artifact("onnx", "int8")
    if int8 is not None:  # the export's own int8 scheme, on the graph before and after the GELU rewrite
        scheme = INT8_SCHEMES[int8.extra["int8_scheme"]]
        for name, graph in (("LayerNorm fused only", layernorm_only), ("model.onnx", onnx.load(variants[model_onnx]))):
            onnx.save(to_int8(graph, int8.extra.get("per_channel"), scheme), tmp / f"{len(variants)}.int8.onnx")
            variants[f"{name}, int8 {scheme.name}"] = tmp / f"{len(variants)}.int8.onnx"
    rows = []
    for name, path in variants.items():
        counts = op_counts(onnx.load(path))
        session(str(path), save_to=str(tmp / "session.onnx"))
        in_session = op_counts(onnx.load(tmp / "session.onnx"))
        counts["Gelu"] = f"{counts['Gelu']} ({in_session['Gelu']} in session)"
        s, load_s = session(str(path))
        lat = measure(lambda s=s: s.run(None, feeds), rule)
        rows.append(
            {
                "variant": name,
                "load_s": load_s,
                "p50_ms": lat.p50,
                "mean_ms": lat.mean,
                "cv": lat.cv,
                "ops": {k: counts.get(k, 0) for k in SHOWN},
            }
        )
    print(
        f"{spec.name}, batch {args.batch}, seq {args.seq}, onnxruntime {ort.__version__} CPU, all ORT sessions "
        "at ORT_ENABLE_ALL\n"
    )
    print("| variant | session load s | p50 ms | mean ms | CV | " + " | ".join(SHOWN) + " |")
    print("|---|---:|---:|---:|---:|" + "---:|" * len(SHOWN))
    for r in rows:
        print(
            f"| {r['variant']} | {r['load_s']:.2f} | {r['p50_ms']:.2f} | {r['mean_ms']:.2f} | {r['cv']:.1%} | "
            + " | ".join(str(r["ops"][k]) for k in SHOWN)
            + " |"
        )
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
