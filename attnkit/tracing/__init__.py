"""Tracing: a ``tf.function`` with an explicit, dynamic-shaped input signature per model, under a
precision policy, from the *same weights* whatever the policy.

Keras 3 fixes a layer's dtype policy when the layer is constructed, so a model built in float32
cannot be switched to a mixed policy in place. ``with_policy`` rebuilds it from its serialised
config with every float32 layer policy replaced, then copies the weights over (mixed policies
keep float32 variables, so the copy is exact).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from ..core.errors import AttnkitError
from ..core.spec import ExportSpec
from ..models.policy import FP32_LAYERS  # the fp32-island rule, written once beside the layers

#: short name -> Keras dtype policy
POLICIES = {"fp32": "float32", "bf16": "mixed_bfloat16", "fp16": "mixed_float16"}
_ALIASES = {v: k for k, v in POLICIES.items()} | {"float32": "fp32", "bfloat16": "bf16", "float16": "fp16"}


def canonical_precision(precision: str, allowed: tuple[str, ...] = tuple(POLICIES), flag: str = "--precision") -> str:
    """Map ``fp32|float32``, ``bf16|mixed_bfloat16``, ``fp16|mixed_float16`` to the short name.

    Raises:
        AttnkitError: unknown name; lists the valid ones.
    """
    short = _ALIASES.get(precision, precision)
    if short not in allowed:
        raise AttnkitError(f"`{precision}` is not supported. Valid: {', '.join(allowed)}.", flag=flag)
    return short


@contextlib.contextmanager
def policy_scope(precision: str) -> Iterator[None]:
    """Set Keras's global dtype policy for the duration of the block, then restore it."""
    import keras

    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(POLICIES[canonical_precision(precision)])
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)


def _rewrite_policies(obj: Any, policy: str) -> Any:
    """Replace every serialised float32 DTypePolicy in a Keras config tree with ``policy``,
    except inside the layers of ``FP32_LAYERS``."""
    if isinstance(obj, dict):
        if obj.get("class_name") in FP32_LAYERS:
            return obj
        if obj.get("class_name") == "DTypePolicy" and obj.get("config", {}).get("name") == "float32":
            return {**obj, "config": {**obj["config"], "name": policy}}
        return {k: _rewrite_policies(v, policy) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_rewrite_policies(v, policy) for v in obj]
    return obj


def with_policy(model, precision: str):
    """The same model (same weights) under another precision policy.

    Returns ``model`` itself for fp32.
    """
    import keras

    short = canonical_precision(precision)
    if short == "fp32":
        return model
    config = _rewrite_policies(keras.saving.serialize_keras_object(model), POLICIES[short])
    with policy_scope(short):
        clone = keras.saving.deserialize_keras_object(config)
    clone.set_weights(model.get_weights())
    return clone


def call_model(model, spec: ExportSpec, feeds: dict[str, Any], training: bool = False) -> dict[str, Any]:
    """Call a Keras model with named inputs and return its outputs as a dict keyed by output name.

    Floating outputs are cast to float32 so that every backend exposes the same interface
    whatever its internal precision.
    """
    from keras import ops

    from ..models.loading import output_names

    args = {name: feeds[name] for name in spec.input_names}
    result = model(
        args
        if len(args) > 1 or isinstance(getattr(model, "_inputs_struct", None), dict)
        else next(iter(args.values())),
        training=training,
    )
    if not isinstance(result, dict):
        result = dict(zip(output_names(model), result if isinstance(result, (list, tuple)) else [result]))
    out = {}
    for name in spec.output_names:
        value = result[name]
        out[name] = ops.cast(value, "float32") if "float" in str(value.dtype) else value
    return out


def input_signature(spec: ExportSpec) -> list:
    """``tf.TensorSpec`` per input, dynamic axes as ``None``, named as in the spec."""
    return tensor_signature(spec.inputs)


def tensor_signature(tensors) -> list:
    """``tf.TensorSpec`` per attnkit TensorSpec (dynamic axes as ``None``, same names)."""
    import tensorflow as tf

    return [tf.TensorSpec(t.shape, tf.as_dtype(t.dtype), name=t.name) for t in tensors]


def trace(model, spec: ExportSpec, precision: str = "fp32", jit_compile: bool = False):
    """A ``tf.function`` over the model with a dynamic-shaped signature and named outputs.

    Args:
        model: the float32 Keras model (its weights are reused under any policy).
        spec: names, dtypes and dynamic axes of the inputs and outputs.
        precision: ``fp32``, ``bf16`` or ``fp16`` (Keras mixed policies).
        jit_compile: compile with XLA.

    Returns:
        ``tf.function`` taking the inputs positionally (in ``spec.inputs`` order) and returning a
        dict ``{output name: float32 tensor}``.
    """
    import tensorflow as tf

    runnable = with_policy(model, precision)
    names = spec.input_names

    @tf.function(input_signature=input_signature(spec), jit_compile=jit_compile, autograph=False)
    def serve(*tensors):
        return call_model(runnable, spec, dict(zip(names, tensors)))

    serve.keras_model = runnable  # keep the (possibly cloned) model alive with its variables
    return serve
