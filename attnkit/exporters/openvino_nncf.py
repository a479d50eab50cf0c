"""The NNCF and OpenVINO calls of the int8 search (:mod:`.openvino_int8`): its inputs (accuracy draws at the
export check's shapes, calibration batches from the model's input domain), compiling a candidate as attnkit's
runner compiles it, running and timing it, and NNCF's post-training quantisation with and without accuracy
control. The search itself, which candidate to make, hold and write, stays in :mod:`.openvino_int8`."""

from __future__ import annotations

from ..core.compare import CHECK_SHAPES, DEFAULT_TOLERANCES, HEADROOM, compare_outputs

#: calibration batches for PTQ (each spec.batch.opt rows at a sequence length in [sequence.min, sequence.opt])
CALIBRATION_ITEMS = 16
#: input draws of each of the export check's shapes a candidate is held to, for one of the optimum shape. One was
#: not enough: encoder-tiny's full PTQ at 2 x 16 (Zen 4) was rel L2 0.013 on the search's draw and 0.063 on the
#: export check's, so the search wrote it and the check failed it (CI at b6ff2ed); over 20 draws its median was
#: 0.033, 11 of them beyond int8's 0.03, its worst 0.053 (full PTQ + bf16's worst 0.0100, weight-only's 0.0092)
CHECK_DRAWS = 8
#: where an int8 IR records the inference precision attnkit compiles it in (:func:`pinned_precision`)
PRECISION_KEY = ["attnkit", "inference_precision"]


def accuracy_shapes(spec) -> list[tuple[int, int]]:
    """The export check's shapes (:data:`~attnkit.core.compare.CHECK_SHAPES`, within the spec's lengths) and the
    spec's optimum shape, where the candidates are timed."""
    lo, hi = spec.sequence.min, spec.max_sequence or spec.sequence.max
    shapes = [(b, min(max(s, lo), hi)) for b, s in CHECK_SHAPES] + [(spec.batch.opt, spec.sequence.opt)]
    return list(dict.fromkeys(shapes))


def accuracy_draws(spec, draws: int = 1) -> dict[tuple[int, int, int], dict]:
    """Fresh inputs keyed by (batch, sequence, draw): ``draws`` draws of the optimum shape and :data:`CHECK_DRAWS`
    times as many of each of the export check's shapes (small, so cheap to hold a candidate to); draw ``k`` of
    shape ``i`` has the seed :meth:`~attnkit.core.spec.ExportSpec.sample_draws` gives it, so fewer draws are a
    subset of more."""
    shapes = accuracy_shapes(spec)
    opt = (spec.batch.opt, spec.sequence.opt)
    out = {}
    for i, (b, s) in enumerate(shapes):
        for k in range(draws * (1 if (b, s) == opt else CHECK_DRAWS)):
            out[(b, s, k)] = spec.sample_feeds(b, s, seed=7000 + k * len(shapes) + i, target=spec.check_target(s))
    return out


def calibration_inputs(spec) -> list[dict]:
    """PTQ calibration batches in the model's own input domain (token ids in its vocabulary, ragged masks)."""
    import numpy as np

    rng = np.random.default_rng(7200)
    lengths = rng.integers(spec.sequence.min, spec.sequence.opt + 1, size=CALIBRATION_ITEMS)
    return [spec.sample_feeds(spec.batch.opt, int(n), seed=7300 + i) for i, n in enumerate(lengths)]


def default_precision(core) -> str:
    """The inference precision OpenVINO's CPU plugin picks by itself on this machine ("f32", "bf16", "f16")."""
    return core.get_property("CPU", "INFERENCE_PRECISION_HINT").get_type_name()


def pinned_group(model) -> int:
    """The dynamic activation quantisation group size the IR pins (0 where it pins none: f32 compute)."""
    key = ["runtime_options", "DYNAMIC_QUANTIZATION_GROUP_SIZE"]
    return int(model.get_rt_info(key).astype(int)) if model.has_rt_info(key) else 0


def pinned_precision(model) -> str:
    """The inference precision attnkit compiles an int8 IR in (:data:`PTQ_BF16`: ``bf16``; else ``f32``). Kept in
    the IR's own ``attnkit`` section: OpenVINO reads no inference precision from ``runtime_options``
    (:func:`~attnkit.exporters.openvino.pin_runtime_options`), so attnkit's runner and the Triton config it writes
    ask for it; a consumer that does not compiles OpenVINO's default, which the search held to the tolerance too."""
    return str(model.get_rt_info(PRECISION_KEY).astype(str)) if model.has_rt_info(PRECISION_KEY) else "f32"


def attention_outputs(model) -> list[str]:
    """Names of the MatMuls that project attention's output: a MatMul with a constant weight whose activation comes,
    through reshapes and transposes only, from a ``ScaledDotProductAttention`` (OpenVINO's converter fuses
    attnkit's attention into one) or from a MatMul of two activations (the probabilities times the values, where
    it does not). Found by the graph, not by layer names, so a keras-hub model's are found as attnkit's are."""
    passing = {"Reshape", "Transpose", "Convert", "Squeeze", "Unsqueeze"}

    def source(op, port: int):
        """What feeds ``op``'s input ``port``, through reshapes and transposes."""
        node = op.input(port).get_source_output().get_node()
        while node.get_type_name() in passing:
            node = node.input(0).get_source_output().get_node()
        return node

    found = []
    for op in model.get_ordered_ops():
        if op.get_type_name() != "MatMul" or source(op, 1).get_type_name() != "Constant":
            continue
        src = source(op, 0)
        kind = src.get_type_name()
        if kind == "ScaledDotProductAttention" or (kind == "MatMul" and source(src, 1).get_type_name() != "Constant"):
            found.append(op.get_friendly_name())
    return found


