"""OpenVINO GenAI's ``LLMPipeline`` on one IR directory with its KV cache in f32 and in f16, f32 compute both,
rounds interleaved in one process so a shared VM's bandwidth drift falls on both (issue 36: the peers' default
OpenVINO rows keep an f16 cache; is that what makes them faster?).

    python scripts/measure_kv_cache_precision.py EXPORT/openvino_genai [--rounds 6] [--new-tokens 128]

Prints each cache precision's median tokens/s and every round's, and whether the greedy tokens are identical.
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np


def main() -> None:
    import openvino as ov
    import openvino_genai as og

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("path", help="a directory LLMPipeline loads (attnkit's openvino_genai/, optimum-intel's export)")
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--new-tokens", type=int, default=128)
    ap.add_argument("--prompt-length", type=int, default=32)
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    args = ap.parse_args()
    ids = np.random.default_rng(0).integers(100, 30000, (1, args.prompt_length)).astype("int64")
    base = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_NUM_THREADS": args.threads, "INFERENCE_PRECISION_HINT": "f32",
            "DYNAMIC_QUANTIZATION_GROUP_SIZE": 0}  # fmt: skip
    pipes = {kv: og.LLMPipeline(args.path, "CPU", ATTENTION_BACKEND="SDPA", KV_CACHE_PRECISION=kv, **base)
             for kv in ("f32", "f16")}  # fmt: skip
    config = og.GenerationConfig()
    config.max_new_tokens, config.do_sample, config.ignore_eos, config.eos_token_id = args.new_tokens, False, True, 1
    inputs = og.TokenizedInputs(ov.Tensor(ids), ov.Tensor(np.ones_like(ids)))
    speeds, tokens = {kv: [] for kv in pipes}, {}
    for pipe in pipes.values():  # warm-up
        pipe.generate(inputs, config)
    for _ in range(args.rounds):
        for kv, pipe in pipes.items():
            start = time.perf_counter()
            out = pipe.generate(inputs, config)
            speeds[kv].append(args.new_tokens / (time.perf_counter() - start))
            tokens[kv] = list(out.tokens[0])
    for kv, s in speeds.items():
        print(f"kv-cache {kv}: {np.median(s):.1f} tok/s (rounds: {', '.join(f'{x:.1f}' for x in s)})")
    print(f"f16 / f32: {np.median(speeds['f16']) / np.median(speeds['f32']):.2f}x; "
          f"tokens identical: {tokens['f32'] == tokens['f16']}")  # fmt: skip


if __name__ == "__main__":
    main()
