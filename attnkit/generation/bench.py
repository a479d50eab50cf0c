"""``attnkit bench DIR --generate``: time to first token, inter-token latency, tokens/s and the speedup of
the cached decode over full recompute, for every generation backend, in one run.

Methodology (the same loop for every backend, so backends are compared, not loops):
- one untimed warm-up generation per backend and shape, then one checked generation whose tokens and
  logits are compared with eager full recompute (a row whose answers disagree never becomes the headline),
  then ``repeats`` timed generations; TTFT is their median, inter-token latency pools every decode step;
- full recompute (no cache, the whole sequence through the full model at each step) is timed on eager
  Keras and on onnxruntime (``model.onnx``) with the same prompts: the speedup is per backend, same run;
- decode is bound by memory traffic: each decode row's bytes per step (the weights the step streams, at
  the artifact's precision, plus the KV cache it reads) over its median inter-token latency is reported
  as a share of the memory bandwidth measured in the same run (:func:`calibrate_bandwidth`).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..compare import DEFAULT_TOLERANCES
from ..errors import AttnkitError
from .loop import Prompts, greedy, recompute
from .verify import GenerationCheck, _compare_steps

#: backends a generation bench measures by default: every one that can run the export here
DEFAULT_BACKENDS = ("keras", "tf-function", "xla", "savedmodel", "savedmodel-generate", "onnxruntime", "tensorrt")
XLA_REASON = (
    "XLA compiles one program per input shape, and the KV cache grows by one token per step: "
    "it would recompile at every step"
)


@dataclass
class GenerationRow:
    backend: str
    precision: str
    batch: int
    prompt_length: int
    new_tokens: int
    repeats: int = 0
    ttft_ms: float | None = None
    itl_ms: dict[str, float] = field(default_factory=dict)  # mean, p50, p90, p99
    tokens_per_s: float | None = None
    total_s: float | None = None
    recompute_s: float | None = None  # full recompute of the same tokens on this backend's full model
    speedup_vs_recompute: float | None = None
    speedup_vs_eager_recompute: float | None = None
    bytes_per_step: int | None = None
    achieved_gbps: float | None = None
    pct_of_bandwidth: float | None = None
    per_position_ms: list[float] = field(default_factory=list)
    token_match: float | None = None
    first_mismatch: int | None = None
    agrees: bool | None = None
    agreement: str = ""
    skipped: str | None = None
    error: str | None = None

    @property
    def label(self) -> str:
        return self.backend if self.precision == "fp32" else f"{self.backend}[{self.precision}]"


@dataclass
class GenerationBenchReport:
    root: str
    model: str
    seed: int
    environment: dict
    bandwidth: dict
    rows: list[GenerationRow] = field(default_factory=list)
    recompute: list[dict] = field(default_factory=list)

    def best(self, new_tokens: int | None = None) -> GenerationRow | None:
        rows = [
            r
            for r in self.rows
            if r.agrees and r.tokens_per_s and (new_tokens is None or r.new_tokens == new_tokens)
        ]
        return max(rows, key=lambda r: r.tokens_per_s, default=None)

    def to_dict(self) -> dict[str, Any]:
        best = self.best()
        return {
            "kind": "generation",
            "root": self.root,
            "model": self.model,
            "seed": self.seed,
            "environment": self.environment,
            "bandwidth": self.bandwidth,
            "best": asdict(best) if best else None,
            "best_pct_of_bandwidth": max((r.pct_of_bandwidth or 0 for r in self.rows if r.agrees), default=None),
            "recompute": self.recompute,
            "rows": [asdict(r) for r in self.rows],
        }


def streamed_weight_bytes(onnx_path: Path) -> int:
    """Bytes of the weights one decode step reads: every initializer except tables only gathered from
    (the token embedding and positional table: a step reads one row of them per token)."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(onnx_path))
    readers: dict[str, set[str]] = {}
    for n in model.graph.node:
        for i in n.input:
            readers.setdefault(i, set()).add(n.op_type)
    total = 0
    for init in model.graph.initializer:
        if readers.get(init.name, set()) <= {"Gather"} and init.name in readers:
            continue
        total += numpy_helper.to_array(init).nbytes
    return total


def _full_forward(source, backend: str) -> Callable[[dict], np.ndarray] | None:
    """The full-sequence model of a backend, for the recompute baseline (eager Keras, onnxruntime)."""
    if backend == "keras":
        model = source.keras_model
        return lambda f: np.asarray(model(f, training=False)["logits"])
    if backend == "onnxruntime" and source.manifest.artifact("onnx", "fp32") is not None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.log_severity_level = 3
        session = ort.InferenceSession(str(source.path("onnx", "fp32")), options, providers=["CPUExecutionProvider"])
        names = [i.name for i in session.get_inputs()]
        return lambda f: session.run(["logits"], {k: f[k] for k in names})[0]
    return None


