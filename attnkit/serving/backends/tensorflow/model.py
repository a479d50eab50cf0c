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

from attnkit_standin import ConfigMismatch, StandIn, Tensor  # noqa: E402

try:
    import tensorflow as tf
except ImportError as e:  # a serving venv built with --no-tensorflow
    raise ImportError(
        "the serving venv has no TensorFlow (built with --no-tensorflow): rebuild it with `attnkit serve setup "
        "--force` to serve SavedModels"
    ) from e

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


class TritonPythonModel(StandIn):
    default_filename = "model.savedmodel"

    def load(self, path, config):
        key = config.get("parameters", {}).get("TF_SIGNATURE_DEF", {}).get("string_value") or "serving_default"
        self.loaded = tf.saved_model.load(path, tags=["serve"])
        if key not in self.loaded.signatures:
            raise ConfigMismatch(
                f"unable to load model '{config['name']}', signature '{key}' not found in the SavedModel "
                f"(it has {', '.join(sorted(self.loaded.signatures))})"
            )
        self.fn = self.loaded.signatures[key]
        return _tensors(self.fn.structured_input_signature[1]), _tensors(self.fn.structured_outputs)

    def run(self, feeds):
        result = self.fn(**{n: tf.constant(a) for n, a in feeds.items()})
        return {n: result[n].numpy() for n in self.outputs}
