"""verify --locate: the first Keras layer whose ONNX counterpart diverges, and the error curve.

No existing tool maps Keras layers to ONNX nodes, so this is written here. tf2onnx keeps
TensorFlow's name scopes in node names (``encoder_tiny_1/encoder_block_0_1/ffn_inner_1/...``),
and Keras opens one scope per layer call (``<layer>`` plus a ``_N`` uniquifying suffix). For each
Keras layer we take the ONNX nodes in its scope, find the tensors that leave the scope (consumed
outside it, or graph outputs), expose them as extra graph outputs, and compare the one that
matches the layer's output best with the Keras value captured by wrapping the layer's ``call``.
Layers are listed in the order their calls *return*, so inner layers come before their parents
and the first diverging entry is the innermost layer where the error appears.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from ..core.compare import Tolerance, compare_outputs
from ..core.errors import ArtifactError
from ..runtimes.base import Source


@dataclass
class LayerError:
    layer: str
    onnx_tensor: str | None
    shape: list[int]
    rel_l2: float | None = None
    max_abs: float | None = None
    cosine: float | None = None
    exceeds: bool = False


@dataclass
class LocateReport:
    precision: str
    artifact: str
    tolerance: dict
    curve: list[LayerError] = field(default_factory=list)

    @property
    def first(self) -> LayerError | None:
        return next((e for e in self.curve if e.exceeds), None)

    def to_dict(self) -> dict:
        first = self.first
        return {
            "precision": self.precision,
            "artifact": self.artifact,
            "tolerance": self.tolerance,
            "first_diverging": asdict(first) if first else None,
            "curve": [asdict(e) for e in self.curve],
        }


def keras_intermediates(model, spec, feeds) -> list[tuple[str, np.ndarray]]:
    """(layer path, float output) of every nested layer, in the order the calls return."""
    import keras

    from ..tracing import call_model

    captured: list[tuple[str, np.ndarray]] = []
    layers = [
        layer
        for layer in model._flatten_layers(include_self=False)
        if not isinstance(layer, (keras.layers.InputLayer, keras.layers.Dropout))
        # a layer Keras built without a path (the Softmax inside keras.layers.MultiHeadAttention, as keras-hub
        # models use it) has no name scope to find in the ONNX graph
        and layer.path is not None
    ]
    originals = {}
    for layer in layers:
        originals[id(layer)] = layer.call

        def call(*args, __layer=layer, __call=layer.call, **kwargs):
            out = __call(*args, **kwargs)
            first = out[0] if isinstance(out, (tuple, list)) else out
            if hasattr(first, "dtype") and "float" in str(first.dtype):
                captured.append((__layer.path, np.asarray(keras.ops.cast(first, "float32"))))
            return out

        layer.call = call
    try:
        call_model(model, spec, feeds)
    finally:
        for layer in layers:
            del layer.call
    return captured


def _scope_pattern(model_name: str, path: str, nested: tuple[str, ...] = ()) -> re.Pattern:
    """The ONNX name scope of the layer at ``path``. A nested functional model (a keras-hub backbone) opens a
    scope when traced that its layers' paths do not carry (``gpt2_causal_lm_1/gpt2_backbone_1/transformer_layer_0_1/``
    for ``transformer_layer_0``): ``nested`` names those models, allowed between the root and the path."""

    def scope(name):
        return f"{re.escape(name)}(?:_\\d+)?/"

    models = f"(?:{'|'.join(scope(n) for n in nested)})*" if nested else ""
    return re.compile("^" + scope(model_name) + models + "".join(scope(p) for p in path.split("/")))


@dataclass
class _Graph:
    """What every scope's boundary search reads of the graph, computed once per graph."""

    nodes: list
    consumers: dict[str, list]
    outputs: set[str]
    constant: set[str]  # initializers and what nodes fed only by them make

    @classmethod
    def of(cls, onnx_model) -> _Graph:
        consumers: dict[str, list] = {}
        for n in onnx_model.graph.node:
            for i in n.input:
                consumers.setdefault(i, []).append(n)
        constant = {i.name for i in onnx_model.graph.initializer}
        for n in onnx_model.graph.node:  # graph order is topological: constants fold forward
            if all(i in constant for i in n.input if i):
                constant.update(n.output)
        return cls(list(onnx_model.graph.node), consumers, {o.name for o in onnx_model.graph.output}, constant)


