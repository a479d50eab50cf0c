"""Graph passes on the exported ONNX: LayerNorm fusion and op counts.

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


def fuse_layernorm(model: onnx.ModelProto) -> tuple[onnx.ModelProto, int]:
    """Replace tf2onnx's decomposed LayerNorms with opset-17 ``LayerNormalization``.

    onnxscript's pattern rewriter does the matching (operand order included) and the clean-up;
    the patterns above are what is attnkit's. Constant folding first turns tf2onnx's Reshape/Identity
    chains over gamma and beta into constants the rules can read.

    Returns:
        (new model, number of LayerNorms fused). The input model is not modified.
    """
    import onnx_ir as ir
    import onnx_ir.passes.common as common
    from onnxscript import optimizer
    from onnxscript.rewriter import pattern

    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    if opset < 17:
        return onnx.ModelProto.FromString(model.SerializeToString()), 0
    graph = ir.serde.deserialize_model(onnx.shape_inference.infer_shapes(model))
    optimizer.fold_constants(graph)
    count = pattern.RewriteRuleSet(_rules(), commute=True).apply_to_model(graph)
    common.LiftConstantsToInitializersPass(size_limit=0)(graph)  # gamma/beta as initializers, like tf2onnx's
    common.RemoveUnusedNodesPass()(graph)
    fused = ir.serde.serialize_model(graph)
    del fused.graph.value_info[:]  # the shape inference above was for matching only
    return fused, count
