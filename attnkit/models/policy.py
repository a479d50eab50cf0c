"""The fp32-island rule, written once: which layers stay float32 under a mixed precision policy.

LayerNorm's statistics (and with them the residual stream) stay float32 under mixed_bfloat16 and
mixed_float16, as they do in the fp16 ONNX graph (``exporters/precision.FP32_ISLANDS``): only the
matmuls and FFNs run in bf16/fp16. Measured on encoder-base (bf16 vs eager fp32, two shapes):
relative L2 9.9e-3 without the island, 9.5e-3 with it. The blocks build their LayerNorms with
:func:`island_dtype`; ``tracing.with_policy`` leaves the layers of :data:`FP32_LAYERS` alone when it
rewrites a saved model's policies.
"""

from __future__ import annotations

#: Keras layer classes kept in float32 under a mixed policy
FP32_LAYERS = ("LayerNormalization",)


def island_dtype(policy):
    """The dtype policy for a layer of FP32_LAYERS inside a layer whose policy is ``policy``."""
    name = getattr(policy, "name", str(policy))
    return "float32" if name.startswith("mixed") else policy
