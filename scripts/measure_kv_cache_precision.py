"""OpenVINO GenAI's ``LLMPipeline`` on one IR directory in several (compute, KV cache) precisions, rounds
interleaved in one process, every other round in reverse order, so a shared VM's bandwidth drift falls on all
(issue 36: the peers' default OpenVINO rows keep a reduced cache, and on a CPU with bf16 compute in bf16; how
much of their speed is that?).

    python scripts/measure_kv_cache_precision.py EXPORT/openvino_genai [MORE_DIRS ...] [--rounds 6]
        [--new-tokens 128] [--configs f32:f32,f32:f16]   # COMPUTE:CACHE; e.g. bf16:bf16,bf16:u8 where the CPU has bf16

Several directories (attnkit's and optimum-intel's IR of the same weights) run interleaved with each configuration;
a directory written ``DIR@default`` runs GenAI's default attention backend (paged attention, which optimum-intel's
IR takes), else its SDPA backend (what attnkit's runner asks; keras-hub steps take no paged attention).

Prints each configuration's median tokens/s, every round's, what the plugin says a compile with that hint
computes in (asked of it), and how many of each configuration's greedy tokens equal the first one's.
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
    ap.add_argument(
        "paths", nargs="+", help="directories LLMPipeline loads (attnkit's openvino_genai/, optimum-intel's)"
    )
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--new-tokens", type=int, default=128)
    ap.add_argument("--prompt-length", type=int, default=32)
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--configs", default="f32:f32,f32:f16", help="COMPUTE:CACHE pairs, the first the baseline")
    args = ap.parse_args()
    ids = np.random.default_rng(0).integers(100, 30000, (1, args.prompt_length)).astype("int64")
    base = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_NUM_THREADS": args.threads, "DYNAMIC_QUANTIZATION_GROUP_SIZE": 0}
    configs = [(path, *c.split(":")) for path in args.paths for c in args.configs.split(",")]

    def pipe(path: str, compute: str, kv: str):
        directory, _, backend = path.partition("@")
        extra = {} if backend == "default" else {"ATTENTION_BACKEND": "SDPA"}
        return og.LLMPipeline(
            directory, "CPU", KV_CACHE_PRECISION=kv, INFERENCE_PRECISION_HINT=compute, **extra, **base
        )

    pipes = {c: pipe(*c) for c in configs}
    ran = {c: ran_as(c[1]) for c in configs}
    config = og.GenerationConfig()
    config.max_new_tokens, config.do_sample, config.ignore_eos, config.eos_token_id = args.new_tokens, False, True, 1
    inputs = og.TokenizedInputs(ov.Tensor(ids), ov.Tensor(np.ones_like(ids)))
    speeds, tokens = {c: [] for c in pipes}, {}
    for p in pipes.values():  # warm-up
        p.generate(inputs, config)
    for round_ in range(args.rounds):  # every other round in reverse order: no configuration always runs first
        for c, p in list(pipes.items())[:: -1 if round_ % 2 else 1]:
            start = time.perf_counter()
            out = p.generate(inputs, config)
            speeds[c].append(args.new_tokens / (time.perf_counter() - start))
            tokens[c] = np.asarray(out.tokens[0])
    first = configs[0]
    for c, s in speeds.items():
        same = int((tokens[c] == tokens[first]).sum())
        print(f"{c[0]}: compute {c[1]} (plugin: {ran[c]}), kv-cache {c[2]}: {np.median(s):.1f} tok/s = "
              f"{np.median(s) / np.median(speeds[first]):.2f}x the first "
              f"(rounds: {', '.join(f'{x:.1f}' for x in s)}); tokens equal to the first's: "
              f"{same}/{len(tokens[first])}")  # fmt: skip


def ran_as(hint: str) -> str:
    """What OpenVINO's CPU plugin computes a ``hint`` in here, asked of it (attnkit.core.machine)."""
    from attnkit.core.machine import openvino_compiles
    from attnkit.core.names import OPENVINO_RAN_AS

    return openvino_compiles(OPENVINO_RAN_AS.get(hint, hint)) or hint


if __name__ == "__main__":
    main()
