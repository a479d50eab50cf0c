"""Accuracy and speed of every int8 scheme on this machine (the evidence behind attnkit.targets).

    python scripts/measure_int8_schemes.py encoder-tiny encoder-base --batch 8 --seq 128

For each preset: export the fp32 ONNX once, lower it with every scheme (per-tensor and
per-channel), and measure against the eager fp32 Keras model on fresh inputs at two shapes
(relative L2, cosine) and the median latency against onnxruntime fp32 at --batch x --seq, all in
one run. Prints a markdown table (what BENCHMARKS.md quotes) with the machine's CPU features.
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


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("presets", nargs="+")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seq", type=int, default=128)
    ap.add_argument("--seconds", type=float, default=5.0)
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
            for scheme in INT8_SCHEMES.values():
                for per_channel in (False, True):
                    model = to_int8(fp32, per_channel, scheme)
                    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
                    names = [o.name for o in sess.get_outputs()]
                    worst_l2, worst_cos, ok = 0.0, 1.0, True
                    for s, f in feeds.items():
                        got = dict(zip(names, sess.run(names, f)))
                        for a in compare_outputs(ref[s], got, DEFAULT_TOLERANCES["int8"]):
                            worst_l2, worst_cos, ok = max(worst_l2, a.rel_l2), min(worst_cos, a.cosine), ok and a.passed
                    ms = median_ms(sess, feeds[shapes[-1]], args.seconds)
                    print(
                        f"| {preset} | {scheme.name} | {'yes' if per_channel else 'no'} | {worst_l2:.3g} | "
                        f"{worst_cos:.5f} | {'yes' if ok else 'NO'} | {base_ms / ms:.2f} |",
                        flush=True,
                    )


if __name__ == "__main__":
    main()
