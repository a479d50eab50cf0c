"""Graph passes on the exported ONNX: LayerNorm fusion, a GELU runtimes fuse, and op counts.

Written by hand because no library matches what tf2onnx emits for Keras 3's LayerNormalization:
tf2onnx lowers each ``ReduceMean`` over the last axis of a rank-3 tensor to ``GlobalAveragePool``
and folds the affine part into ``x * s + (-mean * s + beta)``::

    mean = GAP(x); var = GAP((x - mean) * (x - mean)); s = Reciprocal(Sqrt(var + eps)) * gamma
    y = x * s + (Neg(mean) * s + beta)

onnxruntime.transformers' ``FusionLayerNormalization`` / ``FusionLayerNormalizationTF`` expect
``ReduceMean`` and ``Sub`` and fuse nothing here (measured: 0 of 4 on encoder-tiny). This pass
replaces each such subgraph with one opset-17 ``LayerNormalization`` (what TensorRT needs to keep
LayerNorm safe in fp16, and a single kernel for onnxruntime). The pattern is attnkit's; the
matching and graph surgery are onnxscript's rewriter (it replaced 150 lines of hand-written matcher).

The second pass rewrites TensorFlow's exact GELU, ``0.5 * x * erfc(-x / sqrt(2))``, which tf2onnx lowers to
``(0.5 * x) * (1 - Erf(Neg(x) * 0.7071))``, into the decomposition every runtime's GELU fusion looks for,
``x * (Erf(x / sqrt(2)) + 1) * 0.5``: onnxruntime's ``GeluFusion`` then makes one ``Gelu`` kernel of it and
OpenVINO a GELU post-op of the FullyConnected before it, where tf2onnx's form stays five element-wise passes
over the FFN's widest tensor. The two are equal (erf is odd); onnxruntime's outputs were bit-identical on
W-base. Measured on the AMX Xeon of issue 19 (W-base, 8 x 128, alternating in one process): onnxruntime int8
263 vs 325 ms (median), whose profile had the GELU at 24 % of the time; OpenVINO bf16 356 vs 373 ms. No library
pass does this rewrite: onnxruntime's transformers ``FusionGelu`` knows PyTorch's and TF 1's forms, not this one.
"""

from __future__ import annotations

from collections import Counter

import onnx

#: ops reported in the manifest's fusion counts
COUNTED_OPS = (
    "LayerNormalization",
    "Attention",
    "MultiHeadAttention",
    "Gelu",
    "FastGelu",
    "BiasGelu",
    "SkipLayerNormalization",
    "FusedMatMul",
    "MatMul",
    "MatMulInteger",
    "DynamicQuantizeMatMul",
    "Softmax",
    "GlobalAveragePool",
    "ReduceMean",
    "Erf",
)


def op_counts(model: onnx.ModelProto) -> dict[str, int]:
    """How many nodes of each interesting op type the graph has (the manifest's fusion counts)."""
    counts = Counter(n.op_type for n in model.graph.node)
    out = {op: counts.get(op, 0) for op in COUNTED_OPS}
    # MatMul directly followed by an Add of a constant: the bias-add pattern a GEMM fusion can take.
    producers = {o: n for n in model.graph.node for o in n.output}
    inits = {i.name for i in model.graph.initializer}
    out["MatMul+Add"] = sum(
        1
        for n in model.graph.node
        if n.op_type == "Add"
        and any(producers.get(i) is not None and producers[i].op_type == "MatMul" for i in n.input)
        and any(i in inits for i in n.input)
    )
    return out


def _rules():
    """onnxscript pattern rules for tf2onnx's two LayerNorm decompositions (mean by GlobalAveragePool on
    a rank-3 tensor, or by ReduceMean over the last axis), each replaced by one LayerNormalization
    named inside the LayerNorm's own name scope (``locate`` maps Keras layers to ONNX by scope)."""
    import onnx_ir as ir
    from onnxscript.rewriter import pattern

    root: dict[str, str] = {}

    def decomposed(mean):
        def target(op, x, eps, gamma, beta):
            mu = mean(op, x)
            d = op.Sub(x, mu)
            scale = op.Mul(op.Reciprocal(op.Sqrt(op.Add(mean(op, op.Mul(d, d)), eps))), gamma)
            return op.Add(op.Mul(x, scale), op.Add(op.Mul(op.Neg(mu), scale), beta))

        return target

    def constants(context, x, eps, gamma, beta, rank3=False, **_):
        root["name"] = context.root.name
        known = all(v.const_value is not None for v in (eps, gamma, beta)) and eps.const_value.size == 1
        return known and (not rank3 or (x.shape is not None and len(x.shape) == 3))

    def fused(op, x, eps, gamma, beta, **_):
        def const(v):
            return op.Constant(value=ir.tensor(v.const_value.numpy().reshape(-1)))

        epsilon = float(eps.const_value.numpy().reshape(-1)[0])
        y = op.LayerNormalization(x, const(gamma), const(beta), axis=-1, epsilon=epsilon)
        y.producer().name = root["name"].rsplit("/", 1)[0] + "/LayerNormalization"
        return y

    return [
        pattern.RewriteRule(
            decomposed(lambda op, t: op.GlobalAveragePool(t)),
            fused,
            lambda context, **v: constants(context, rank3=True, **v),
        ),
        pattern.RewriteRule(decomposed(lambda op, t: op.ReduceMean(t, axes=[-1])), fused, constants),
    ]


