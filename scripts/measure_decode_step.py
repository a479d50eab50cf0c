"""Two exports of the same decoder's decode step, timed in alternation with a plain greedy loop (no attnkit
runner, no sampling): onnxruntime's ``decoder_with_past.onnx`` and OpenVINO's stateful ``openvino_decoder_stateful``,
fp32, 2 threads, prompt 32, then ``--tokens`` steps; ms a token. How BENCHMARKS.md compares a step graph before and
after a change (issue 36: keras-hub's cache writes). An export made before openvino_decoder_stateful existed can
be given separately with ``--old-openvino``.

    python scripts/measure_decode_step.py OLD_EXPORT NEW_EXPORT [--old-openvino DIR] [--tokens 128] [--repeats 3]
"""

import argparse
import time

import numpy as np
import onnxruntime as ort
import openvino as ov


def ort_step(path, n=128):
    so = ort.SessionOptions()
    so.intra_op_num_threads = 2
    s = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
    ins = {i.name: i for i in s.get_inputs()}
    outs = [o.name for o in s.get_outputs()]
    L = sum(1 for k in ins if k.endswith(".key"))
    kv = {k: np.zeros((1, ins[k].shape[1], 0, ins[k].shape[3]), np.float32) for k in ins if k.startswith("past")}
    tok = np.full((1, 32), 7, np.int32)

    def run(tok, kv):
        r = dict(zip(outs, s.run(None, {"token_ids": tok, **kv})))
        return r, {f"past_key_values.{i}.{w}": r[f"present.{i}.{w}"] for i in range(L) for w in ("key", "value")}

    r, kv = run(tok, kv)
    t = time.perf_counter()
    for _ in range(n):
        nxt = r["logits"][:, -1].argmax(-1).astype(np.int32)[:, None]
        r, kv = run(nxt, kv)
    return (time.perf_counter() - t) / n * 1000


def ov_step(path, n=128):
    core = ov.Core()
    c = core.compile_model(
        path,
        "CPU",
        {
            "PERFORMANCE_HINT": "LATENCY",
            "INFERENCE_PRECISION_HINT": "f32",
            "KV_CACHE_PRECISION": "f32",
            "DYNAMIC_QUANTIZATION_GROUP_SIZE": 0,
            "INFERENCE_NUM_THREADS": 2,
        },
    )
    r = c.create_infer_request()
    r.reset_state()
    beam = np.zeros((1,), np.int32)
    # a keras-hub stateful IR exported from 2026-12-07 takes its cache slots as position_ids
    names = {n for port in c.inputs for n in port.get_names()}

    def feed(tokens, at):
        extra = {"position_ids": np.arange(at, at + tokens.shape[1])[None]} if "position_ids" in names else {}
        return {"token_ids": tokens, "beam_idx": beam, **extra}

    r.infer(feed(np.full((1, 32), 7, np.int32), 0))
    t = time.perf_counter()
    for i in range(n):
        nxt = r.get_tensor("logits").data[:, -1].argmax(-1).astype(np.int32)[:, None]
        r.infer(feed(nxt, 32 + i))
    return (time.perf_counter() - t) / n * 1000


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("old")
    ap.add_argument("new")
    ap.add_argument("--old-openvino", help="the old OpenVINO export, if not OLD")
    ap.add_argument("--tokens", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    for rep in range(args.repeats):
        for name, d in (("old", args.old), ("new", args.new)):
            print(
                rep,
                name,
                f"onnxruntime ms/token {ort_step(d + '/decoder_with_past.onnx', args.tokens):.2f}",
                flush=True,
            )
        for name, d in (("old", args.old_openvino or args.old), ("new", args.new)):
            ms = ov_step(d + "/openvino_decoder_stateful/model.xml", args.tokens)
            print(rep, name, f"openvino-stateful ms/token {ms:.2f}", flush=True)


if __name__ == "__main__":
    main()