def _boundaries(graph: _Graph, pattern: re.Pattern) -> list[str]:
    """Tensors that leave the nodes of a scope, and those that leave it grown by the unscoped nodes it alone
    feeds: tf2onnx's rewriters name the nodes they make ``Gemm__N``/``Reshape__N`` without a scope (keras-hub's
    EinsumDense projections become such a Gemm), so a layer's output can be made outside its scope."""
    nodes = [n for n in graph.nodes if pattern.match(n.name)]

    def leaving(group):
        inside = {id(n) for n in group}
        return [
            o
            for n in group
            for o in n.output
            if o in graph.outputs or any(id(c) not in inside for c in graph.consumers.get(o, []))
        ]

    grown, made = list(nodes), {o for n in nodes for o in n.output}
    for n in graph.nodes:
        inputs = [i for i in n.input if i and i not in graph.constant]
        if "/" not in n.name and inputs and all(i in made for i in inputs) and not made.issuperset(n.output):
            grown.append(n)
            made.update(n.output)
    return list(dict.fromkeys(leaving(nodes) + (leaving(grown) if len(grown) > len(nodes) else [])))


def _onnx_values(onnx_model, names: list[str], feeds) -> dict[str, np.ndarray]:
    """Run the graph with ``names`` added as outputs; returns the float ones."""
    import onnx

    try:
        import onnxruntime as ort
    except ImportError:
        from ..core.errors import DependencyError

        raise DependencyError("onnxruntime", "cpu", "--locate") from None

    inferred = onnx.shape_inference.infer_shapes(onnx_model)
    types = {v.name: v.type.tensor_type.elem_type for v in inferred.graph.value_info}
    # onnx's inference stops at onnxruntime's contrib ops (MatMulNBits of q8/q4, ...) and types nothing after
    # them; onnxruntime's symbolic shape inference knows them
    try:
        from onnxruntime.tools.symbolic_shape_infer import SymbolicShapeInference

        symbolic = SymbolicShapeInference.infer_shapes(onnx_model, auto_merge=True, guess_output_rank=True)
        types.update({v.name: v.type.tensor_type.elem_type for v in symbolic.graph.value_info})
    except Exception:  # noqa: BLE001 - its own failure only leaves those tensors untyped, as before
        pass
    floats = (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.BFLOAT16)
    existing = {o.name for o in onnx_model.graph.output}
    extra = [n for n in dict.fromkeys(names) if n not in existing and types.get(n) in floats]
    model = onnx.ModelProto.FromString(onnx_model.SerializeToString())
    model.graph.output.extend(onnx.helper.make_tensor_value_info(n, types[n], None) for n in extra)
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL  # keep every tensor
    options.log_severity_level = 3
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    wanted = [o.name for o in session.get_outputs()]
    return {
        k: v.astype(np.float32)
        for k, v in zip(wanted, session.run(wanted, feeds))
        if np.issubdtype(v.dtype, np.floating)
    }


