"""attnkit's stand-in for Triton's OpenVINO backend (``backend: "openvino"``), written as a Python-based
backend because Triton's C++ OpenVINO backend is in no package these machines can install. It reads
``<version>/model.xml`` (+ ``model.bin``) with OpenVINO's CPU plugin and the parameters Triton's backend
reads (``HINT_BF16``: YES, ``PERFORMANCE_HINT``, ``INFERENCE_NUM_THREADS``); like that backend it forces no
precision otherwise, so an fp32 IR computes in OpenVINO's default precision for the CPU. It refuses a config
that does not match the IR with the C++ backends' checks and wording and runs each dynamic batch as one call.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import openvino as ov  # noqa: E402
from attnkit_standin import StandIn, Tensor  # noqa: E402

OV_TYPES = {"f32": "TYPE_FP32", "f16": "TYPE_FP16", "bf16": "TYPE_BF16", "i32": "TYPE_INT32", "i64": "TYPE_INT64",
            "i8": "TYPE_INT8", "u8": "TYPE_UINT8", "boolean": "TYPE_BOOL"}  # fmt: skip


def _tensors(ports):
    return [
        Tensor(
            p.any_name,
            OV_TYPES.get(p.get_element_type().get_type_name(), "TYPE_INVALID"),
            tuple(d.get_length() if d.is_static else -1 for d in p.get_partial_shape()),
        )
        for p in ports
    ]


class TritonPythonModel(StandIn):
    default_filename = "model.xml"

    def load(self, path, config):
        params = {k: v.get("string_value", "") for k, v in config.get("parameters", {}).items()}
        properties = {}
        if params.get("HINT_BF16", "").upper() == "YES":
            properties["INFERENCE_PRECISION_HINT"] = "bf16"
        if params.get("PERFORMANCE_HINT"):
            properties["PERFORMANCE_HINT"] = params["PERFORMANCE_HINT"]
        if params.get("INFERENCE_NUM_THREADS"):
            properties["INFERENCE_NUM_THREADS"] = int(params["INFERENCE_NUM_THREADS"])
        self.compiled = ov.Core().compile_model(path, "CPU", properties)
        self.request = self.compiled.create_infer_request()
        ran = self.compiled.get_property("INFERENCE_PRECISION_HINT").get_type_name()
        print(f"attnkit openvino stand-in: {config['name']} compiled, inference precision {ran}", flush=True)
        return _tensors(self.compiled.inputs), _tensors(self.compiled.outputs)

    def run(self, feeds):
        result = self.request.infer(feeds)
        return {p.any_name: result[p].copy() for p in self.compiled.outputs}
