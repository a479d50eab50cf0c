"""OpenVINO IR (``openvino/model.xml`` + ``model.bin``) from the ONNX graph attnkit already exports.

Converted by OpenVINO's own converter, ``openvino.convert_model`` on ``model.onnx``, rather than through
Keras 3's ``model.export(format="openvino")``: measured on the AMX Xeon (shared/STACK_FACTS.md, 2026-11-27),
W-base converted from the ONNX graph ran 140 ms bf16 against 161 ms from Keras's IR; the ONNX graph is the
one verify, the LayerNorm fusion and the int8 lowering already check; and it needs no scipy.

Precision is not a property of the IR for OpenVINO's CPU plugin but a compile-time hint
(``INFERENCE_PRECISION_HINT``): one fp32 IR serves fp32 (f32 forced) and bf16 (bf16 asked, and the plugin
says what it really took), so the manifest records it once per precision with the same path. The weights
stay fp32 in the file (``compress_to_fp16=False``): an fp16-compressed IR would change fp32 answers.
"""

from __future__ import annotations

from pathlib import Path

from ..errors import DependencyError

IR_DIR = "openvino"
IR_XML = "model.xml"


def require():
    """The ``openvino`` module, or DependencyError naming the extra."""
    try:
        import openvino
    except ImportError:
        raise DependencyError("openvino", "openvino", "--format openvino") from None
    return openvino


def write_ir(stage: Path, onnx_path: Path, rel_dir: str = IR_DIR) -> str:
    """Convert ``onnx_path`` and save ``rel_dir/model.xml`` (+ ``.bin``) under ``stage``; returns ``rel_dir``."""
    ov = require()
    model = ov.convert_model(str(onnx_path))
    (stage / rel_dir).mkdir(parents=True, exist_ok=True)
    ov.save_model(model, str(stage / rel_dir / IR_XML), compress_to_fp16=False)
    return rel_dir
