"""The real I/O signature of each artifact, read from the artifact itself (not from the manifest)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class IOSpec:
    name: str
    dtype: str  # numpy name: float32, int32...
    shape: tuple[int, ...]  # -1 for dynamic
    mode: str  # "input" | "output"


def onnx_signature(path: Path) -> list[IOSpec]:
    import onnx
    from onnx import helper

    graph = onnx.load(str(path), load_external_data=False).graph

    def spec(v, mode):
        t = v.type.tensor_type
        shape = tuple(d.dim_value if d.HasField("dim_value") else -1 for d in t.shape.dim)
        return IOSpec(v.name, helper.tensor_dtype_to_np_dtype(t.elem_type).name, shape, mode)

    inits = {i.name for i in graph.initializer}
    return [spec(v, "input") for v in graph.input if v.name not in inits] + [spec(v, "output") for v in graph.output]


def savedmodel_signature(path: Path, signature: str = "serving_default") -> list[IOSpec]:
    """Read saved_model.pb without loading the graph (what saved_model_cli show does)."""
    import tensorflow as tf
    from tensorflow.python.saved_model import loader_impl

    sig = loader_impl.parse_saved_model(str(path)).meta_graphs[0].signature_def[signature]

    def spec(name, info, mode):
        shape = tuple(-1 if d.size < 0 else d.size for d in info.tensor_shape.dim)
        return IOSpec(name, tf.dtypes.as_dtype(info.dtype).as_numpy_dtype.__name__, shape, mode)

    return [spec(n, i, "input") for n, i in sig.inputs.items()] + [spec(n, i, "output") for n, i in sig.outputs.items()]


_TRT_DTYPES = {
    "float": "float32",
    "half": "float16",
    "int32": "int32",
    "int64": "int64",
    "bool": "bool",
    "int8": "int8",
    "bf16": "bfloat16",
}


def plan_signature(path: Path) -> list[IOSpec]:
    """From the plan's sidecar (written by the builder from the parsed network)."""
    sidecar = json.loads(path.with_name(path.name + ".json").read_text())
    return [
        IOSpec(t["name"], _TRT_DTYPES.get(t["dtype"], t["dtype"]), tuple(t["shape"]), t["mode"]) for t in sidecar["io"]
    ]


def openvino_signature(path: Path) -> list[IOSpec]:
    """From the IR (``model.xml`` in ``path``), read by OpenVINO itself."""
    import openvino as ov

    model = ov.Core().read_model(str(Path(path) / "model.xml"))

    def spec(port, mode):
        shape = tuple(d.get_length() if d.is_static else -1 for d in port.get_partial_shape())
        return IOSpec(port.any_name, port.get_element_type().to_dtype().name, shape, mode)

    return [spec(p, "input") for p in model.inputs] + [spec(p, "output") for p in model.outputs]


def signature_of(root: Path, record, signature: str = "serving_default") -> list[IOSpec]:
    path = Path(root) / record.path
    if record.format == "savedmodel":
        return savedmodel_signature(path, signature)
    readers = {"onnx": onnx_signature, "tensorrt": plan_signature, "openvino": openvino_signature}
    return readers[record.format](path)