def _pairs(source, backends) -> list[tuple[str, str]]:
    from ..runtimes.registry import split_backend
    from .runners import STEP_RUNNERS
    from .verify import default_backends

    available = default_backends(source)
    if not backends:
        return available + [("xla", "fp32"), ("tensorrt", "fp16")]
    out = []
    for b in backends:
        name, precision = split_backend(b)
        if name not in STEP_RUNNERS and name != "xla":
            raise AttnkitError(
                f"unknown generation backend `{name}`; valid: {', '.join(list(STEP_RUNNERS) + ['xla'])}.",
                flag="--backends",
            )
        found = [(n, p) for n, p in available if n == name and precision in (None, p)]
        out += found or [(name, precision or "fp32")]
    return list(dict.fromkeys(out))


def bench_generation(
    root: str | Path,
    *,
    backends: list[str] | None = None,
    batches: tuple[int, ...] = (1,),
    prompt_lengths: tuple[int, ...] = (32,),
    new_tokens: tuple[int, ...] = (32, 128),
    repeats: int = 3,
    recompute_repeats: int = 1,
    seed: int = 0,
    threads: int | None = None,
    unsafe: bool = False,
    imports: tuple[str, ...] = (),
    progress: Callable[[str], None] | None = None,
) -> GenerationBenchReport:
    from ..benchmark.environment import collect
    from ..benchmark.roofline import calibrate_bandwidth
    from ..runtimes.base import Source
    from .loop import check_request
    from .runners import STEP_RUNNERS, generation_artifact, generation_section
    from .spec import GenerationSpec

    say = progress or (lambda _m: None)
    if repeats < 1:
        raise AttnkitError(f"must be >= 1; got {repeats}.", flag="--repeats")
    source = Source(root, unsafe=unsafe, imports=imports)
    source.manifest.require_integrity(root)
    g = GenerationSpec.from_dict(generation_section(source)["spec"])
    for b in batches:
        for p in prompt_lengths:
            for n in new_tokens:
                check_request(g, Prompts.random(g, 1, p, 0, ragged=False), n)
                if b < 1:
                    raise AttnkitError(f"must be >= 1; got {b}.", flag="--batch")
    pairs = _pairs(source, backends)
    say("memory bandwidth (array copy)")
    report = GenerationBenchReport(
        str(root), source.spec.name, seed, collect({"intra_op": threads}), calibrate_bandwidth(threads)
    )
    peak = report.bandwidth["gbps"]
    fp32_onnx = source.manifest.artifact("onnx", "fp32")
    weight_bytes: dict[str, int] = {}

    def weights_of(name: str, precision: str) -> int | None:
        key = precision if name == "onnxruntime" else "fp32"
        if key not in weight_bytes:
            try:
                path = generation_artifact(source, "decoder_with_past", "onnx", key)
            except AttnkitError:
                path = source.root / fp32_onnx.path if fp32_onnx is not None and key == "fp32" else None
            weight_bytes[key] = streamed_weight_bytes(path) if path else None
        return weight_bytes[key]

    runners, reasons = {}, {}
    for name, precision in pairs:
        if name == "xla":
            reasons[(name, precision)] = XLA_REASON
            continue
        cls = STEP_RUNNERS[name]
        reason = cls.unavailable_reason()
        if reason:
            reasons[(name, precision)] = reason
            continue
        say(f"loading {name} [{precision}]")
        runners[(name, precision)] = cls(source, precision, threads).load()
    full = {name: _full_forward(source, name) for name in ("keras", "onnxruntime")}
    try:
        for b in batches:
            for p in prompt_lengths:
                for n in new_tokens:
                    prompts = Prompts.random(g, b, p, seed, source_length=p)
                    _bench_shape(report, g, prompts, n, pairs, runners, reasons, full, repeats, recompute_repeats,
                                 weights_of, peak, say)  # fmt: skip
    finally:
        for r in runners.values():
            r.close()
    return report


def _timed_recompute(full, g, prompts, n, repeats):
    best = None
    ref = None
    for _ in range(repeats):
        t0 = time.perf_counter()
        gen = recompute(full, g, prompts, n, keep_logits=ref is None)
        elapsed = time.perf_counter() - t0
        ref = ref or gen
        best = elapsed if best is None else min(best, elapsed)
    return ref, best


