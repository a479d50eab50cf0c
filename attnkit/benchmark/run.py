"""bench(target): every backend x shape against the eager baseline in one run; returns data."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ..core.compare import MORE_DRAWS, reference_draws
from ..core.errors import AttnkitError, BackendError
from ..runtimes.base import Source
from ..runtimes.registry import backends_for, get_runner, hardware_warnings, split_backend
from .harness import StoppingRule, measure
from .results import BASELINE, BenchReport, Measurement, _agreement, near_tolerance, worst_of  # noqa: F401  (re-exported)


def parse_int_list(text: str | list | tuple, flag: str) -> tuple[int, ...]:
    """``"1,8,32"`` -> (1, 8, 32); refuses empty lists, zero, negatives and non-integers."""
    items = [s.strip() for s in text.split(",")] if isinstance(text, str) else [str(v) for v in text]
    values = []
    for item in items:
        try:
            value = int(item)
        except ValueError:
            value = 0
        if value < 1:
            raise AttnkitError(f"`{item or '(empty)'}` is not a positive integer; give e.g. 1,8,32.", flag=flag)
        values.append(value)
    if not values:
        raise AttnkitError("is empty; give e.g. 1,8,32.", flag=flag)
    return tuple(dict.fromkeys(values))


def _apply_threads(threads: int | None) -> dict:
    """Pin TensorFlow's thread pools (must happen before TF runs an op) and report what holds."""
    import tensorflow as tf

    applied = {"requested": threads}
    if threads:
        try:
            tf.config.threading.set_intra_op_parallelism_threads(threads)
            tf.config.threading.set_inter_op_parallelism_threads(1)
        except RuntimeError as e:  # TF already initialised in this process
            applied["tensorflow_note"] = str(e)
    applied["tensorflow_intra_op"] = tf.config.threading.get_intra_op_parallelism_threads() or "default (all cores)"
    applied["tensorflow_inter_op"] = tf.config.threading.get_inter_op_parallelism_threads() or "default"
    applied["onnxruntime_intra_op"] = threads or "default (all cores)"
    return applied


def _flops_fn(source: Source) -> Callable[[int, int], int | None]:
    from .roofline import graph_flops, preset_flops

    cache: dict[tuple[int, int], int | None] = {}

    def flops(batch: int, seq: int) -> int | None:
        if (batch, seq) not in cache:
            per_seq = preset_flops(source.manifest.model, seq)
            cache[(batch, seq)] = (
                per_seq * batch if per_seq else graph_flops(source.keras_model, source.spec, batch, seq)
            )
        return cache[(batch, seq)]

    return flops


@dataclass(frozen=True)
class Plan:
    """A validated request: (backend, precision) pairs, shapes, and the (format, precision) artifacts they read."""

    pairs: tuple[tuple[str, str], ...]
    batch_sizes: tuple[int, ...]
    seq_lens: tuple[int, ...]
    precisions: tuple[str, ...]
    notes: tuple[str, ...] = ()  # pairs that cannot exist (a backend that never runs a precision), said once

    @property
    def exports(self) -> list[tuple[str, str]]:
        """(format, precision) of every artifact the pairs read that an export makes (keras needs none)."""
        from ..runtimes.registry import format_of

        return [(format_of(b), p) for b, p in self.pairs if format_of(b) in ("savedmodel", "onnx", "openvino")]


def plan_of(backends, precisions, baseline: bool, batch_sizes, seq_lens) -> Plan:
    """Validate a bench request before any work (names, precisions, shapes); one-line errors naming the flag."""
    from ..core.names import PRECISIONS
    from ..tracing import canonical_precision

    batch_sizes = parse_int_list(batch_sizes, "--batch-sizes")
    seq_lens = parse_int_list(seq_lens, "--seq-lens")
    precisions = tuple(dict.fromkeys(canonical_precision(p, PRECISIONS) for p in precisions))
    if not precisions:
        raise AttnkitError(f"is empty; give a comma list of {', '.join(PRECISIONS)}.", flag="--precision")
    pairs, notes = _plan(backends, precisions, baseline)
    return Plan(tuple(pairs), batch_sizes, seq_lens, precisions, tuple(notes))


