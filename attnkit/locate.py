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

from .compare import Tolerance, compare_outputs
from .errors import ArtifactError
from .runtimes.base import Source


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

    from .tracing import call_model

    captured: list[tuple[str, np.ndarray]] = []
    layers = [
        layer
        for layer in model._flatten_layers(include_self=False)
        if not isinstance(layer, (keras.layers.InputLayer, keras.layers.Dropout))
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


def _scope_pattern(model_name: str, path: str) -> re.Pattern:
    parts = [model_name] + path.split("/")
    return re.compile("^" + "".join(f"{re.escape(p)}(?:_\\d+)?/" for p in parts))


def _boundaries(onnx_model, pattern: re.Pattern) -> list[str]:
    nodes = [n for n in onnx_model.graph.node if pattern.match(n.name)]
    inside = {id(n) for n in nodes}
    consumers: dict[str, list] = {}
    for n in onnx_model.graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    outputs = {o.name for o in onnx_model.graph.output}
    return [
        o for n in nodes for o in n.output if o in outputs or any(id(c) not in inside for c in consumers.get(o, []))
    ]


def _onnx_values(onnx_model, names: list[str], feeds) -> dict[str, np.ndarray]:
    """Run the graph with ``names`` added as outputs; returns the float ones."""
    import onnx

    try:
        import onnxruntime as ort
    except ImportError:
        from .errors import DependencyError

        raise DependencyError("onnxruntime", "cpu", "--locate") from None

    inferred = onnx.shape_inference.infer_shapes(onnx_model)
    types = {v.name: v.type.tensor_type.elem_type for v in inferred.graph.value_info}
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
    candidates = {path: _boundaries(onnx_model, _scope_pattern(model.name, path)) for path, _ in layers}
    values = _onnx_values(onnx_model, [n for names in candidates.values() for n in names], feeds)
    report = LocateReport(precision, record.path, asdict(tolerance))
    for path, ref in layers:
        best = None
        for name in candidates[path]:
            got = values.get(name)
            if got is None or got.size != ref.size:
                continue
            # the one comparison of the package (attnkit.compare), on this layer's output
            (a,) = compare_outputs({path: ref}, {path: got.reshape(ref.shape)}, tolerance)
            if best is None or a.rel_l2 < best.rel_l2:
                best = LayerError(path, name, list(ref.shape), a.rel_l2, a.max_abs, a.cosine)
        if best is None:
            best = LayerError(path, None, list(ref.shape))  # fused away or renamed: no counterpart
        else:
            best.exceeds = best.rel_l2 > tolerance.rel_l2 or best.cosine < tolerance.min_cosine
        report.curve.append(best)
    return report


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
    from .errors import ArtifactError
    from .exporters.manifest import Manifest
    from .verification import resolve_tolerance

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
