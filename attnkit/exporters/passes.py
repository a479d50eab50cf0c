"""Graph passes on the exported ONNX: LayerNorm fusion and op counts.

Written by hand because no library matches what tf2onnx emits for Keras 3's LayerNormalization:
tf2onnx lowers each ``ReduceMean`` over the last axis of a rank-3 tensor to ``GlobalAveragePool``
and folds the affine part into ``x * s + (-mean * s + beta)``::

    mean = GAP(x); var = GAP((x - mean) * (x - mean)); s = Reciprocal(Sqrt(var + eps)) * gamma
    y = x * s + (Neg(mean) * s + beta)

onnxruntime.transformers' ``FusionLayerNormalization`` / ``FusionLayerNormalizationTF`` expect
``ReduceMean`` and ``Sub`` and fuse nothing here (measured: 0 of 4 on encoder-tiny). This pass
replaces each such subgraph with one opset-17 ``LayerNormalization`` (what TensorRT needs to keep
LayerNorm safe in fp16, and a single kernel for onnxruntime).
"""

from __future__ import annotations

from collections import Counter

import numpy as np
import onnx
from onnx import helper, numpy_helper

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


class _Graph:
    """Producer/consumer indexes and constant folding of Reshape/Identity/Cast chains over initializers."""

    def __init__(self, model: onnx.ModelProto):
        self.model = model
        self.producer = {o: n for n in model.graph.node for o in n.output}
        self.consumers: dict[str, list] = {}
        for n in model.graph.node:
            for i in dict.fromkeys(n.input):  # once per node, even for Mul(x, x)
                self.consumers.setdefault(i, []).append(n)
        self.inits = {i.name: i for i in model.graph.initializer}

    def const(self, name: str) -> np.ndarray | None:
        if name in self.inits:
            return numpy_helper.to_array(self.inits[name])
        node = self.producer.get(name)
        if node is None:
            return None
        if node.op_type == "Constant":
            return numpy_helper.to_array(node.attribute[0].t)
        if node.op_type in ("Identity", "Cast", "Reshape", "Squeeze", "Unsqueeze"):
            value = self.const(node.input[0])
            if value is None:
                return None
            if node.op_type == "Reshape":
                shape = self.const(node.input[1])
                return (
                    None
                    if shape is None
                    else value.reshape([d if d != 0 else value.shape[i] for i, d in enumerate(shape)])
                )
            return value.reshape(-1) if node.op_type != "Cast" else value
        return None

    def only(self, name: str, op_type: str):
        """The single consumer of ``name`` if it has that op type."""
        users = self.consumers.get(name, [])
        return users[0] if len(users) == 1 and users[0].op_type == op_type else None

    def other_input(self, node, name: str) -> str:
        return node.input[1] if node.input[0] == name else node.input[0]


def _is_last_axis_mean(g: _Graph, node, rank: dict[str, int]) -> bool:
    if node.op_type == "GlobalAveragePool":
        return rank.get(node.input[0]) == 3
    if node.op_type == "ReduceMean":
        axes = [a.ints for a in node.attribute if a.name == "axes"]
        axes = list(axes[0]) if axes else (list(g.const(node.input[1])) if len(node.input) > 1 else None)
        return axes in ([-1], [rank.get(node.input[0], 0) - 1])
    return False


