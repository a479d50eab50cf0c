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
        """The fastest row whose tokens are exactly full recompute's (a reduced precision whose greedy
        tokens drift is reported, never the headline)."""
        rows = [
            r
            for r in self.rows
            if r.agrees and r.token_match == 1.0 and r.tokens_per_s
            and (new_tokens is None or r.new_tokens == new_tokens)
        ]  # fmt: skip
        return max(rows, key=lambda r: r.tokens_per_s, default=None)

    def speedups(self) -> dict[str, dict[int, float]]:
        """Cached decode over full recompute on the same runtime, per backend and number of new tokens
        (averaged over batch and prompt length when the grid has several)."""
        out: dict[str, dict[int, list[float]]] = {}
        for r in self.rows:
            if r.speedup_vs_recompute is not None:
                out.setdefault(r.label, {}).setdefault(r.new_tokens, []).append(r.speedup_vs_recompute)
        return {k: {n: float(np.mean(v)) for n, v in sorted(d.items())} for k, d in out.items()}

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
            "best_pct_of_bandwidth": best.pct_of_bandwidth if best else None,
            "speedup_vs_recompute": self.speedups(),
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


def _full_forward(source, backend: str, precision: str):
    """The full-sequence model of a backend at a precision, for its recompute baseline; (fn, close) or None.

    eager Keras: the model; tf-function: the traced model; savedmodel(-generate): ``serving_default``;
    onnxruntime: ``model[.fp16|.int8].onnx``. The baseline runs on the same runtime as the cached decode.
    """
    if backend == "keras" and precision == "fp32":
        model = source.keras_model
        return lambda f: np.asarray(model(f, training=False)["logits"])
    if backend == "tf-function" and precision == "fp32":
        from ..tracing import trace

        fn, names = trace(source.keras_model, source.spec), source.spec.input_names
        return lambda f: fn(*[f[n] for n in names])["logits"].numpy()
    if backend in ("savedmodel", "savedmodel-generate") and source.manifest.artifact("savedmodel", precision):
        import tensorflow as tf

        loaded = tf.saved_model.load(str(source.path("savedmodel", precision)))
        sig, names = loaded.signatures["serving_default"], source.spec.input_names
        fn = lambda f: sig(**{n: tf.constant(f[n]) for n in names})["logits"].numpy()  # noqa: E731
        fn.keep = loaded
        return fn
    if backend == "onnxruntime" and source.manifest.artifact("onnx", precision) is not None:
        from ..runtimes.onnxruntime import session

        sess = session(source.path("onnx", precision))
        names = [i.name for i in sess.get_inputs()]
        return lambda f: sess.run(["logits"], {k: f[k] for k in names})[0]
    return None


def _pairs(source, backends) -> list[tuple[str, str]]:
    from ..runtimes.registry import split_backend
    from .runners import STEP_RUNNERS
    from .verify import default_backends

    available = default_backends(source)
    if not backends:
        trt = [] if any(n == "tensorrt" for n, _ in available) else [("tensorrt", "fp16")]
        return available + [("xla", "fp32")] + trt
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

    shapes = [(b, p, n) for b in batches for p in prompt_lengths for n in new_tokens]
    prompts = {shape: Prompts.random(g, shape[0], shape[1], seed, source_length=shape[1]) for shape in shapes}
    refs, eager_recompute, baselines = {}, {}, {}
    full = _full_forward(source, "keras", "fp32")
    for shape in shapes:
        say(f"eager full recompute (the reference): batch {shape[0]}, prompt {shape[1]}, {shape[2]} new tokens")
        refs[shape], eager_recompute[shape] = _timed_recompute(full, g, prompts[shape], shape[2], recompute_repeats)
        report.recompute.append(_recompute_record("keras", "fp32", shape, eager_recompute[shape]))
    # One backend at a time, loaded, measured on every shape and closed: nothing else runs or holds
    # threads (onnxruntime's pools spin after a run) while a backend is timed.
    for name, precision in pairs:
        rows = {shape: GenerationRow(name, precision, *shape) for shape in shapes}
        report.rows += rows.values()
        reason = XLA_REASON if name == "xla" else STEP_RUNNERS[name].unavailable_reason()
        if reason:
            for row in rows.values():
                row.skipped = reason
            continue
        say(f"loading {name} [{precision}]")
        try:
            with STEP_RUNNERS[name](source, precision, threads) as runner:
                for shape, row in rows.items():
                    say(f"{runner.label}: batch {shape[0]}, prompt {shape[1]}, {shape[2]} new tokens")
                    _measure(row, runner, prompts[shape], shape[2], refs[shape], repeats)
            kind = ("savedmodel" if name.startswith("savedmodel") else name, precision)
            baseline = eager_recompute if kind == ("keras", "fp32") else baselines.get(kind)
            if baseline is None and (full := _full_forward(source, name, precision)) is not None:
                baseline = {}
                for shape in shapes:
                    say(f"full recompute on {name} [{precision}]: {shape[2]} new tokens")
                    _timed_recompute(full, g, prompts[shape], min(shape[2], 2), 1)  # warm-up
                    _, baseline[shape] = _timed_recompute(full, g, prompts[shape], shape[2], recompute_repeats)
                    report.recompute.append(_recompute_record(name, precision, shape, baseline[shape]))
                baselines[kind], full = baseline, None
        except AttnkitError:
            raise
        except Exception as e:  # a backend that crashes is reported in its rows, the others go on
            for row in rows.values():
                row.error = row.error or f"{type(e).__name__}: {str(e)[:300]}"
            continue
        for shape, row in rows.items():
            _derive(row, g, baseline.get(shape) if baseline else None, eager_recompute[shape], weights_of, peak)
    return report


def _recompute_record(name, precision, shape, seconds) -> dict:
    b, p, n = shape
    return {
        "backend": name,
        "precision": precision,
        "batch": b,
        "prompt_length": p,
        "new_tokens": n,
        "seconds": seconds,
    }


def _derive(row, g, recompute_s, eager_recompute_s, weights_of, peak) -> None:
    """Speedups over full recompute and the memory-traffic roofline of a measured row."""
    if row.total_s is None:
        return
    if recompute_s is not None:
        row.recompute_s = recompute_s
        row.speedup_vs_recompute = recompute_s / row.total_s
    row.speedup_vs_eager_recompute = eager_recompute_s / row.total_s
    weights = weights_of(row.backend, row.precision)
    if weights and row.itl_ms.get("p50"):
        context = row.prompt_length + np.arange(1, row.new_tokens)  # keys each decode step attends to
        cache = int(g.cache_bytes_per_token() * row.batch * context.mean()) if row.new_tokens > 1 else 0
        row.bytes_per_step = weights + cache
        row.achieved_gbps = row.bytes_per_step / (row.itl_ms["p50"] / 1e3) / 1e9
        row.pct_of_bandwidth = 100 * row.achieved_gbps / peak


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
