"""Names every layer agrees on: precisions, artifact roles, signature names, and the one file-naming rule.

Foundation layer: imports nothing of attnkit. A string that more than one module must spell the same way
lives here, so a new backend or model family adds a constant, not a search through eight files.
"""

from __future__ import annotations

MANIFEST = "manifest.json"

#: every precision attnkit knows, in the order tables list them
PRECISIONS = ("fp32", "bf16", "fp16", "int8", "q8", "q4")
#: weight-only block quantisation (onnxruntime's MatMulNBits, llama.cpp's Q8/Q4 naming): int8 / int4 weights
#: in blocks along the reduction axis, float activations; the format CPU LLM runtimes decode in
WEIGHT_ONLY = ("q8", "q4")
#: precisions TensorFlow traces a SavedModel in (Keras mixed-precision policies)
TF_PRECISIONS = ("fp32", "bf16", "fp16")
#: precisions lowered on the ONNX graph (bf16 is not: see exporters.precision.BF16_REASON)
ONNX_PRECISIONS = ("fp32", "fp16", "int8", "q8", "q4")
#: precisions lowered from the fp32 ONNX graph
LOWERED_PRECISIONS = ("fp16", "int8", "q8", "q4")
#: precisions a TensorRT plan is built in (strongly typed from the ONNX graph's tensor types)
PLAN_PRECISIONS = ("fp32", "fp16")

# What a runner can do with an export (the registry's tasks).
FORWARD = "forward"  # the full-sequence model: verify, bench
DECODE_STEP = "decode_step"  # encode / prefill / one cached step at a time: the numpy greedy loop drives it
GENERATE = "generate"  # the whole greedy loop in one call (SavedModel's in-graph `generate`)
TASKS = (FORWARD, DECODE_STEP, GENERATE)

# Roles of artifacts (the manifest records one per artifact).
ROLE_MODEL = "model"  # the full forward pass: model.keras, savedmodel/1, model.onnx, model.plan
ROLE_SIGNATURES = "signatures"  # the generation signatures inside savedmodel/1
ROLE_DECODER_WITH_PAST = "decoder_with_past"  # the decode step with a KV cache (prefill = empty past)
ROLE_ENCODER = "encoder"  # the seq2seq encoder: source -> cross-attention keys/values
ROLE_DECODER_STATEFUL = "decoder_stateful"  # the decode step keeping its KV cache inside (OpenVINO state)
ROLE_DECODER_GENAI = "decoder_genai"  # the stateful decoder in OpenVINO GenAI's layout (LLMPipeline's directory)
GENERATION_ROLES = (ROLE_SIGNATURES, ROLE_DECODER_WITH_PAST, ROLE_ENCODER, ROLE_DECODER_STATEFUL, ROLE_DECODER_GENAI)

# SavedModel signature names (TF Serving serves them by these names).
SERVING_DEFAULT = "serving_default"
SIG_PREFILL, SIG_DECODE_STEP, SIG_GENERATE, SIG_ENCODE = "prefill", "decode_step", "generate", "encode"
# Inputs and outputs of the `generate` signature.
OUTPUT_IDS, LENGTHS = "output_ids", "sequence_lengths"
MAX_NEW_TOKENS, EOS_ID = "max_new_tokens", "eos_id"

#: KServe v2 datatypes of numpy dtypes (Triton's HTTP/gRPC wire names); a Triton config type is ``TYPE_`` + it
KSERVE_DTYPES = {
    "float32": "FP32",
    "float16": "FP16",
    "bfloat16": "BF16",
    "int32": "INT32",
    "int64": "INT64",
    "int8": "INT8",
    "bool": "BOOL",
}
NUMPY_OF_KSERVE = {v: k for k, v in KSERVE_DTYPES.items()}
TRITON_DTYPES = {k: f"TYPE_{v}" for k, v in KSERVE_DTYPES.items()}


def artifact_file(base: str, precision: str, ext: str) -> str:
    """The one file-naming rule: ``{base}.{ext}`` for fp32, ``{base}.{precision}.{ext}`` otherwise.

    >>> artifact_file("model", "fp16", "onnx"), artifact_file("decoder_with_past", "fp32", "plan")
    ('model.fp16.onnx', 'decoder_with_past.plan')
    """
    return f"{base}.{ext}" if precision == "fp32" else f"{base}.{precision}.{ext}"


#: attnkit precision -> OpenVINO's INFERENCE_PRECISION_HINT (int8: weight-only IRs compute in f32), and the element
#: type names OpenVINO reads back -> attnkit precision
OPENVINO_HINTS = {"fp32": "f32", "bf16": "bf16", "fp16": "f16", "int8": "f32"}
OPENVINO_RAN_AS = {
    "f32": "fp32",
    "float32": "fp32",
    "bf16": "bf16",
    "bfloat16": "bf16",
    "f16": "fp16",
    "float16": "fp16",
}
