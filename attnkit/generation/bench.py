"""``attnkit bench-generate DIR``: time to first token, inter-token latency, tokens/s and the speedup of
the cached decode over full recompute, for every generation backend, in one run.

Methodology (the same loop for every backend, so backends are compared, not loops):
- one untimed warm-up generation per backend and shape, then one checked generation whose tokens and
  logits are compared with eager full recompute (a row whose answers disagree never becomes the headline),
  then ``repeats`` timed generations; TTFT is their median, inter-token latency pools every decode step;
- full recompute (no cache, the whole sequence through the full model at each step) is timed on eager
  Keras and on onnxruntime (``model.onnx``) with the same prompts: the speedup is per backend, same run;
- decode is bound by memory traffic: each decode row's bytes per step (the weights the step streams, at
  the artifact's precision, plus the KV cache it reads) over its median inter-token latency is reported
  as a share of the memory bandwidth measured in the same run. The bandwidth is probed around the rows it
  bounds: a large array copy at the start and after every backend, and a read of each row's own
  working-set size with the same threads (:class:`BandwidthProbes`; the read is the bound of a step
  whose weights sit in the last-level cache). The highest probe of the run is the bound, so no row's
  share can pass 100 %; copy probes that differ by more than ``PROBE_NOISE_PCT`` are a warning (the
  machine was busy while the run measured).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..benchmark.stats import summarise
from ..core.compare import DEFAULT_TOLERANCES
from ..core.errors import AttnkitError
from ..core.names import FORWARD, GENERATE
from ..runtimes.base import label, ran_label
from ..runtimes.registry import format_of, generation_pairs, tasks_of
from .loop import Prompts, full_logits, recompute
from .traffic import streamed_bytes, widths
from .verify import GenerationCheck, _compare_steps, run_generation, unavailable_notes

#: six consecutive 0.3 s copy probes on a steady 2-core machine differed by <= 3 % (43.2-44.5 GB/s); a spread
#: beyond this means the machine's bandwidth changed while the run measured
PROBE_NOISE_PCT = 10.0
PROBE_SECONDS = 0.3


@dataclass
class GenerationRow:
    backend: str
    precision: str
    task: str
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
    pct_of_bandwidth: float | None = None  # against the run's highest probe: never above 100 %
    working_set_gbps: float | None = None  # the read probe of this row's own bytes per step, same run
    pct_of_working_set: float | None = None
    per_position_ms: list[float] = field(default_factory=list)
    token_match: float | None = None
    first_mismatch: int | None = None
    sequences_identical: float | None = None  # share of the batch's rows identical to the reference to the end
    agrees: bool | None = None
    agreement: str = ""
    skipped: str | None = None
    error: str | None = None
    #: what the runtime computed in, read back from it (OpenVINO: the compiled model's precision and KV cache)
    ran_as: str | None = None

    @property
    def label(self) -> str:
        return ran_label(label(self.backend, self.precision, self.task), self.precision, self.ran_as)


@dataclass
class GenerationBenchReport:
    root: str
    model: str
    seed: int
    environment: dict
    bandwidth: dict
    rows: list[GenerationRow] = field(default_factory=list)
    recompute: list[dict] = field(default_factory=list)
    #: backends with no generation runner, and why (said once under the table, not as rows)
    notes: list[str] = field(default_factory=list)

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
            "notes": self.notes,
            "rows": [{**asdict(r), "label": r.label} for r in self.rows],
        }


def _forward_runner(source, backend: str, precision: str):
    """The backend's own forward runner at ``precision`` for its full-recompute baseline (the registry's,
    as bench uses it), or None when the export has no artifact for it."""
    cls = tasks_of(backend).get(FORWARD)
    if cls is None or precision not in cls.precisions:
        return None
    if cls.needs != "keras" and source.manifest.artifact(cls.needs, precision) is None:
        return None
    if cls.needs == "keras" and precision != "fp32":
        return None
    return cls(source, precision)


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
    data=None,
) -> GenerationBenchReport:
    """Generation token by token for every generation runner the export allows, against eager Keras's full
    recompute and each backend's own, with the memory bandwidth measured between backends.

    About 85 lines: one backend at a time is loaded, measured on every shape and closed (onnxruntime's thread pools
    spin after a run), with a bandwidth probe after each; the loop holds that order in one place.
    """
    from ..benchmark.environment import collect
    from ..benchmark.roofline import BandwidthProbes
    from ..runtimes.base import Source

    say = progress or (lambda _m: None)
    source = Source(root, unsafe=unsafe, imports=imports)
    source.manifest.require_integrity(root)
    g = source.generation.spec
    _check_shapes(g, repeats, batches, prompt_lengths, new_tokens)
    pairs = generation_pairs(source, backends)
    probes: list[dict] = []
    bandwidth = BandwidthProbes(threads)

    def probe(when: str) -> None:
        say(f"memory bandwidth probe ({when})")
        probes.append({**bandwidth.copy(PROBE_SECONDS), "when": when})

    probe("start")
    report = GenerationBenchReport(
        str(root), source.spec.name, seed, collect({"intra_op": threads}), {}, notes=unavailable_notes()
    )
    weight_bytes: dict[str, int] = {}

    def weights_of(name: str, precision: str) -> int | None:
        fmt = format_of(name)
        key = (fmt, precision) if fmt in ("onnx", "openvino") else ("onnx", "fp32")
        if key not in weight_bytes:
            weight_bytes[key] = streamed_bytes(source, *key)
        return weight_bytes[key]

    prompts = _prompts(source, g, batches, prompt_lengths, new_tokens, seed, data, report)
    shapes = list(prompts)
    refs, eager_recompute = {}, {}
    with runner_class_forward(source, "keras", "fp32") as eager:
        for shape in shapes:
            say(f"eager full recompute (the reference): batch {shape[0]}, prompt {shape[1]}, {shape[2]} new tokens")
            refs[shape], eager_recompute[shape] = _timed_recompute(
                eager, g, prompts[shape], shape[2], recompute_repeats
            )
            report.recompute.append(_recompute_record("keras", "fp32", shape, eager_recompute[shape]))
    baselines = {("keras", "fp32"): eager_recompute}
    # One backend at a time, loaded, measured on every shape and closed: nothing else runs or holds
    # threads (onnxruntime's pools spin after a run) while a backend is timed.
    for cls, precision in pairs:
        rows = {shape: GenerationRow(cls.name, precision, cls.task, *shape) for shape in shapes}
        report.rows += rows.values()
        reason = cls.unavailable_reason()
        if reason:
            for row in rows.values():
                row.skipped = reason
            continue
        say(f"loading {label(cls.name, precision, cls.task)}")
        try:
            with cls(source, precision, threads) as runner:
                for shape, row in rows.items():
                    row.ran_as = runner.ran_as
                    say(f"{runner.label}: batch {shape[0]}, prompt {shape[1]}, {shape[2]} new tokens")
                    _measure(row, runner, prompts[shape], shape[2], refs[shape], repeats)
            baseline = _full_baseline(source, cls.full_model or cls.name, precision, baselines, prompts,
                                      recompute_repeats, report, say)  # fmt: skip
        except AttnkitError:
            raise
        except Exception as e:  # a backend that crashes is reported in its rows, the others go on
            for row in rows.values():
                row.error = row.error or f"{type(e).__name__}: {str(e)[:300]}"
            continue
        for shape, row in rows.items():
            _derive(row, g, baseline.get(shape) if baseline else None, eager_recompute[shape], weights_of)
        probe(f"after {label(cls.name, precision, cls.task)}")
        probes += _working_set_probes(bandwidth, rows[shapes[0]].label, rows.values())
    bandwidth.close()
    _bound(report, probes)
    return report


def _prompts(source, g, batches, prompt_lengths, new_tokens, seed: int, data, report) -> dict:
    """``{(batch, prompt length, new tokens): Prompts}``: random ids, or with ``data`` (an ``.npz`` of the user's
    inputs) its first held-out rows, cut to what the positions allow beside the new tokens (their length then
    replaces ``prompt_lengths``)."""
    if data is None:
        shapes = [(b, p, n) for b in batches for p in prompt_lengths for n in new_tokens]
        return {shape: Prompts.random(g, shape[0], shape[1], seed, source_length=shape[1]) for shape in shapes}
    data = source.data(data)
    held = data.rows - data.calibration
    if max(batches) > held:
        raise AttnkitError(
            f"`{data.path}` has {held} held-out rows; batch {max(batches)} needs as many.", flag="--data",
            hint="Give more rows, or smaller --batch-sizes.",
        )  # fmt: skip
    report.notes.insert(0, f"prompts: the first held-out rows of {data.path} (sha256 {data.sha256[:12]})")
    out = {}
    for b in batches:
        for n in new_tokens:
            prompts = Prompts.from_data(g, data, n, rows=b)
            out[(b, int(prompts.ids.shape[1]), n)] = prompts
    return out


def _check_shapes(g, repeats: int, batches, prompt_lengths, new_tokens) -> None:
    """One-line errors, before anything is measured, for a request the model cannot serve."""
    if repeats < 1:
        raise AttnkitError(f"must be >= 1; got {repeats}.", flag="--repeats")
    for b in batches:
        if b < 1:
            raise AttnkitError(f"must be >= 1; got {b}.", flag="--batch-sizes")
    for p in prompt_lengths:
        for n in new_tokens:
            g.check_request(p, n, p)


def _full_baseline(source, full_name: str, precision: str, baselines: dict, prompts: dict, repeats: int, report,
                   say) -> dict | None:  # fmt: skip
    """Per shape, the full-recompute time of the backend's own forward runner at ``precision`` (the denominator of
    its "x recompute"), measured once per (backend, precision) and kept in ``baselines``; None where the export has
    no forward artifact for it."""
    baseline = baselines.get((full_name, precision))
    if baseline is not None:
        return baseline
    full = _forward_runner(source, full_name, precision)
    if full is None:
        return None
    g, baseline = source.generation.spec, {}
    with full:
        for shape, prompt in prompts.items():
            say(f"full recompute on {full.label}: {shape[2]} new tokens")
            _timed_recompute(full, g, prompt, min(shape[2], 2), 1)  # warm-up
            _, baseline[shape] = _timed_recompute(full, g, prompt, shape[2], repeats)
            report.recompute.append(_recompute_record(full_name, precision, shape, baseline[shape]))
    baselines[(full_name, precision)] = baseline
    return baseline


def _working_set_probes(bandwidth, label_: str, rows) -> list[dict]:
    """A read of each distinct per-step working set of ``rows``: the bandwidth that bounds them where it fits in
    cache (the DRAM copy probe bounds them where it does not)."""
    sizes = sorted({r.bytes_per_step for r in rows if r.bytes_per_step})
    return [{**bandwidth.read(size, PROBE_SECONDS), "when": f"working set of {label_}", "for": label_, "size": size}
            for size in sizes]  # fmt: skip


def _bound(report: GenerationBenchReport, probes: list[dict]) -> None:
    """The highest probe of the run bounds every row (see module docstring); a warning when the copy probes
    disagree by more than the noise."""
    bound = max(probes, key=lambda p: p["gbps"])
    copies = [p["gbps"] for p in probes if p["kind"] == "copy"]
    spread = 100.0 * (max(copies) / min(copies) - 1.0)
    report.bandwidth = {"gbps": bound["gbps"], "kind": bound["kind"], "threads": bound["threads"],
                        "bound_by": bound["when"], "copy_spread_pct": spread, "probes": probes}  # fmt: skip
    if spread > PROBE_NOISE_PCT:
        report.notes.append(
            f"warning: the bandwidth probes of this run differ by {spread:.0f} % ({min(copies):.1f}-{max(copies):.1f} "
            f"GB/s; consecutive probes <= {PROBE_NOISE_PCT:.0f} % apart when the machine is steady): the memory "
            "bandwidth changed during the run (another job on the host?); the ratios use the highest probe"
        )
    for row in report.rows:
        if row.achieved_gbps:
            row.pct_of_bandwidth = 100 * row.achieved_gbps / bound["gbps"]
            own = [p["gbps"] for p in probes if p.get("for") == row.label and p.get("size") == row.bytes_per_step]
            if own:
                row.working_set_gbps = max(own)
                row.pct_of_working_set = 100 * row.achieved_gbps / max(own)


def runner_class_forward(source, name: str, precision: str):
    """A forward runner of the registry (the recompute reference and baselines run what bench runs)."""
    from ..runtimes.registry import runner_class

    return runner_class(name, FORWARD)(source, precision)


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


def _derive(row, g, recompute_s, eager_recompute_s, weights_of) -> None:
    """Speedups over full recompute and the memory-traffic roofline of a measured row."""
    if row.total_s is None:
        return
    if recompute_s is not None:
        row.recompute_s = recompute_s
        row.speedup_vs_recompute = recompute_s / row.total_s
    row.speedup_vs_eager_recompute = eager_recompute_s / row.total_s
    weights = weights_of(row.backend, row.precision)
    if weights and row.itl_ms.get("p50"):
        scale, cache_width = widths(row)
        weights = int(weights * scale)
        context = row.prompt_length + np.arange(1, row.new_tokens)  # keys each decode step attends to
        cache = int(g.cache_bytes_per_token(cache_width) * row.batch * context.mean()) if row.new_tokens > 1 else 0
        row.bytes_per_step = weights + cache
        row.achieved_gbps = row.bytes_per_step / (row.itl_ms["p50"] / 1e3) / 1e9


def _timed_recompute(runner, g, prompts, n, repeats):
    """Full recompute through a loaded forward runner: the reference tokens and the fastest of ``repeats``."""
    best = None
    ref = None
    for _ in range(repeats):
        t0 = time.perf_counter()
        gen = recompute(lambda f: full_logits(runner.infer(f)), g, prompts, n, keep_logits=ref is None)
        elapsed = time.perf_counter() - t0
        ref = ref or gen
        best = elapsed if best is None else min(best, elapsed)
    return ref, best


def _measure(row: GenerationRow, runner, prompts, n: int, ref, repeats: int) -> None:
    check = GenerationCheck(row.backend, row.precision, row.task, tokens_required=row.precision == "fp32")
    run_generation(runner, prompts, min(n, 4), keep_logits=False)  # warm-up (first call of a signature)
    if runner.task == GENERATE:  # and of the one-token call TTFT times (keras-hub's generate compiles per length)
        run_generation(runner, prompts, 1, keep_logits=False)
    checked = run_generation(runner, prompts, n)
    _compare_steps(check, ref, checked.tokens, checked.logits, DEFAULT_TOLERANCES[row.precision])
    if runner.task == GENERATE:
        firsts, totals = [], []
        for _ in range(repeats):
            t0 = time.perf_counter()
            run_generation(runner, prompts, 1)
            firsts.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            run_generation(runner, prompts, n)
            totals.append(time.perf_counter() - t0)
        row.ttft_ms = 1e3 * float(np.median(firsts))
        row.total_s = float(np.median(totals))
        if n > 1:  # one call: only the mean inter-token latency is observable
            mean = 1e3 * (row.total_s - float(np.median(firsts))) / (n - 1)
            row.itl_ms = {"mean": mean, "p50": mean}
    else:
        runs = [run_generation(runner, prompts, n, keep_logits=False) for _ in range(repeats)]
        totals = [r.first_token_seconds + sum(r.step_seconds) for r in runs]
        row.ttft_ms = 1e3 * float(np.median([r.first_token_seconds for r in runs]))
        row.total_s = float(np.median(totals))
        steps = np.array([r.step_seconds for r in runs]) * 1e3  # (repeats, n - 1)
        if steps.size:
            summary = summarise(steps.ravel())
            row.itl_ms = {k: summary[k] for k in ("mean", "p50", "p90", "p99")}
            row.per_position_ms = [round(float(v), 4) for v in np.median(steps, axis=0)]
    row.repeats = repeats
    row.tokens_per_s = prompts.batch * n / row.total_s
    row.token_match, row.first_mismatch = check.token_match, check.first_mismatch
    row.sequences_identical = check.sequences_identical
    row.agrees = check.passed
    row.agreement = (
        "tokens identical" if check.passed and check.first_mismatch is None
        else f"{check.token_match:.0%} tokens match" + ("" if check.passed else f"; {'; '.join(check.failures)}")
    )  # fmt: skip