def compile_model(core, model, group: int, precision: str = "f32"):
    config = {
        "PERFORMANCE_HINT": "LATENCY",
        "INFERENCE_PRECISION_HINT": precision,
        "DYNAMIC_QUANTIZATION_GROUP_SIZE": group,
    }
    return core.compile_model(model, "CPU", config)


def run(compiled, feeds: dict) -> dict:
    # an infer request's infer(), not the compiled model's __call__: __call__ shares the caller's arrays with the
    # plugin by default (share_inputs=True), and an 8 x 128 input fed that way was overwritten by a later
    # inference of another request at the same shape (measured, OpenVINO 2026.4: the next accuracy check then
    # compared other inputs' answers, rel L2 0.49)
    result = compiled.create_infer_request().infer(inputs_of(compiled, feeds))
    return {o.any_name: result[o].copy() for o in compiled.outputs}


def time_ms(compiled, feeds: dict, timer) -> float:
    request, feeds = compiled.create_infer_request(), inputs_of(compiled, feeds)
    return timer(lambda: request.infer(feeds))


def inputs_of(compiled, feeds: dict) -> dict:
    """The feeds the compiled model takes (a spec's sample feeds may hold more)."""
    wanted = {i.any_name for i in compiled.inputs}
    return {k: v for k, v in feeds.items() if k in wanted}


def agreement(expected: list[dict], got: list[dict]) -> tuple[float, float, bool]:
    worst_l2, worst_cos, ok = 0.0, 1.0, True
    for ref, out in zip(expected, got):
        for a in compare_outputs(ref, out, DEFAULT_TOLERANCES["int8"]):
            worst_l2, worst_cos, ok = max(worst_l2, a.rel_l2), min(worst_cos, a.cosine), ok and a.passed
    return worst_l2, worst_cos, ok


def advanced(overflow_fix: bool, smooth_quant: bool = True):
    from nncf.quantization.advanced_parameters import (
        AdvancedQuantizationParameters,
        AdvancedSmoothQuantParameters,
        OverflowFix,
    )

    return AdvancedQuantizationParameters(
        overflow_fix=OverflowFix.ENABLE if overflow_fix else OverflowFix.DISABLE,
        smooth_quant_alphas=AdvancedSmoothQuantParameters()
        if smooth_quant
        else AdvancedSmoothQuantParameters(matmul=-1),
    )


def ptq(fp32_model, calibration: list[dict], overflow_fix: bool, smooth_quant: bool = True,
         keep_float: list[str] = (), precision: str = "f32"):  # fmt: skip
    """NNCF's PTQ; the MatMuls named in ``keep_float`` are left unquantised, and attnkit compiles the result in
    ``precision`` (:func:`pinned_precision`)."""
    import nncf

    from .openvino import pin_runtime_options

    ignored = {"ignored_scope": nncf.IgnoredScope(names=list(keep_float), validate=False)} if keep_float else {}
    model = nncf.quantize(fp32_model.clone(), nncf.Dataset(calibration), subset_size=len(calibration),
                          model_type=nncf.ModelType.TRANSFORMER,
                          advanced_parameters=advanced(overflow_fix, smooth_quant), **ignored)  # fmt: skip
    pin_runtime_options(model, DYNAMIC_QUANTIZATION_GROUP_SIZE=0)
    if precision != "f32":
        model.set_rt_info(precision, PRECISION_KEY)
    return model


def ptq_accuracy_control(fp32_model, calibration: list[dict], accuracy: list[dict], expected: list[dict],
                          overflow_fix: bool):  # fmt: skip
    """NNCF's accuracy-aware PTQ: quantise, then return the layers that cost the most accuracy to f32 until the
    model's metric (one minus the worst rel L2 against the fp32 IR: NNCF divides by f32's metric, so it must not
    be 0) is within :data:`HEADROOM` of int8's tolerance of f32's.

    Without SmoothQuant: NNCF 3.4's accuracy control returns a layer to f32 by removing its FakeQuantize but
    leaves SmoothQuant's rescaling of the layers around it, so every layer it returned made the model worse
    (measured on encoder-tiny, AVX2 EPYC: rel L2 0.12 quantised, 0.81 with every FakeQuantize removed); without
    SmoothQuant the same search ended within tolerance (6.4e-3, 10 of 15 MatMuls in f32)."""
    import nncf

    from .openvino import pin_runtime_options

    def validate(compiled, indices) -> tuple[float, list[float]]:
        per_item = []
        for i in indices:
            l2, _cos, _ok = agreement([expected[i]], [run(compiled, accuracy[i])])
            per_item.append(1.0 - l2)
        return min(per_item), per_item

    model = nncf.quantize_with_accuracy_control(
        fp32_model.clone(),
        nncf.Dataset(calibration),
        nncf.Dataset(list(range(len(accuracy))), lambda i: accuracy[i]),
        validate,
        max_drop=HEADROOM * DEFAULT_TOLERANCES["int8"].rel_l2,  # within HEADROOM: agrees without more draws
        drop_type=nncf.DropType.ABSOLUTE,
        subset_size=len(calibration),
        model_type=nncf.ModelType.TRANSFORMER,
        advanced_quantization_parameters=advanced(overflow_fix, smooth_quant=False),
    )
    pin_runtime_options(model, DYNAMIC_QUANTIZATION_GROUP_SIZE=0)
    return model
