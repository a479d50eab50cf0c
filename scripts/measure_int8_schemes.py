"""Accuracy and speed of every int8 scheme on this machine (the evidence behind attnkit.core.targets).

    python scripts/measure_int8_schemes.py encoder-tiny encoder-base --batch 8 --seq 128

For each preset: export the fp32 ONNX once, lower it with every scheme (per-tensor and
per-channel), and measure against the eager fp32 Keras model on fresh inputs at two shapes
(relative L2, cosine) and the median latency against onnxruntime fp32 at --batch x --seq, all in
one run. Prints a markdown table (what BENCHMARKS.md quotes) with the machine's CPU features.

    python scripts/measure_int8_schemes.py encoder-base --mixed wv,dense --mixed wv,dense,ffn_outer

    python scripts/measure_int8_schemes.py gpt2-small.keras llama3-small.keras --gemm

``--gemm`` adds rows that lower the ``Gemm`` weights too: tf2onnx writes Keras's ``EinsumDense`` (the attention
projections of keras.layers.MultiHeadAttention and of keras-hub models) as ``Gemm(x, W, transB=1)``, which
onnxruntime's quantisers (MatMul only) leave in fp32. Rewritten as MatMul first (`gemm_as_matmul`), then: U8U8
per tensor and per channel, and weight-only q8 and q4 beside the MatMul-only q8/q4 attnkit writes (file size
in the scheme column).

``--mixed KINDS`` adds a row per value (per-tensor): reduce-range U8S8 on every weight MatMul except those of
the comma-separated layer kinds (matched in the node names: wq, wk, wv, dense, ffn_inner, ffn_outer), which
get U8U8. Both are exact on every x86-64 CPU; the question is whether the mix is faster than U8U8 and
still within the tolerance where reduce-range alone is not.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path


def median_ms(session, feeds, seconds: float) -> float:
    session.run(None, feeds)
    times, start = [], time.perf_counter()
    while len(times) < 5 or time.perf_counter() - start < seconds:
        t0 = time.perf_counter()
        session.run(None, feeds)
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def to_mixed(fp32, u8u8_kinds: list[str]):
    """Reduce-range U8S8 on the weight MatMuls, U8U8 on those whose name holds ``/<kind>_1/`` or ``/<kind>/``:
    two passes of onnxruntime's quantize_dynamic, each on its own nodes."""
    import logging

    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    from attnkit.exporters.precision import weight_matmuls

    names = weight_matmuls(fp32)
    keep = [n for n in names if any(f"/{k}_1/" in n or f"/{k}/" in n for k in u8u8_kinds)]
    logging.getLogger().setLevel(logging.ERROR)
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "fp32.onnx"
        onnx.save(fp32, src)
        passes = (
            (False, [n for n in names if n not in keep], QuantType.QInt8, True),
            (True, keep, QuantType.QUInt8, False),
        )
        for last, nodes, weight, reduce_range in passes:
            dst = Path(tmp) / f"{int(last)}.onnx"
            if nodes:
                quantize_dynamic(src, dst, op_types_to_quantize=["MatMul"], nodes_to_quantize=nodes,
                                 reduce_range=reduce_range, weight_type=weight)  # fmt: skip
                src = dst
        return onnx.load(src)