def bench(
    root: str | Path,
    *,
    backends: list[str] | tuple[str, ...] | None = None,
    batch_sizes: tuple[int, ...] | str = (1, 8, 32),
    seq_lens: tuple[int, ...] | str = (128,),
    precisions: tuple[str, ...] = ("fp32",),
    threads: int | None = None,
    rule: StoppingRule = StoppingRule(),
    seed: int = 0,
    baseline: bool = True,
    imports: tuple[str, ...] = (),
    unsafe: bool = False,
    calibrate: bool = True,
    on_the_fly: bool = False,
    progress: Callable[[str], None] | None = None,
    on_start: Callable[[int], None] | None = None,
    on_measurement: Callable[[Measurement], None] | None = None,
) -> BenchReport:
    """Benchmark every backend at every shape against the eager Keras baseline, in one run.

    About 90 lines: the run's order is its honesty (peaks calibrated first, eager references drawn once, one
    backend loaded, measured on every shape and closed before the next), kept readable in one place.

    Args:
        root: an export directory (a preset or ``.keras`` file goes through :func:`attnkit.orchestration.resolve.bench`,
            which exports it on the fly). A backend named in ``backends`` whose artifact the export lacks is
            refused, unless ``on_the_fly`` (the export was made for this run: the pair is listed as skipped).
        backends: backend names, optionally with a precision suffix (``onnxruntime-int8``); default: the
            registry's bench defaults (:func:`attnkit.runtimes.registry.bench_defaults`: the CPU backends).
        batch_sizes, seq_lens: workload shapes (every combination).
        precisions: precisions to run where a backend supports them; others are listed as skipped.
        threads: intra-op threads for TensorFlow and ONNX Runtime (default: all cores).
        rule: warm-up and stopping rule.
        seed: seed of the inputs (one input set per shape, shared by all backends).
        baseline: also measure eager Keras fp32 (needed for the speedup column).
        calibrate: measure the fp32/bf16 matmul peak for the % of peak column.

    Returns:
        BenchReport (data); render it with :mod:`attnkit.benchmark.report`.
    """
    from . import environment
    from .roofline import calibrate_int8, calibrate_peaks

    say = progress or (lambda _m: None)
    request = plan_of(backends, precisions, baseline, batch_sizes, seq_lens)
    plan, batch_sizes, seq_lens, precisions = (
        list(request.pairs),
        request.batch_sizes,
        request.seq_lens,
        request.precisions,
    )
    threads_info = _apply_threads(threads)
    from ..models import classify

    classify(str(root), flag="MODEL_OR_DIR")
    source = Source(root, unsafe=unsafe, imports=imports)
    source.manifest.require_integrity(root)
    spec = source.spec
    if spec.max_sequence and max(seq_lens) > spec.max_sequence:
        raise AttnkitError(
            f"{max(seq_lens)} exceeds the model's maximum position {spec.max_sequence}.",
            flag="--seq-lens",
            hint=f"Use lengths <= {spec.max_sequence}.",
        )
    _check_memory(source, [(b, s) for s in seq_lens for b in batch_sizes])
    plan = _runnable_from_export(source, plan, explicit=backends is not None and not on_the_fly)
    calibration = {}
    if calibrate:
        say("calibrating matmul peaks (fp32, bf16) with every installed library's kernel")
        calibration = calibrate_peaks(("float32", "bfloat16"))
        if any(p == "int8" for _, p in plan):
            int8 = source.manifest.artifact("onnx", "int8")
            scheme = int8.extra.get("int8_scheme", "u8s8") if int8 is not None else "u8s8"
            say(f"calibrating int8 peak (onnxruntime {scheme}, OpenVINO)")
            calibration["int8"] = calibrate_int8(scheme)
    report = BenchReport(
        model=spec.name,
        config={
            "target": str(root),
            "backends": [f"{n}[{p}]" for n, p in plan],
            "batch_sizes": list(batch_sizes),
            "seq_lens": list(seq_lens),
            "precisions": list(precisions),
            "warmup_s": rule.warmup_s,
            "min_iterations": rule.min_iterations,
            "min_seconds": rule.min_seconds,
            "seed": seed,
            "baseline": BASELINE + "[fp32]",
        },
        environment=environment.collect(threads_info),
        calibration=calibration,
    )
    report.hardware = [line for line, _ in hardware_warnings(source, plan).values()]
    shapes = [(b, s) for s in seq_lens for b in batch_sizes]
    say("eager fp32 reference outputs (every row's agreement is measured on its own inputs)")
    if any(p != "fp32" for _, p in plan):
        say(f"  and of {MORE_DRAWS} more input draws, for rows near their tolerance")
    with get_runner(BASELINE)(source) as reference_runner:
        feeds, reference, draws = reference_draws(spec, shapes, seed, reference_runner.infer, plan)
    flops = _flops_fn(source)
    if on_start:
        on_start(len(plan) * len(shapes))
    for name, precision in plan:
        for m in _run_backend(source, name, precision, threads, feeds, reference, draws, rule, say):
            m.flops = flops(m.batch, m.seq) if m.latency else None
            report.measurements.append(m)
            if on_measurement:
                on_measurement(m)
    _derive(report)
    return report


