"""The decode step of several exports (or peers' OpenVINO IRs) of the same decoder, interleaved round by round:
OpenVINO's stateful decoder (fp32, 2 threads, a 32-token prefill then greedy steps; median wall ms of a step in
each round), its compiled node count (the runtime model, constants left out), and with ``--profile`` the kernel
time of one step summed over OpenVINO's per-node counters (``PERF_COUNT``; the counters are averages over every
inference so far, so a step's own are taken as the difference of two snapshots). Wall minus kernel is what a step
spends outside the nodes' kernels: shape inference, memory management and dispatch, once per node.

How BENCHMARKS.md measured keras-hub's per-layer causal masks and rotary embeddings before and after they were
computed once a step (issue 36, Gemma 3 270M), beside optimum-intel's IR of the same weights.

    python scripts/measure_step_overhead.py DIR_OR_XML [DIR_OR_XML ...] [--rounds 3] [--steps 60] [--profile]
        [--precision bf16]     # compute and KV cache in bf16 (what OpenVINO runs by default on a CPU with bf16)
        [--cache f16]          # the KV cache in another precision (attnkit's weight-only fp16 step: f32 compute, f16)

With ``--profile``, also each model's kernel ms a step by node type (the ten largest), from the same snapshots.

A directory is an attnkit export (its ``openvino_decoder_stateful/model.xml``) or an optimum-intel model
directory (``openvino_model.xml``: ``input_ids``, ``attention_mask``, ``position_ids``, ``beam_idx``).
"""

import argparse
import collections
import time
from pathlib import Path

import numpy as np
import openvino as ov

CONFIG = {"INFERENCE_PRECISION_HINT": "f32", "KV_CACHE_PRECISION": "f32", "INFERENCE_NUM_THREADS": 2}


def xml_of(path: str) -> Path:
    p = Path(path)
    for candidate in (p, p / "openvino_decoder_stateful" / "model.xml", p / "openvino_model.xml"):
        if candidate.is_file():
            return candidate
    raise SystemExit(f"{path}: no openvino_decoder_stateful/model.xml or openvino_model.xml in it")


class Stepper:
    """One compiled stateful decoder, driven by whichever inputs it takes (attnkit's or optimum-intel's)."""

    def __init__(self, core, xml: Path, profile: bool):
        self.compiled = core.compile_model(str(xml), "CPU", {**CONFIG, "PERF_COUNT": profile})
        self.request = self.compiled.create_infer_request()
        self.names = {i.get_any_name() for i in self.compiled.inputs}
        self.ids = "token_ids" if "token_ids" in self.names else "input_ids"
        self.ids_type = self.compiled.input(self.ids).get_element_type().to_dtype()

    def feed(self, tokens, position: int) -> dict:
        new = tokens.shape[1]
        candidates = {
            self.ids: tokens.astype(self.ids_type),
            "beam_idx": np.zeros((1,), np.int32),
            "attention_mask": np.ones((1, position + new), np.int64),
            "position_ids": np.arange(position, position + new, dtype=np.int64)[None],
        }
        return {k: v for k, v in candidates.items() if k in self.names}

    def nodes(self) -> int:
        ops = self.compiled.get_runtime_model().get_ops()
        return sum(1 for n in ops if str(n.get_rt_info()["layerType"].astype(str)) != "Const")

    def kernels_ms(self) -> float:
        return sum(self.by_type().values())

    def by_type(self) -> dict[str, float]:
        out: dict[str, float] = collections.defaultdict(float)
        for p in self.request.profiling_info:
            out[p.node_type] += 1e3 * p.real_time.total_seconds()
        return out

    def round(self, steps: int, profile: bool) -> tuple[float, float | None]:
        """Median wall ms of a step, and with ``profile`` the kernel ms of the steps after the first 10."""
        r = self.request
        r.reset_state()
        prompt = np.random.default_rng(0).integers(1, 500, (1, 32))
        r.infer(self.feed(prompt, 0))
        position, walls, first = 32, [], None
        for step in range(steps):
            token = r.get_tensor("logits").data[:, -1:].argmax(-1)
            t = time.perf_counter()
            r.infer(self.feed(token, position))
            walls.append(time.perf_counter() - t)
            position += 1
            if profile and step == 9:
                first = (self.by_type(), step + 2)  # averages over step + 2 inferences (prefill included)
        kernel = None
        if profile:
            total, done = self.by_type(), steps + 1
            self.types = {k: (v * done - first[0].get(k, 0.0) * first[1]) / (done - first[1]) for k, v in total.items()}
            kernel = sum(self.types.values())
        return 1e3 * float(np.median(walls[10:])), kernel


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="+")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--profile", action="store_true", help="also the kernel time of a step (PERF_COUNT)")
    parser.add_argument("--precision", choices=("f32", "bf16"), default="f32", help="compute and KV cache precision")
    parser.add_argument(
        "--cache", choices=("f32", "f16", "bf16", "u8"), help="KV cache precision [default: --precision]"
    )
    args = parser.parse_args()
    CONFIG.update(INFERENCE_PRECISION_HINT=args.precision, KV_CACHE_PRECISION=args.cache or args.precision)
    core = ov.Core()
    steppers = {m: Stepper(core, xml_of(m), args.profile) for m in args.models}
    walls, kernels = collections.defaultdict(list), collections.defaultdict(list)
    for _ in range(args.rounds):
        for m, s in steppers.items():
            wall, kernel = s.round(args.steps, args.profile)
            walls[m].append(wall)
            if kernel is not None:
                kernels[m].append(kernel)
    print("| model | compiled nodes | step ms (median of rounds: each round's) | kernel ms | outside kernels ms |")
    print("|---|---:|---:|---:|---:|")
    for m, s in steppers.items():
        wall = float(np.median(walls[m]))
        rounds = ", ".join(f"{w:.2f}" for w in walls[m])
        kernel = f"{np.median(kernels[m]):.2f}" if kernels[m] else "-"
        outside = f"{wall - np.median(kernels[m]):.2f}" if kernels[m] else "-"
        print(f"| {m} | {s.nodes()} | {wall:.2f} ({rounds}) | {kernel} | {outside} |")
    for m, s in steppers.items():
        if args.profile:
            top = sorted(s.types.items(), key=lambda kv: -kv[1])[:10]
            print(f"{m}: " + ", ".join(f"{k} {v:.2f}" for k, v in top))


if __name__ == "__main__":
    main()