def gemm_as_matmul(model):
    """``Gemm`` with a constant weight (an initializer, or a Reshape of one) as ``MatMul``, by onnxscript's
    rewriter (its own ``gemm_to_matmul_add_rule`` wants Reshapes around, a bias and no transB)."""
    import numpy as np
    import onnx_ir as ir
    import onnx_ir.passes.common as common
    from onnxscript import optimizer
    from onnxscript.rewriter import pattern

    def attrs(y) -> dict:
        return {k: v.value for k, v in y.producer().attributes.items()}

    def weight(b):
        if b.const_value is not None:
            return b.const_value.numpy()
        node = b.producer()
        if node is not None and node.op_type == "Reshape" and all(v.const_value is not None for v in node.inputs):
            return node.inputs[0].const_value.numpy().reshape(node.inputs[1].const_value.numpy())
        return None

    def plain(context, b, y, **_):
        a = attrs(y)
        return not a.get("transA", 0) and a.get("alpha", 1.0) == 1.0 and weight(b) is not None

    def matmul(op, a, b, y):
        w = weight(b)
        w = np.ascontiguousarray(w.T if attrs(y).get("transB", 0) else w)
        return op.MatMul(a, op.Constant(value=ir.tensor(w)))

    rules = [
        pattern.RewriteRule(
            lambda op, a, b: op.Gemm(a, b, _allow_other_attributes=True, _outputs=["y"]), matmul, plain
        ),
        pattern.RewriteRule(
            lambda op, a, b, c: op.Gemm(a, b, c, _allow_other_attributes=True, _outputs=["y"]),
            lambda op, a, b, c, y: op.Add(matmul(op, a, b, y), c),
            lambda context, c, y, **v: plain(context, y=y, **v) and attrs(y).get("beta", 1.0) == 1.0,
        ),
    ]
    graph = ir.serde.deserialize_model(model)
    optimizer.fold_constants(graph)
    count = pattern.RewriteRuleSet(rules).apply_to_model(graph)
    common.LiftConstantsToInitializersPass(size_limit=0)(graph)  # weights as initializers, as the quantisers read
    common.RemoveUnusedNodesPass()(graph)
    return ir.serde.serialize_model(graph), count


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("presets", nargs="+")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seq", type=int, default=128)
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--mixed", action="append", default=[], metavar="KINDS", help="U8U8 kinds, reduce-range the rest")
    ap.add_argument("--gemm", action="store_true", help="also lower the Gemm weights (EinsumDense), and q8/q4 rows")
    args = ap.parse_args()

    import onnx
    import onnxruntime as ort

    import attnkit
    from attnkit.core.compare import DEFAULT_TOLERANCES, compare_outputs
    from attnkit.core.machine import cpu
    from attnkit.core.targets import INT8_SCHEMES, host_class
    from attnkit.exporters.precision import to_int8, to_weight_only
    from attnkit.runtimes.base import Source
    from attnkit.runtimes.registry import get_runner

    info = cpu()
    print(f"CPU: {info.brand}; class {host_class(info.features)}; features: {', '.join(sorted(info.features))}")
    print(f"onnxruntime {ort.__version__}; shapes: accuracy at 2x45 and {args.batch}x{args.seq}; speed at the latter\n")
    print("| preset | scheme | per-channel | rel L2 (worst) | cosine (worst) | within tolerance | x onnxruntime fp32 |")
    print("|---|---|---|---:|---:|---|---:|")
    for preset in args.presets:
        with tempfile.TemporaryDirectory() as tmp:
            out = attnkit.export(preset, Path(tmp) / "e", formats="onnx", check=False).out
            source = Source(out)
            spec = source.spec
            shapes = [(2, 45), (args.batch, args.seq)]
            feeds = {s: spec.sample_feeds(*s, seed=100 + i) for i, s in enumerate(shapes)}
            with get_runner("keras")(source) as ref_runner:
                ref = {s: ref_runner.infer(f) for s, f in feeds.items()}
            fp32 = onnx.load(out / "model.onnx")
            base = ort.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
            base_ms = median_ms(base, feeds[shapes[-1]], args.seconds)
            candidates = [(scheme.name, per_channel, to_int8, (per_channel, scheme))
                          for scheme in INT8_SCHEMES.values() for per_channel in (False, True)]  # fmt: skip
            for kinds in args.mixed:
                candidates.append((f"reduce-range, u8u8 on {kinds}", False, to_mixed, (kinds.split(","),)))
            if args.gemm:
                gemm, rewritten = gemm_as_matmul(fp32)
                for per_channel in (False, True):
                    candidates.append((f"u8u8 + {rewritten} Gemm", per_channel,
                                       lambda _m, g, pc: to_int8(g, pc, INT8_SCHEMES["u8u8"]), (gemm, per_channel)))  # fmt: skip
                for precision in ("q8", "q4"):
                    candidates.append((precision, True, to_weight_only, (precision,)))
                    candidates.append((f"{precision} + {rewritten} Gemm", True, lambda _m, g, p: to_weight_only(g, p),
                                       (gemm, precision)))  # fmt: skip
            for name, per_channel, make, how in candidates:
                lowered = make(fp32, *how)
                if args.gemm:
                    name = f"{name} ({lowered.ByteSize() / 1e6:.1f} MB)"
                sess = ort.InferenceSession(lowered.SerializeToString(), providers=["CPUExecutionProvider"])
                names = [o.name for o in sess.get_outputs()]
                worst_l2, worst_cos, ok = 0.0, 1.0, True
                for s, f in feeds.items():
                    got = dict(zip(names, sess.run(names, f)))
                    tolerance = DEFAULT_TOLERANCES[name[:2] if name[:2] in ("q8", "q4") else "int8"]
                    for a in compare_outputs(ref[s], got, tolerance):
                        worst_l2, worst_cos, ok = max(worst_l2, a.rel_l2), min(worst_cos, a.cosine), ok and a.passed
                ms = median_ms(sess, feeds[shapes[-1]], args.seconds)
                print(
                    f"| {preset} | {name} | {'yes' if per_channel else 'no'} | {worst_l2:.3g} | "
                    f"{worst_cos:.5f} | {'yes' if ok else 'NO'} | {base_ms / ms:.2f} |",
                    flush=True,
                )


if __name__ == "__main__":
    main()
