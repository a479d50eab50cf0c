"""OpenVINO int8 chosen by measurement on the machine it is made for (issue 19: "int8 that is right and fast
per target").

By default ``export --format openvino --precision int8`` writes weight-only int8 (NNCF ``compress_weights``,
computed in f32: the same answers on every CPU, :func:`write_int8`). Where the
exporting machine *is* the target (``--target host``, or a CPU class the machine belongs to) and has int8 dot
products (AVX-512 VNNI, AVX-VNNI, AMX-INT8), OpenVINO can compute in int8: its dynamic activation quantisation
of a weight-compressed IR, and NNCF's full post-training quantisation. Whether they stay within int8's
tolerance depends on the model and on that CPU's kernels and is known nowhere in advance (on the AMX Xeon of
issue 19, NNCF PTQ calibrated on random ids ran 3.9x onnxruntime fp32 at rel L2 0.128 — wrong), so attnkit
measures, as TensorRT's builder times its tactics on the GPU it builds for:

1. every candidate is made: weight-only; weight-only with dynamic activation quantisation (group size
   :data:`DYNAMIC_GROUP`); full PTQ (``model_type=TRANSFORMER``, calibrated on :data:`CALIBRATION_ITEMS`
   batches drawn from the model's own input domain, ``spec.sample_feeds``; NNCF's overflow fix where the CPU
   has no VNNI, whose 16-bit pair sums saturate), with NNCF's SmoothQuant (its default for transformers) and
   without it (on the AMX Xeon, W-base at 8 x 128: SmoothQuant's rescaling took PTQ from rel L2 0.026 to
   0.040 and from 253 to 290 ms); where the CPU computes bf16 natively (avx512_bf16, AMX), full PTQ without
   SmoothQuant with the attention output projections left unquantised and the rest in bf16 (:data:`PTQ_BF16`;
   the inference precision is pinned in the IR for attnkit's runner and asked of Triton's backend). Of the
   layers a throw-away sweep on the AMX Xeon left unquantised (attention outputs, FFN outputs, the first or
   last block), only the attention outputs brought PTQ within the tolerance while staying well ahead of bf16:
   W-base at 8 x 128, rel L2 0.0215 at 217.5 ms, where PTQ without SmoothQuant was 0.039 at 281 ms and the
   fp32 IR 899 ms; bench then timed it at 229 ms against the fp32 IR's 371 ms in bf16 (BENCHMARKS.md); and,
   only where a PTQ is the fastest candidate but does not agree, PTQ with NNCF's accuracy control, which
   returns layers to f32 until the model is within the tolerance;
2. each is held to int8's tolerance against the fp32 IR with f32 forced (which the export check holds to eager
   Keras at the fp32 tolerance) on fresh inputs at the export check's own shapes
   (:data:`~attnkit.core.compare.CHECK_SHAPES`, :data:`~.openvino_nncf.CHECK_DRAWS` draws of each: a scheme's
   error can swing with the padding of a draw, and the check's own draw is another one) and the spec's optimum
   shape — compiled as attnkit's runner
   compiles it (f32 forced, or the precision the IR pins and then f32 forced too, as a CPU without bf16
   computes it), and, where OpenVINO's default precision is not f32 (bf16 on AMX and avx512_bf16 CPUs), also
   with OpenVINO's defaults, as Triton's OpenVINO backend and a user's script compile it — and timed at the
   optimum shape as attnkit's runner compiles it; a candidate beyond :data:`~attnkit.core.compare.HEADROOM` of
   the tolerance is held to :data:`~attnkit.core.compare.MORE_DRAWS` more draws of every shape, the rule ``verify``
   (hence the export check) and ``bench`` apply to every row;
3. the fastest that agrees is written if it beats weight-only by more than :data:`MARGIN` (weight-only
   answers do not depend on the CPU, worth a few per cent); the manifest records every candidate.

The candidates are measured most promising first, and none is started once the search has spent
:data:`SEARCH_SECONDS` (10 min): ``bench`` and ``run`` export on the fly for this machine, so the search runs
whenever they are asked for int8 on a CPU with int8 dot products, and must end.

Until this version the search drew 2 x 45 and 8 x 128 and asked a replacement for weight-only to stay within
HEADROOM there. Measured on the AMX Xeon (W-base): PTQ without SmoothQuant was 0.026 at those shapes and
0.034 at the export check's 2 x 16, so the shapes the check draws are the ones that decide; the rule near
the tolerance is now the check's own.

NNCF quantises and OpenVINO compiles and runs; choosing among the schemes by accuracy and speed on one machine
is what no library does, so that part is written here.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from ..core.compare import DEFAULT_TOLERANCES, MORE_DRAWS, beyond_headroom
from . import openvino_nncf as calls

#: weight-only with f32 compute; the default and the fallback
WEIGHT_ONLY = "weight-only"
DYNAMIC = "weight-only + dynamic activations"
PTQ = "full PTQ"
PTQ_PLAIN = "full PTQ, no SmoothQuant"
PTQ_ACCURACY_CONTROL = "full PTQ + accuracy control"
PTQ_BF16 = "full PTQ + bf16"
#: OpenVINO's dynamic quantisation group size for the DYNAMIC candidate (its CPU plugin's default where on)
DYNAMIC_GROUP = 32
#: a candidate other than weight-only must be this much faster than weight-only to be written
MARGIN = 0.10
#: the search's time budget: no candidate is started after it (W-base, the largest preset, on 2 cores: about 6 min
#: on Zen 5 with accuracy control, issue 34; encoder-tiny's takes seconds)
SEARCH_SECONDS = 600.0

SCHEMES = {
    WEIGHT_ONLY: {"method": "nncf.compress_weights", "mode": "int8_asym", "granularity": "per-channel",
                  "compute": "f32"},
    DYNAMIC: {"method": "nncf.compress_weights", "mode": "int8_asym", "granularity": "per-channel",
              "compute": f"int8 activations quantised at run time, group size {DYNAMIC_GROUP}"},
    PTQ: {"method": "nncf.quantize", "model_type": "transformer", "compute": "int8"},
    PTQ_PLAIN: {"method": "nncf.quantize", "model_type": "transformer", "smooth_quant": False, "compute": "int8"},
    PTQ_ACCURACY_CONTROL: {"method": "nncf.quantize_with_accuracy_control", "model_type": "transformer",
                           "compute": "int8, layers returned to f32 where int8 broke the tolerance"},
    PTQ_BF16: {"method": "nncf.quantize", "model_type": "transformer", "smooth_quant": False,
               "ignored": "attention output projections", "inference_precision": "bf16",
               "compute": "int8 MatMuls; the attention output projections, the attention and the rest in bf16"},
}  # fmt: skip


def scheme_record(name: str, **extra) -> dict:
    """Manifest ``extra`` of an int8 IR made by scheme ``name`` (how it was made, what it computes in)."""
    return dict(SCHEMES[name], scheme=name, **extra)


@dataclass
class Candidate:
    """One int8 scheme as measured on this machine."""

    name: str
    rel_l2: float | None = None  # worst over the accuracy inputs, against the fp32 IR
    cosine: float | None = None
    within: bool = False  # on every draw it was held to
    draws: int = 1  # draws of the optimum shape, CHECK_DRAWS times as many of the check's: 1 + MORE_DRAWS near HEADROOM
    ms: float | None = None  # median at the spec's optimum shape
    speedup: float | None = None  # against the fp32 IR (f32 forced) timed in the same run
    ran_as: str | None = None  # what OpenVINO reports: inference precision, dynamic quantisation group
    defaults_ran_as: str | None = None  # where OpenVINO's default precision is not f32: what defaults computed in
    error: str | None = None
    model: Any = field(default=None, repr=False)

    def to_dict(self) -> dict:
        d = asdict(self)
        d.pop("model")
        return {k: (round(v, 6) if isinstance(v, float) else v) for k, v in d.items() if v is not None}


@dataclass
class Choice:
    """What :func:`choose` wrote and why."""

    name: str
    model: Any
    candidates: list[Candidate]
    reason: str
    calibrated_on: str = "random ids"  # "data" where --data's calibration rows calibrated the PTQ candidates

    def record(self) -> dict:
        """Manifest ``extra`` of the int8 IR: the scheme written, the precision attnkit compiles it in (with the
        CPU requirement of :data:`PTQ_BF16`'s bf16 rest) and every candidate measured."""
        from ..core.targets import OPENVINO_INT8_BF16_REQUIREMENT

        extra = scheme_record(self.name, chosen_by=self.reason)
        extra.setdefault("inference_precision", "f32")
        if extra["inference_precision"] == "bf16":  # warned where bf16 is emulated or runs as f32
            extra["requires"] = OPENVINO_INT8_BF16_REQUIREMENT
        if self.name in CALIBRATED:
            extra["calibrated_on"] = self.calibrated_on
        if self.candidates:
            extra["candidates"] = [c.to_dict() for c in self.candidates]
        return extra


#: schemes whose activation ranges come from calibration batches
CALIBRATED = (PTQ, PTQ_PLAIN, PTQ_BF16, PTQ_ACCURACY_CONTROL)


def random_calibration_note(name: str) -> str | None:
    """What to tell a user whose PTQ was calibrated on random ids (no ``--data``), where that measured worse."""
    if name not in CALIBRATED:
        return None
    return (
        "calibrated on random ids from the model's input domain: give --data FILE to calibrate on your inputs "
        "(on the byte LM trained here, calibrating on held-out text kept 0.02-0.13 points more next-byte accuracy "
        "in NNCF PTQ, BENCHMARKS.md)"
    )


def computes_in(extra: dict) -> str:
    """The arithmetic of an int8 IR from its manifest record (the peak its bench rows count against): weight-only
    is decompressed to f32; dynamic activations and full PTQ compute their MatMuls in int8. Records written
    before the search (no ``compute`` key) were weight-only."""
    return "fp32" if extra.get("compute", "f32") == "f32" else "int8"


def searches(target, features: frozenset[str]) -> str | None:
    """None when this machine is the target and can compute int8 (so the candidates are measured where they will
    run), else the reason weight-only is written without a search."""
    from ..core.targets import PORTABLE, VNNI_FEATURES

    if target is None or target.cpu_class == PORTABLE:
        return "the portable target: f32 compute, the same answers on every CPU"
    if not target.features <= features:
        return f"this machine is not of the target class {target.cpu_class}, so nothing can be timed"
    if not features & set(VNNI_FEATURES):
        return (
            "no int8 dot products here (no VNNI/AMX): on this class full PTQ ran slower than f32 "
            "(and outside int8's tolerance on W-base) and dynamic activation quantisation changed nothing (BENCHMARKS.md)"
        )
    return None


def host_openvino_int8(features: frozenset[str]) -> str:
    """What ``export --format openvino --precision int8 --target host`` does on a machine with ``features``
    (``attnkit env``)."""
    from ..core.targets import BF16_FEATURES, resolve

    skip = searches(resolve("host", features), features)
    if skip:
        return f"{WEIGHT_ONLY}: {skip}"
    bf16 = f", {PTQ_BF16}" if features & set(BF16_FEATURES) else ""
    return f"measured at export: the fastest that agrees of {WEIGHT_ONLY}, {DYNAMIC}, {PTQ} with and without SmoothQuant{bf16} (+ accuracy control)"


def weight_only(fp32_model, group: int = 0):
    """Weight-only int8 of ``fp32_model`` (NNCF, 8-bit asymmetric per channel) with ``group`` pinned as its
    dynamic activation quantisation (0: f32 compute wherever it is compiled)."""
    import nncf

    from .openvino import pin_runtime_options

    model = nncf.compress_weights(fp32_model.clone(), mode=nncf.CompressWeightsMode.INT8_ASYM)
    pin_runtime_options(model, DYNAMIC_QUANTIZATION_GROUP_SIZE=group)
    return model


def write_int8(stage, fp32_dir, rel_dir: str) -> str:
    """Weight-only ``int8`` IR of the fp32 IR in ``fp32_dir`` (what every target gets for a decoder's step, and
    for a forward model where :func:`choose` does not measure something faster).

    Why weight-only and not NNCF's full post-training quantisation: measured on the AVX2 EPYC (OpenVINO
    2026.4, NNCF 3.4, W-base batch 8 x 128), full PTQ with ``model_type=TRANSFORMER`` was rel L2 0.20 (0.059
    with the overflow fix, 0.042 with SmoothQuant too, 0.048 with the attention and FFN-out MatMuls left in
    f32: all above the int8 tolerance of 0.03) and slower than f32 there; weight-only int8 was 0.016 (0.0068
    on encoder-tiny). The step of a decoder is weight-bandwidth-bound: decoder-small's stateful step ran
    2.15 against 4.25 ms a token in f32, 99 % of its tokens identical. The compute stays f32 (OpenVINO's
    dynamic activation quantisation is off, pinned in the IR and asked by the runner), so the answers are the
    same on every CPU and in every consumer.
    """
    from .openvino import IR_XML, require

    ov = require()
    model = weight_only(ov.Core().read_model(str(fp32_dir / IR_XML)))
    (stage / rel_dir).mkdir(parents=True, exist_ok=True)
    ov.save_model(model, str(stage / rel_dir / IR_XML), compress_to_fp16=False)
    return rel_dir


def choose(
    fp32_xml,
    spec,
    features: frozenset[str],
    target=None,
    force: bool = False,
    timer: Callable[[Callable[[], Any]], float] | None = None,
    say=lambda _msg: None,
    data=None,
    budget_s: float = SEARCH_SECONDS,
) -> Choice:
    """The int8 IR to write for ``fp32_xml`` (see the module docstring).

    Args:
        fp32_xml: the fp32 IR.
        spec: the export spec (input domain for calibration and accuracy inputs, optimum shape for timing).
        features: this machine's CPU features.
        target: the export's resolved ``--target``.
        force: measure every candidate even where :func:`searches` says there is no point (tests, and the
            evidence for a CPU class without int8 dot products).
        timer: median milliseconds of a call (the benchmark layer's harness, handed down by the caller: the
            exporters sit below it); needed only when the candidates are measured.
        data: the user's inputs (:class:`attnkit.core.data.UserData`): PTQ calibrates on its calibration rows
            instead of random ids from the input domain, and every candidate is also held to int8's tolerance on
            its held-out rows.
        budget_s: once this many seconds of the search have passed, no further candidate is started (each one
            left is recorded as not measured, and the pick is among those measured; weight-only always is).
    """
    from .openvino import require

    ov = require()
    core = ov.Core()
    fp32 = core.read_model(str(fp32_xml))
    skip = None if force else searches(target, features)
    if skip:
        return Choice(WEIGHT_ONLY, weight_only(fp32), [], skip)

    from ..core.targets import BF16_FEATURES, VNNI_FEATURES

    if timer is None:
        raise TypeError("choose() needs a timer to measure the int8 candidates")
    bench = _Bench(core, fp32, spec, timer, say, data.batches("held_out") if data is not None else [])
    int8_dot = bool(features & set(VNNI_FEATURES))
    calibration = data.batches("calibration") if data is not None else calls.calibration_inputs(spec)
    # the most promising first (full PTQ + bf16 was the pick on AMX, Zen 4 and Zen 5; PTQ without SmoothQuant next),
    # so that a search stopped by its time budget has measured those
    plan = [(WEIGHT_ONLY, lambda: weight_only(fp32))]
    if features & set(BF16_FEATURES) or force:
        keep = calls.attention_outputs(fp32)
        plan.append((PTQ_BF16, lambda: calls.ptq(fp32, calibration, not int8_dot, smooth_quant=False, keep_float=keep,
                                                  precision="bf16")))  # fmt: skip
    plan += [(name, lambda s=smooth: calls.ptq(fp32, calibration, not int8_dot, smooth_quant=s))
             for name, smooth in ((PTQ_PLAIN, False), (PTQ, True))]  # fmt: skip
    if int8_dot or force:
        plan.append((DYNAMIC, lambda: weight_only(fp32, DYNAMIC_GROUP)))
    candidates = [bench.within_budget(name, make, budget_s) for name, make in plan]
    fastest = min((c for c in candidates if c.ms is not None), key=lambda c: c.ms, default=None)
    if fastest is not None and fastest.name in (PTQ, PTQ_PLAIN, PTQ_BF16) and not agrees(fastest, candidates[0]):
        accuracy, expected = bench.accuracy, bench.expected
        candidates.append(
            bench.within_budget(
                PTQ_ACCURACY_CONTROL,
                lambda: calls.ptq_accuracy_control(fp32, calibration, accuracy, expected, overflow_fix=not int8_dot),
                budget_s,
            )  # fmt: skip
        )
    choice = pick(candidates)
    choice.calibrated_on = "data" if data is not None else "random ids"
    return choice


class _Bench:
    """The measuring half of :func:`choose`: the fp32 IR's answers on the accuracy draws and its time at the
    optimum shape, then each candidate compiled in every form a consumer may compile it in, held to int8's
    tolerance (more draws near it) and timed."""

    def __init__(self, core, fp32, spec, timer, say, held_out: list[dict]):
        self.core, self.spec, self.timer, self.say = core, spec, timer, say
        self.started = time.perf_counter()
        self.drawn = calls.accuracy_draws(spec)  # the random draws come first; the data's rows follow
        self.accuracy = list(self.drawn.values()) + held_out
        self.timed = spec.sample_feeds(spec.batch.opt, spec.sequence.opt, seed=7100)
        self.reference = calls.compile_model(core, fp32, 0)
        self.expected = [calls.run(self.reference, f) for f in self.accuracy]
        self.fp32_ms = calls.time_ms(self.reference, self.timed, timer)
        self.default_precision = calls.default_precision(core)
        self.more: list[tuple[dict, dict]] = []  # further draws and the fp32 IR's answers, drawn when first needed
        say(f"int8 search: fp32 IR {self.fp32_ms:.1f} ms at {spec.batch.opt}x{spec.sequence.opt}")

    def held(self, compiled_models: list, pairs: list[tuple[dict, dict]]) -> tuple[float, float, bool]:
        """Worst agreement of every compiled form on ``pairs`` of (inputs, the fp32 IR's answers)."""
        worst = [calls.agreement([e for _, e in pairs], [calls.run(m, f) for f, _ in pairs]) for m in compiled_models]
        return max(w[0] for w in worst), min(w[1] for w in worst), all(w[2] for w in worst)

    def forms(self, c: Candidate) -> list:
        """The candidate compiled as attnkit's runner compiles it, then as other consumers may: the rest in f32 (a
        consumer that forces f32, or a CPU without bf16) and with OpenVINO's defaults (Triton's OpenVINO backend
        cannot force f32; on AMX/avx512_bf16 CPUs the default is bf16)."""
        group, precision = calls.pinned_group(c.model), calls.pinned_precision(c.model)
        forms = [calls.compile_model(self.core, c.model, group, precision)]
        c.ran_as = f"{forms[0].get_property('INFERENCE_PRECISION_HINT').get_type_name()}, dynamic quantisation " \
                   f"{forms[0].get_property('DYNAMIC_QUANTIZATION_GROUP_SIZE')}"  # fmt: skip
        if precision != "f32":
            forms.append(calls.compile_model(self.core, c.model, group, "f32"))
        if self.default_precision != "f32":
            forms.append(self.core.compile_model(c.model, "CPU", {"PERFORMANCE_HINT": "LATENCY"}))
            c.defaults_ran_as = forms[-1].get_property("INFERENCE_PRECISION_HINT").get_type_name()
        return forms

    def within_budget(self, name: str, make, budget_s: float) -> Candidate:
        """:meth:`measure`, or a candidate recorded as not measured once the search has spent ``budget_s`` (weight-only,
        the first, is always measured)."""
        spent = time.perf_counter() - self.started
        if name != WEIGHT_ONLY and spent > budget_s:
            c = Candidate(name, error=f"not measured: the search's time budget of {budget_s:.0f} s was spent")
            self.say(f"int8 search: {name}: {c.error}")
            return c
        return self.measure(name, make)

    def measure(self, name: str, make) -> Candidate:
        c = Candidate(name)
        try:
            c.model = make()
            forms = self.forms(c)
            c.rel_l2, c.cosine, c.within = self.held(forms, list(zip(self.accuracy, self.expected)))
            if c.within and beyond_headroom(c.rel_l2, DEFAULT_TOLERANCES["int8"].rel_l2):
                # near the tolerance: held to more draws, as verify and bench hold such a row
                if not self.more:
                    more = calls.accuracy_draws(self.spec, 1 + MORE_DRAWS)
                    further = [feeds for key, feeds in more.items() if key not in self.drawn]
                    self.more.extend((feeds, calls.run(self.reference, feeds)) for feeds in further)
                l2, cosine, ok = self.held(forms, self.more)  # the first draws' figures stand: only new ones run
                c.rel_l2, c.cosine, c.within = max(c.rel_l2, l2), min(c.cosine, cosine), ok
                c.draws = 1 + MORE_DRAWS
            c.ms = calls.time_ms(forms[0], self.timed, self.timer)
            c.speedup = self.fp32_ms / c.ms
        except Exception as e:  # one candidate failing (an NNCF or plugin error) must not lose the others
            c.error = f"{type(e).__name__}: {str(e).strip().splitlines()[0][:200] if str(e).strip() else ''}"
            c.model = None
        self.say(f"int8 search: {name}: " + (c.error or f"rel L2 {c.rel_l2:.3g}, {c.ms:.1f} ms"))
        return c


def agrees(c: Candidate, base: Candidate) -> bool:
    """Within int8's tolerance, and, beyond :data:`HEADROOM` of it, on :data:`MORE_DRAWS` more draws too (the rule
    of verify and bench; :func:`choose` draws them). Weight-only (``base``) is written whatever it measured: the
    export check judges it, as without a search."""
    near = c.rel_l2 is not None and beyond_headroom(c.rel_l2, DEFAULT_TOLERANCES["int8"].rel_l2)
    return c.within and c.ms is not None and (c is base or not near or c.draws > MORE_DRAWS)


def pick(candidates: list[Candidate]) -> Choice:
    """The fastest candidate that :func:`agrees` if it beats weight-only by more than :data:`MARGIN`, else
    weight-only (always the first candidate)."""
    base = candidates[0]
    assert base.name == WEIGHT_ONLY
    fits = [c for c in candidates if agrees(c, base)]
    best = min(fits, key=lambda c: c.ms) if fits else base
    if best is not base and agrees(base, base) and best.ms > base.ms * (1 - MARGIN):
        best = base
        reason = f"measured here: no agreeing candidate was more than {MARGIN:.0%} faster than weight-only"
    elif best is base:
        reason = "measured here: weight-only is the fastest candidate that agrees" if agrees(base, base) \
            else "measured here: no candidate within int8's tolerance; weight-only written, the export check judges it"  # fmt: skip
    else:
        draws = f" on {best.draws * calls.CHECK_DRAWS} draws of each check shape"
        reason = f"measured here: the fastest candidate that agrees (rel L2 {best.rel_l2:.3g}{draws}), " \
                 f"{best.ms:.1f} ms against weight-only's {base.ms:.1f} ms"  # fmt: skip
    if best.model is None:  # weight-only itself could not be made: NNCF's own error, as without a search
        raise RuntimeError(f"NNCF could not compress the IR's weights: {best.error}")
    return Choice(best.name, best.model, candidates, reason)


#
