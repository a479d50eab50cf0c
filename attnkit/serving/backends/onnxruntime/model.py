"""attnkit's stand-in for Triton's onnxruntime backend (platform ``onnxruntime_onnx``), written as a
Python-based backend because Triton's C++ onnxruntime backend is in no package these machines can
install. It loads ``<version>/model.onnx`` with onnxruntime's CPU provider, refuses a config that does
not match the graph with the C++ backend's checks and wording, and runs each dynamic batch as one call.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import onnxruntime as ort  # noqa: E402
from attnkit_standin import StandIn, Tensor  # noqa: E402

ONNX_TYPES = {
    "tensor(bool)": "TYPE_BOOL",
    "tensor(int8)": "TYPE_INT8",
    "tensor(int16)": "TYPE_INT16",
    "tensor(int32)": "TYPE_INT32",
    "tensor(int64)": "TYPE_INT64",
    "tensor(uint8)": "TYPE_UINT8",
    "tensor(float16)": "TYPE_FP16",
    "tensor(float)": "TYPE_FP32",
    "tensor(double)": "TYPE_FP64",
    "tensor(bfloat16)": "TYPE_BF16",
}


def _tensors(args):
    return [
        Tensor(a.name, ONNX_TYPES.get(a.type, "TYPE_INVALID"), tuple(d if isinstance(d, int) else -1 for d in a.shape))
        for a in args
    ]


class TritonPythonModel(StandIn):
    default_filename = "model.onnx"

    def load(self, path, config):
        options = ort.SessionOptions()
        threads = config.get("parameters", {}).get("intra_op_thread_count", {}).get("string_value")
        if threads:
            options.intra_op_num_threads = int(threads)
        self.session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
        return _tensors(self.session.get_inputs()), _tensors(self.session.get_outputs())

    def run(self, feeds):
        return dict(zip(self.outputs, self.session.run(self.outputs, feeds)))
