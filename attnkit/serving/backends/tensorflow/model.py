"""attnkit's stand-in for Triton's tensorflow backend (platform ``tensorflow_savedmodel``), written as a
Python-based backend because Triton's C++ tensorflow backend is in no package these machines can
install. It loads ``<version>/model.savedmodel`` (tag ``serve``, signature ``serving_default`` unless the
config's ``TF_SIGNATURE_DEF`` parameter names another), refuses a config that does not match the
signature with the C++ backends' checks and wording, and runs each dynamic batch as one call.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import tensorflow as tf  # noqa: E402
import triton_python_backend_utils as pb_utils  # noqa: E402
from attnkit_standin import BatchedModel, ConfigMismatch, Tensor, check_config, model_config  # noqa: E402

TF_TYPES = {
    tf.bool: "TYPE_BOOL",
    tf.int8: "TYPE_INT8",
    tf.int16: "TYPE_INT16",
    tf.int32: "TYPE_INT32",
    tf.int64: "TYPE_INT64",
    tf.uint8: "TYPE_UINT8",
    tf.float16: "TYPE_FP16",
    tf.float32: "TYPE_FP32",
    tf.float64: "TYPE_FP64",
    tf.bfloat16: "TYPE_BF16",
}


def _tensors(specs):
    return [
        Tensor(n, TF_TYPES.get(s.dtype, "TYPE_INVALID"), tuple(-1 if d is None else int(d) for d in s.shape))
        for n, s in sorted(specs.items())
    ]


class TritonPythonModel:
    def initialize(self, args):
        config = model_config(args)
        filename = config.get("default_model_filename") or "model.savedmodel"
        path = os.path.join(args["model_repository"], args["model_version"], filename)
        if not os.path.isdir(path):
            raise pb_utils.TritonModelException(f"unable to load model '{config['name']}': {path} not found")
        key = config.get("parameters", {}).get("TF_SIGNATURE_DEF", {}).get("string_value") or "serving_default"
        self.loaded = tf.saved_model.load(path, tags=["serve"])
        if key not in self.loaded.signatures:
            raise pb_utils.TritonModelException(
                f"unable to load model '{config['name']}', signature '{key}' not found in the SavedModel "
                f"(it has {', '.join(sorted(self.loaded.signatures))})"
            )
        self.fn = self.loaded.signatures[key]
        inputs = _tensors(self.fn.structured_input_signature[1])
        outputs = _tensors(self.fn.structured_outputs)
        try:
            check_config(config, inputs, outputs)
        except ConfigMismatch as e:
            raise pb_utils.TritonModelException(str(e)) from None
        self.outputs = [o["name"] for o in config["output"]]
        self.model = BatchedModel(config, self._run, [i["name"] for i in config["input"]], self.outputs, pb_utils)

    def _run(self, feeds):
        result = self.fn(**{n: tf.constant(a) for n, a in feeds.items()})
        return {n: result[n].numpy() for n in self.outputs}

    def execute(self, requests):
        return self.model.execute(requests)