def _match_layernorm(g: _Graph, mean, rank):
    """Nodes of one LayerNorm subgraph anchored at its mean, or None."""
    x = mean.input[0]
    users = {n.op_type: n for n in g.consumers.get(mean.output[0], [])}
    sub, neg = users.get("Sub"), users.get("Neg")
    if sub is None or neg is None or list(sub.input) != [x, mean.output[0]]:
        return None
    square = g.only(sub.output[0], "Mul")
    if square is None or list(square.input) != [sub.output[0]] * 2:
        return None
    var = (g.consumers.get(square.output[0]) or [None])[0]
    if var is None or var.op_type != mean.op_type or not _is_last_axis_mean(g, var, rank):
        return None
    add_eps = g.only(var.output[0], "Add")
    eps = g.const(g.other_input(add_eps, var.output[0])) if add_eps else None
    sqrt = g.only(add_eps.output[0], "Sqrt") if add_eps else None
    recip = g.only(sqrt.output[0], "Reciprocal") if sqrt else None
    scale = g.only(recip.output[0], "Mul") if recip else None
    if eps is None or eps.size != 1 or scale is None:
        return None
    gamma = g.const(g.other_input(scale, recip.output[0]))
    users = g.consumers.get(scale.output[0], [])
    mul_x = next((n for n in users if n.op_type == "Mul" and x in n.input), None)
    mul_mean = next((n for n in users if n.op_type == "Mul" and neg.output[0] in n.input), None)
    if gamma is None or mul_x is None or mul_mean is None:
        return None
    add_beta = g.only(mul_mean.output[0], "Add")
    beta = g.const(g.other_input(add_beta, mul_mean.output[0])) if add_beta else None
    final = g.only(add_beta.output[0], "Add") if add_beta else None
    if beta is None or final is None or mul_x.output[0] not in final.input:
        return None
    nodes = [mean, sub, neg, square, var, add_eps, sqrt, recip, scale, mul_x, mul_mean, add_beta, final]
    return nodes, x, float(eps.reshape(-1)[0]), gamma.reshape(-1), beta.reshape(-1), final.output[0]


def fuse_layernorm(model: onnx.ModelProto) -> tuple[onnx.ModelProto, int]:
    """Replace tf2onnx's decomposed LayerNorms with opset-17 ``LayerNormalization``.

    Returns:
        (new model, number of LayerNorms fused). The input model is not modified.
    """
    model = onnx.ModelProto.FromString(model.SerializeToString())
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    if opset < 17:
        return model, 0
    inferred = onnx.shape_inference.infer_shapes(model)
    rank = {
        v.name: len(v.type.tensor_type.shape.dim)
        for v in list(inferred.graph.value_info) + list(inferred.graph.input) + list(inferred.graph.output)
    }
    g = _Graph(model)
    removed: set[int] = set()
    replacements = {}
    count = 0
    for node in list(model.graph.node):
        if node.op_type not in ("GlobalAveragePool", "ReduceMean") or id(node) in removed:
            continue
        if not _is_last_axis_mean(g, node, rank):
            continue
        match = _match_layernorm(g, node, rank)
        if match is None:
            continue
        nodes, x, eps, gamma, beta, out = match
        # Only fuse when the intermediates are used inside the pattern alone.
        inside = {o for n in nodes for o in n.output} - {out}
        if any(c not in nodes for t in inside for c in g.consumers.get(t, [])):
            continue
        name = nodes[-1].name.rsplit("/", 1)[0] + "/LayerNormalization"
        dtype = numpy_helper.to_array(g.inits[x]).dtype if x in g.inits else np.float32
        scale_name, bias_name = f"{name}/gamma", f"{name}/beta"
        model.graph.initializer.extend(
            [
                numpy_helper.from_array(gamma.astype(dtype), scale_name),
                numpy_helper.from_array(beta.astype(dtype), bias_name),
            ]
        )
        fused = helper.make_node(
            "LayerNormalization", [x, scale_name, bias_name], [out], name=name, axis=-1, epsilon=eps
        )
        replacements[id(nodes[-1])] = fused
        removed.update(id(n) for n in nodes)
        count += 1
    new_nodes = [replacements.get(id(n), n) for n in model.graph.node if id(n) not in removed or id(n) in replacements]
    del model.graph.node[:]
    model.graph.node.extend(new_nodes)
    _drop_unused_initializers(model)
    return model, count


def _drop_unused_initializers(model: onnx.ModelProto) -> None:
    used = {i for n in model.graph.node for i in n.input} | {o.name for o in model.graph.output}
    keep = [i for i in model.graph.initializer if i.name in used]
    del model.graph.initializer[:]
    model.graph.initializer.extend(keep)
