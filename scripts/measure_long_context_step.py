"""One decode step of two exports of the same keras-hub decoder at long cached contexts: onnxruntime's
``decoder_with_past.onnx`` and OpenVINO's ``openvino_decoder_with_past`` (fp32, 2 threads), the same seeded
random cache fed to both, median ms of 15 steps after 3 warm-up steps, and whether onnxruntime's logits are
bit-identical between the two. How BENCHMARKS.md measured keras-hub's sliding-window mask before and after it was
computed from positions (issue 36, Gemma 3).

    python scripts/measure_long_context_step.py OLD_EXPORT NEW_EXPORT [--past 160,1024,4096]
"""

import argparse
import time

import numpy as np
import onnxruntime as ort
import openvino as ov


def feeds(inputs, past: int) -> dict:
    rng = np.random.default_rng(past)
    out = {}
    for i in inputs:
        name = i.get_any_name() if hasattr(i, "get_any_name") else i.name
        shape = i.get_partial_shape() if hasattr(i, "get_partial_shape") else i.shape
        if name == "token_ids":
            out[name] = np.array([[7]], np.int32)
        else:  # past_key_values.{i}.{key,value}: (batch, kv_heads, past, depth)
            dims = [d.get_length() if hasattr(d, "get_length") and d.is_static else d for d in shape]
            out[name] = rng.standard_normal((1, int(dims[1]), past, int(dims[3]))).astype(np.float32)
    return out


def median_ms(fn, n: int = 15) -> float:
    for _ in range(3):
        fn()
    times = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return 1e3 * float(np.median(times))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("old")
    ap.add_argument("new")
    ap.add_argument("--past", default="160,1024,4096")
    args = ap.parse_args()
    options = ort.SessionOptions()
    options.intra_op_num_threads = 2
    core = ov.Core()
    print("| cached positions | onnxruntime old ms | new ms | OpenVINO old ms | new ms | logits bit-identical |")
    print("|---:|---:|---:|---:|---:|---|")
    for past in (int(p) for p in args.past.split(",")):
        ort_ms, ov_ms, logits = [], [], []
        for export in (args.old, args.new):
            session = ort.InferenceSession(
                f"{export}/decoder_with_past.onnx", options, providers=["CPUExecutionProvider"]
            )
            feed = feeds(session.get_inputs(), past)
            ort_ms.append(median_ms(lambda s=session, f=feed: s.run(None, f)))
            logits.append(session.run(None, feed)[0])
            compiled = core.compile_model(f"{export}/openvino_decoder_with_past/model.xml", "CPU",
                                          {"INFERENCE_PRECISION_HINT": "f32", "INFERENCE_NUM_THREADS": 2})  # fmt: skip
            request, feed = compiled.create_infer_request(), feeds(compiled.inputs, past)
            ov_ms.append(median_ms(lambda r=request, f=feed: r.infer(f)))
        same = np.array_equal(logits[0], logits[1])
        print(f"| {past} | {ort_ms[0]:.2f} | {ort_ms[1]:.2f} | {ov_ms[0]:.2f} | {ov_ms[1]:.2f} | {same} |")


if __name__ == "__main__":
    main()