def _plan(backends, precisions, baseline: bool) -> tuple[list[tuple[str, str]], list[str]]:
    """(backend, precision) pairs to measure, baseline first, and notes on the pairs left out.

    ``onnxruntime-int8`` pins a precision; a plain name takes every ``precisions`` entry. A backend
    the user named explicitly that can run none of its precisions is refused (with the backends
    that can); in a larger matrix a pair that cannot exist is no row: one note says so.
    """
    from ..runtimes.registry import bench_defaults

    requested = [split_backend(b) for b in (backends or bench_defaults())]
    plan = [(BASELINE, "fp32")] if baseline else []
    notes: list[str] = []
    for name, pinned in requested:
        cls = get_runner(name)  # unknown names -> one line listing the valid ones
        wanted = [pinned] if pinned else list(precisions)
        if backends and not any(p in cls.precisions for p in wanted):
            p = wanted[0]
            raise BackendError(
                f"backend `{name}` cannot run {', '.join(wanted)}; it runs {', '.join(cls.precisions)}. "
                f"Backends that run {p}: {', '.join(backends_for(p)) or 'none here'}.",
                flag="--precision",
            )
        plan += [(name, p) for p in wanted if (name, p) not in plan and p in cls.precisions]
        missing = [p for p in wanted if p not in cls.precisions]
        if missing:
            notes.append(f"{name} runs {', '.join(cls.precisions)}; not {', '.join(missing)}")
    return plan, notes


def _runnable_from_export(source: Source, plan, explicit: bool) -> list[tuple[str, str]]:
    """Pairs whose artifact the export has. A pair named with --backends that its runner could run
    but whose artifact is missing is refused (naming the export command), not skipped with exit 0."""
    keep = []
    for name, precision in plan:
        cls = get_runner(name)
        if cls.needs == "keras" or source.manifest.artifact(cls.needs, precision) is not None:
            keep.append((name, precision))
        elif explicit and precision in cls.precisions:
            source.artifact(cls.needs, precision)  # raises BackendError naming the export command
        elif source.manifest.artifact(cls.needs) is not None:
            keep.append((name, precision))  # listed as skipped, with the reason
    return keep


def _check_memory(source: Source, shapes) -> None:
    """Refuse shapes whose attention logits alone (batch x heads x seq² floats) would not fit in half
    of this machine's memory, before anything is allocated (TensorFlow would fail or swap)."""
    from ..models.attention import attention_layers
    from .environment import _memory_gib

    heads = max(
        (
            getattr(layer, "num_heads", 0) or getattr(layer, "_num_heads", 0) or getattr(layer, "num_query_heads", 0)
            for layer in attention_layers(source.keras_model)
        ),
        default=0,
    )
    total = (_memory_gib() or 0) * 2**30
    for batch, seq in shapes:
        need = 4 * batch * heads * seq * seq
        if total and need > total / 2:
            raise AttnkitError(
                f"batch {batch} x seq {seq} needs {need / 2**30:.0f} GiB for one attention layer's logits "
                f"({heads} heads); this machine has {total / 2**30:.0f} GiB.",
                flag="--seq-lens" if seq > 1024 else "--batch-sizes",
                hint="Use smaller --seq-lens or --batch-sizes.",
            )