def locate(
    root: str | Path,
    precision: str,
    tolerance: Tolerance,
    batch: int = 2,
    seq: int = 16,
    seed: int = 0,
    *,
    unsafe: bool = False,
    imports: tuple[str, ...] = (),
) -> LocateReport:
    """Error of every Keras layer's ONNX counterpart, and the first that exceeds ``tolerance``.

    Raises:
        ArtifactError: the export has no ONNX artifact at ``precision``.
    """
    import keras
    import onnx

    source = Source(root, unsafe=unsafe, imports=imports)
    record = source.manifest.artifact("onnx", precision)
    if record is None:
        raise ArtifactError(
            f"`{root}` has no ONNX artifact at {precision}; --locate compares Keras layers with ONNX tensors.",
            flag="--locate",
            hint="Export with --format onnx first.",
        )
    spec = source.spec
    if spec.max_sequence:
        seq = min(seq, spec.max_sequence)
    feeds = spec.sample_feeds(batch, seq, seed)
    model = source.keras_model
    layers = keras_intermediates(model, spec, feeds)
    onnx_model = onnx.load(source.root / record.path)
    nested = tuple(sorted({m.name for m in model._flatten_layers(include_self=False) if isinstance(m, keras.Model)}))
    graph = _Graph.of(onnx_model)
    candidates = {path: _boundaries(graph, _scope_pattern(model.name, path, nested)) for path, _ in layers}
    values = _onnx_values(onnx_model, [n for names in candidates.values() for n in names], feeds)
    report = LocateReport(precision, record.path, asdict(tolerance))
    for path, ref in layers:
        best = None
        for name in candidates[path]:
            got = values.get(name)
            if got is None or got.size != ref.size:
                continue
            # the one comparison of the package (attnkit.core.compare), on this layer's output
            (a,) = compare_outputs({path: ref}, {path: got.reshape(ref.shape)}, tolerance)
            if best is None or a.rel_l2 < best.rel_l2:
                best = LayerError(path, name, list(ref.shape), a.rel_l2, a.max_abs, a.cosine)
        if best is None:
            best = LayerError(path, None, list(ref.shape))  # fused away or renamed: no counterpart
        else:
            best.exceeds = best.rel_l2 > tolerance.rel_l2 or best.cosine < tolerance.min_cosine
        report.curve.append(best)
    _drop_false_counterparts(report.curve)
    return report


def _drop_false_counterparts(curve: list[LayerError]) -> None:
    """A layer whose enclosing layer agrees cannot itself diverge: its best tensor was not its output. That
    happens when tf2onnx renames the nodes that compute it (keras-hub's attention projections become
    ``Gemm__N`` outside the layer's scope, so what leaves the scope is the context before the output
    projection). Such an entry is reported as having no counterpart, not as the first divergence."""
    agreeing = {e.layer for e in curve if e.onnx_tensor is not None and not e.exceeds}
    for e in curve:
        parents = ["/".join(e.layer.split("/")[:i]) for i in range(1, e.layer.count("/") + 1)]
        if e.exceeds and any(p in agreeing for p in parents):
            e.onnx_tensor, e.rel_l2, e.max_abs, e.cosine, e.exceeds = None, None, None, None, False


def locate_all(
    root: str | Path,
    atol=None,
    rtol=None,
    *,
    seed: int = 0,
    unsafe: bool = False,
    imports: tuple[str, ...] = (),
    progress=None,
) -> list[LocateReport]:
    """:func:`locate` for every ONNX artifact of an export, with verify's tolerances.

    Raises:
        ArtifactError: the export has no ONNX artifact (names ``--locate``).
    """
    from ..core.errors import ArtifactError
    from ..exporters.manifest import Manifest
    from .agreement import resolve_tolerance

    precisions = [a.precision for a in Manifest.load(root).artifacts if a.format == "onnx"]
    if not precisions:
        raise ArtifactError(
            f"`{root}` has no ONNX artifact; --locate compares Keras layers with ONNX tensors.",
            flag="--locate",
            hint="Export with --format onnx.",
        )
    out = []
    for precision in precisions:
        if progress:
            progress(f"locating divergence in the {precision} ONNX graph")
        tolerance = resolve_tolerance(precision, atol, rtol)
        out.append(locate(root, precision, tolerance, seed=seed, unsafe=unsafe, imports=imports))
    return out