def _gelu_rules():
    """The onnxscript rule for tf2onnx's Erfc GELU (module docstring), its constants checked, replaced by the
    canonical form with nodes named inside the GELU's own name scope."""
    import numpy as np
    import onnx_ir as ir
    from onnxscript.rewriter import pattern

    root: dict[str, object] = {}

    def erfc_form(op, x, half, one, rsqrt2):
        return op.Mul(op.Mul(x, half), op.Sub(one, op.Erf(op.Mul(op.Neg(x), rsqrt2))))

    def constants(context, x, half, one, rsqrt2, **_):
        values = [v.const_value for v in (half, one, rsqrt2)]
        if any(v is None or v.size != 1 for v in values):
            return False
        h, o, r = (float(v.numpy().reshape(-1)[0]) for v in values)
        root["name"], root["dtype"] = context.root.name, values[0].numpy().dtype
        return h == 0.5 and o == 1.0 and abs(r - 2**-0.5) < 1e-6

    def canonical(op, x, **_):
        def const(v):
            return op.Constant(value=ir.tensor(np.asarray(v, dtype=root["dtype"])))

        scope = root["name"].rsplit("/", 1)[0]
        scaled = op.Div(x, const(np.sqrt(2.0)))
        erf = op.Erf(scaled)
        plus = op.Add(erf, const(1.0))
        times = op.Mul(x, plus)
        y = op.Mul(times, const(0.5))
        for value, name in ((scaled, "div"), (erf, "Erf"), (plus, "add"), (times, "mul_x"), (y, "mul_half")):
            value.producer().name = f"{scope}/{name}"
        return y

    return [pattern.RewriteRule(erfc_form, canonical, constants)]


def apply_passes(model: onnx.ModelProto) -> tuple[onnx.ModelProto, dict[str, int]]:
    """Both passes (module docstring) on a copy of ``model``.

    Returns:
        (new model, ``{"layernorm_fused": n, "gelu_canonical": m}``), what the manifest records.
    """
    layernorm = _rules() if _opset(model) >= 17 else []
    model, (layernorms, gelus) = _apply(model, [layernorm, _gelu_rules()])
    return model, {"layernorm_fused": layernorms, "gelu_canonical": gelus}


def _opset(model: onnx.ModelProto) -> int:
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)


def fuse_layernorm(model: onnx.ModelProto) -> tuple[onnx.ModelProto, int]:
    """Replace tf2onnx's decomposed LayerNorms with opset-17 ``LayerNormalization``.

    onnxscript's pattern rewriter does the matching (operand order included) and the clean-up;
    the patterns above are what is attnkit's. Constant folding first turns tf2onnx's Reshape/Identity
    chains over gamma and beta into constants the rules can read.

    Returns:
        (new model, number of LayerNorms fused). The input model is not modified.
    """
    if _opset(model) < 17:
        return onnx.ModelProto.FromString(model.SerializeToString()), 0
    model, (count,) = _apply(model, [_rules()])
    return model, count


def _apply(model: onnx.ModelProto, rule_sets: list) -> tuple[onnx.ModelProto, list[int]]:
    """Each list of rules applied in turn by onnxscript's rewriter to one copy of ``model`` (deserialised, shape
    inferred and constant-folded once): (new model, rewrites made by each)."""
    import onnx_ir as ir
    import onnx_ir.passes.common as common
    from onnxscript import optimizer
    from onnxscript.rewriter import pattern

    graph = ir.serde.deserialize_model(onnx.shape_inference.infer_shapes(model))
    optimizer.fold_constants(graph)
    counts = [pattern.RewriteRuleSet(rules, commute=True).apply_to_model(graph) if rules else 0 for rules in rule_sets]
    common.LiftConstantsToInitializersPass(size_limit=0)(graph)  # gamma/beta as initializers, like tf2onnx's
    common.RemoveUnusedNodesPass()(graph)
    fused = ir.serde.serialize_model(graph)
    del fused.graph.value_info[:]  # the shape inference above was for matching only
    return fused, counts