def _bench_shape(report, g, prompts, n, pairs, runners, reasons, full, repeats, recompute_repeats, weights_of, peak, say):
    b, p = prompts.batch, int(prompts.ids.shape[1])
    say(f"full recompute, eager keras (the reference): batch {b}, prompt {p}, {n} new tokens")
    ref, eager_recompute = _timed_recompute(full["keras"], g, prompts, n, recompute_repeats)
    recompute_s = {"keras": eager_recompute}
    report.recompute.append({"backend": "keras", "batch": b, "prompt_length": p, "new_tokens": n, "seconds": eager_recompute})
    if full["onnxruntime"] is not None and ("onnxruntime", "fp32") in runners:
        say(f"full recompute, onnxruntime model.onnx: batch {b}, prompt {p}, {n} new tokens")
        _timed_recompute(full["onnxruntime"], g, prompts, min(n, 4), 1)  # warm-up
        _, recompute_s["onnxruntime"] = _timed_recompute(full["onnxruntime"], g, prompts, n, recompute_repeats)
        report.recompute.append(
            {"backend": "onnxruntime", "batch": b, "prompt_length": p, "new_tokens": n, "seconds": recompute_s["onnxruntime"]}
        )
    context = p + np.arange(1, n)  # keys each decode step attends to
    for name, precision in pairs:
        row = GenerationRow(name, precision, b, p, n)
        report.rows.append(row)
        if (name, precision) in reasons:
            row.skipped = reasons[(name, precision)]
            continue
        runner = runners[(name, precision)]
        say(f"{runner.label}: batch {b}, prompt {p}, {n} new tokens")
        try:
            _measure(row, runner, prompts, n, ref, repeats)
        except AttnkitError:
            raise
        except Exception as e:
            row.error = f"{type(e).__name__}: {str(e)[:300]}"
            continue
        if name in recompute_s and precision == "fp32":
            row.recompute_s = recompute_s[name]
            row.speedup_vs_recompute = recompute_s[name] / row.total_s
        row.speedup_vs_eager_recompute = eager_recompute / row.total_s
        weights = weights_of(name, precision)
        if weights and row.itl_ms.get("p50"):
            cache = int(g.cache_bytes_per_token() * b * context.mean()) if n > 1 else 0
            row.bytes_per_step = weights + cache
            row.achieved_gbps = row.bytes_per_step / (row.itl_ms["p50"] / 1e3) / 1e9
            row.pct_of_bandwidth = 100 * row.achieved_gbps / peak


def _measure(row: GenerationRow, runner, prompts, n: int, ref, repeats: int) -> None:
    check = GenerationCheck(row.backend, row.precision, tokens_required=row.precision == "fp32")
    if runner.in_graph:
        runner.generate(prompts, min(n, 2))  # warm-up (first call of the signature)
        tokens = runner.generate(prompts, n)["output_ids"]
        _compare_steps(check, ref, tokens, [], DEFAULT_TOLERANCES[row.precision])
        firsts, totals = [], []
        for _ in range(repeats):
            t0 = time.perf_counter()
            runner.generate(prompts, 1)
            firsts.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            runner.generate(prompts, n)
            totals.append(time.perf_counter() - t0)
        row.ttft_ms = 1e3 * float(np.median(firsts))
        row.total_s = float(np.median(totals))
        if n > 1:  # one call: only the mean inter-token latency is observable
            mean = 1e3 * (row.total_s - float(np.median(firsts))) / (n - 1)
            row.itl_ms = {"mean": mean, "p50": mean}
    else:
        greedy(runner, prompts, min(n, 4), keep_logits=False)  # warm-up
        checked = greedy(runner, prompts, n)
        _compare_steps(check, ref, checked.tokens, checked.logits, DEFAULT_TOLERANCES[row.precision])
        runs = [greedy(runner, prompts, n, keep_logits=False) for _ in range(repeats)]
        totals = [r.first_token_seconds + sum(r.step_seconds) for r in runs]
        row.ttft_ms = 1e3 * float(np.median([r.first_token_seconds for r in runs]))
        row.total_s = float(np.median(totals))
        steps = np.array([r.step_seconds for r in runs]) * 1e3  # (repeats, n - 1)
        if steps.size:
            p50, p90, p99 = np.percentile(steps, [50, 90, 99])
            row.itl_ms = {"mean": float(steps.mean()), "p50": float(p50), "p90": float(p90), "p99": float(p99)}
            row.per_position_ms = [round(float(v), 4) for v in np.median(steps, axis=0)]
    row.repeats = repeats
    row.tokens_per_s = prompts.batch * n / row.total_s
    row.token_match, row.first_mismatch = check.token_match, check.first_mismatch
    row.agrees = check.passed
    row.agreement = (
        "tokens identical" if check.passed and check.first_mismatch is None
        else f"{check.token_match:.0%} tokens match" + ("" if check.passed else f"; {'; '.join(check.failures)}")
    )  # fmt: skip
