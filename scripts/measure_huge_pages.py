"""Decode on 4 KiB pages against 2 MiB pages (attnkit.core.hugepages), in one process, round by round.

Each backend is loaded twice from the same export, in a process of its own: first as attnkit loads it by default
(the process's resident memory collapsed onto 2 MiB pages after the load), then with ``ATTNKIT_HUGE_PAGES=0``
(the second copy's weights stay on the 4 KiB pages its allocator gave them; the process's ``AnonHugePages``
before and after that load shows they did). Rounds alternate the two (and swap which goes first), each a timed
greedy generation of the same prompt, so the machine's drift falls on both; the two copies' tokens must be
identical.

    python scripts/measure_huge_pages.py EXPORT [--backends openvino-genai,openvino-stateful,onnxruntime]
        [--rounds 8] [--prompt-length 32] [--new-tokens 128] [--threads 2]
"""

import argparse
import os
import subprocess
import sys
import time

import numpy as np

from attnkit.core.hugepages import ENV
from attnkit.generation.loop import Prompts
from attnkit.generation.verify import run_generation
from attnkit.runtimes.base import Source
from attnkit.runtimes.registry import generation_pairs


def load(cls, source, precision, threads, huge: bool):
    os.environ[ENV] = "1" if huge else "0"
    try:
        return cls(source, precision, threads).load()
    finally:
        os.environ.pop(ENV, None)


def anon_huge_mib() -> int:
    with open("/proc/self/smaps_rollup") as f:
        return int(f.read().split("AnonHugePages:")[1].split()[0]) // 1024


def one(args, source, cls, precision, prompts) -> None:
    huge = load(cls, source, precision, args.threads, True)
    before = anon_huge_mib()
    pair = {True: huge, False: load(cls, source, precision, args.threads, False)}
    grew = anon_huge_mib() - before
    rates, tokens = {False: [], True: []}, {}
    for h, runner in pair.items():  # warm-up, and the tokens each copy gives
        tokens[h] = run_generation(runner, prompts, args.new_tokens, keep_logits=False).tokens
    for r in range(args.rounds):
        for h in (False, True) if r % 2 == 0 else (True, False):
            t0 = time.perf_counter()
            run_generation(pair[h], prompts, args.new_tokens, keep_logits=False)
            rates[h].append(args.new_tokens / (time.perf_counter() - t0))
    small, big = (float(np.median(rates[h])) for h in (False, True))
    each = {h: ", ".join(f"{x:.1f}" for x in rates[h]) for h in rates}
    same = "identical" if np.array_equal(tokens[False], tokens[True]) else "DIFFER"
    print(f"| {cls.name} | {small:.1f} ({each[False]}) | {big:.1f} ({each[True]}) | {big / small:.2f}x | "
          f"{huge.huge_pages.describe()}; +{grew} MiB with the 4 KiB copy | {same} |", flush=True)  # fmt: skip
    for runner in pair.values():
        runner.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("export")
    parser.add_argument("--backends", default="openvino-genai,openvino-stateful,onnxruntime")
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--prompt-length", type=int, default=32)
    parser.add_argument("--new-tokens", type=int, default=128)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--one", help=argparse.SUPPRESS)  # one backend, in this process
    args = parser.parse_args()
    source = Source(args.export)
    prompts = Prompts.random(source.generation.spec, 1, args.prompt_length, seed=0)
    if args.one:
        for cls, precision in generation_pairs(source, [f"{args.one}-fp32"]):
            one(args, source, cls, precision, prompts)
        return
    print("| backend | 4 KiB pages tok/s (each round) | 2 MiB pages tok/s (each round) | ratio | moved | tokens |")
    print("|---|---|---|---:|---|---|", flush=True)
    for backend in args.backends.split(","):  # a process each: no backend's memory is collapsed by another's load
        subprocess.run([sys.executable, __file__, *sys.argv[1:], "--one", backend], check=True)


if __name__ == "__main__":
    main()