def _run_backend(source, name, precision, threads, feeds, reference, draws, rule, say) -> list[Measurement]:
    cls = get_runner(name)
    shapes = list(feeds)

    def all_shapes(**kw) -> list[Measurement]:
        return [Measurement(name, precision, b, s, **kw) for b, s in shapes]

    reason = cls.unavailable_reason()
    if reason:
        return all_shapes(skipped=reason)
    if precision not in cls.precisions:
        return all_shapes(skipped=f"{name} runs {', '.join(cls.precisions)}, not {precision}")
    if cls.needs != "keras" and source.manifest.artifact(cls.needs, precision) is None:
        return all_shapes(skipped=f"no {cls.needs} artifact at {precision} in the export")
    runner = cls(source, precision, threads=threads)
    out = []
    try:
        say(f"loading {runner.label}")
        runner.load()
        for b, s in shapes:
            say(f"measuring {runner.label} batch {b} seq {s}")
            m = Measurement(name, precision, b, s, ran_as=runner.ran_as if runner.ran_as != precision else None,
                            computes_in=runner.computes_in)  # fmt: skip
            try:
                m.agreement = _agreement(reference[(b, s)], runner.infer(feeds[(b, s)]), precision)
                if near_tolerance(m.agreement) and draws.get((b, s)):  # agreed on one draw, by a thin margin
                    more = [_agreement(ref, runner.infer(f), precision) for f, ref in draws[(b, s)]]
                    m.agreement = worst_of([m.agreement, *more])
                m.latency = measure(lambda f=feeds[(b, s)]: runner.infer(f), rule)
            except Exception as e:  # one failing shape/backend must not lose the others
                m.error = f"{type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}"
            out.append(m)
    except Exception as e:  # load failure: every remaining shape reports it
        done = {(m.batch, m.seq) for m in out}
        out += [
            Measurement(name, precision, b, s, error=f"{type(e).__name__}: {str(e)[:200]}")
            for b, s in shapes
            if (b, s) not in done
        ]
    finally:
        runner.close()
    return out


def _derive(report: BenchReport) -> None:
    """Speedup vs the eager fp32 baseline of the same shape; % of the matmul peak of that precision."""
    base = {
        (m.batch, m.seq): m.latency.mean
        for m in report.measurements
        if m.backend == BASELINE and m.precision == "fp32" and m.latency
    }
    # fp16 runs on fp32 units on CPUs without avx512_fp16; int8 rows against the int8 kernel's peak
    # (their FLOPs include the attention matmuls that stay float, so the % is an upper estimate).
    peaks = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float32", "int8": "int8"}
    for m in report.measurements:
        if m.latency and (m.batch, m.seq) in base:
            m.speedup = base[(m.batch, m.seq)] / m.latency.mean
    ran = [
        (m, peaks.get(m.computes_in or m.ran_as or m.precision, ""))
        for m in report.measurements
        if m.latency and m.gflops
    ]
    for dtype, peak in report.calibration.items():  # the best library's kernel, timed as a row (median call)
        top = max((m for m, d in ran if d == dtype), key=lambda m: m.gflops, default=None)
        if peak.get("gflops") and top is not None and top.gflops > peak["gflops"]:
            # a whole model beat every matmul calibrated (a fused graph can: measured on the AMX Xeon, OpenVINO
            # bf16 ran W-base above TensorFlow's 2048^2 bf16 matmul): that row sets the peak, and says so
            peak["matmul_gflops"], peak["gflops"] = peak["gflops"], top.gflops
            how = f" (ran {top.ran_as})" if top.ran_as else ""
            peak["library"] = f"{top.backend} {top.precision}{how} {top.batch}x{top.seq}, above every matmul"
    for m, dtype in ran:
        peak = report.calibration.get(dtype, {}).get("gflops")  # the arithmetic as it ran
        if peak:
            m.pct_of_peak = 100.0 * m.gflops / peak
