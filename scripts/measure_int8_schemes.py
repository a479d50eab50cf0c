"""Accuracy and speed of every int8 scheme on this machine (the evidence behind attnkit.targets).

    python scripts/measure_int8_schemes.py encoder-tiny encoder-base --batch 8 --seq 128

For each preset: export the fp32 ONNX once, lower it with every scheme (per-tensor and
per-channel), and measure against the eager fp32 Keras model on fresh inputs at two shapes
(relative L2, cosine) and the median latency against onnxruntime fp32 at --batch x --seq, all in
one run. Prints a markdown table (what BENCHMARKS.md quotes) with the machine's CPU features.

    python scripts/measure_int8_schemes.py encoder-base --mixed wv,dense --mixed wv,dense,ffn_outer

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


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("presets", nargs="+")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seq", type=int, default=128)
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--mixed", action="append", default=[], metavar="KINDS", help="U8U8 kinds, reduce-range the rest")
    args = ap.parse_args()

    import onnx
    import onnxruntime as ort

    import attnkit
    from attnkit.compare import DEFAULT_TOLERANCES, compare_outputs
    from attnkit.exporters.precision import to_int8
    from attnkit.machine import cpu
    from attnkit.runtimes.base import Source
    from attnkit.runtimes.registry import get_runner
    from attnkit.targets import INT8_SCHEMES, host_class

    info = cpu()
    print(f"CPU: {info.brand}; class {host_class(info.features)}; features: {', '.join(sorted(info.features))}")
    print(f"onnxruntime {ort.__version__}; shapes: accuracy at 2x45 and {args.batch}x{args.seq}; speed at the latter\n")
    print("| preset | scheme | per-channel | rel L2 (worst) | cosine (worst) | within int8 tol. | x onnxruntime fp32 |")
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
            for name, per_channel, make, how in candidates:
                sess = ort.InferenceSession(make(fp32, *how).SerializeToString(), providers=["CPUExecutionProvider"])
                names = [o.name for o in sess.get_outputs()]
                worst_l2, worst_cos, ok = 0.0, 1.0, True
                for s, f in feeds.items():
                    got = dict(zip(names, sess.run(names, f)))
                    for a in compare_outputs(ref[s], got, DEFAULT_TOLERANCES["int8"]):
                        worst_l2, worst_cos, ok = max(worst_l2, a.rel_l2), min(worst_cos, a.cosine), ok and a.passed
                ms = median_ms(sess, feeds[shapes[-1]], args.seconds)
                print(
                    f"| {preset} | {name} | {'yes' if per_channel else 'no'} | {worst_l2:.3g} | "
                    f"{worst_cos:.5f} | {'yes' if ok else 'NO'} | {base_ms / ms:.2f} |",
                    flush=True,
                )


if __name__ == "__main__":
    main()
