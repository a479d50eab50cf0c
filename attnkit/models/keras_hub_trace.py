"""What :class:`attnkit.models.keras_hub.CachedCallDecoding` changes in Keras and keras-hub while a decode step
is traced: each a context manager that patches one call for the length of the trace and restores it (the
arithmetic stays keras-hub's; every change is an equal value in fewer, or fused, nodes).

- :func:`slice_update_as_concat`: ``ops.slice_update`` of a sequence offset as Slice + Concat (prefill);
- :func:`cache_writes_from`: each layer's cache write as ``concat(past, new)`` from the step's own inputs;
- :func:`keras_attention_op`: attention through ``keras.ops.dot_product_attention`` traced as MatMuls;
- :func:`sliding_window_by_position`: the sliding-window mask from positions, not an L x L band;
- :func:`once_per_step`: the causal mask, the sliding-window masks and the rotary sines and cosines computed
  once a step, not in every layer;
- :func:`dense_einsums_as_matmuls`: a projection written as an einsum (``EinsumDense``) traced as one MatMul;
- :func:`layer_patches`: the last four together, as both the prefill and the decode step take them.
"""

from __future__ import annotations

import contextlib
import math

from keras import ops

from ..core.errors import ModelError

_ABSENT = object()


@contextlib.contextmanager
def _patched(targets, name: str, make):
    """Attribute ``name`` of each of ``targets`` (modules or layers) set to ``make(target)`` for the block, then
    put back: the target's own value restored, or removed where it had none (a layer's method is its class's
    again). Every patch of this module goes through here."""
    targets = list(targets)
    saved = [vars(target).get(name, _ABSENT) for target in targets]
    for target in targets:
        setattr(target, name, make(target))
    try:
        yield
    finally:
        for target, value in zip(targets, saved):
            if value is _ABSENT:
                delattr(target, name)
            else:
                setattr(target, name, value)


@contextlib.contextmanager
def slice_update_as_concat():
    """``keras.ops.slice_update`` lowered to Slice + Concat while keras-hub's cached call runs in :meth:`step`.

    keras-hub writes a step's keys and values with ``ops.slice_update(cache, [0, index, 0, 0], update)``
    (``CachedMultiHeadAttention``, ``LlamaAttention``): TensorFlow's ``XlaDynamicUpdateSlice``, which tf2onnx
    lowers to a ScatterND fed by an index grid built each step (Range, Expand, Concat, Cast ...: measured on
    gpt2-small, 771 nodes a step). Where only the sequence axis is offset, as here, the same tensor is
    ``cache[:, :index]``, the update, ``cache[:, index + new:]`` concatenated: the same values, bit for bit
    (tested: tokens identical to keras-hub's ``generate()``), a handful of nodes. Any other call is passed on.
    """
    import keras

    original = keras.ops.slice_update

    def lowered(inputs, start_indices, updates):
        if not _offsets_sequence_only(start_indices):
            return original(inputs, start_indices, updates)
        index, new = list(start_indices)[1], ops.shape(updates)[1]
        return ops.concatenate([inputs[:, :index], ops.cast(updates, inputs.dtype), inputs[:, index + new :]], axis=1)

    with _patched([keras.ops], "slice_update", lambda _: lowered):
        yield


@contextlib.contextmanager
def keras_attention_op(model):
    """keras-hub's attention layers that can compute through ``keras.ops.dot_product_attention`` (Gemma's,
    Mixtral's, Qwen-MoE's: ``_use_fused_attention_op``) do so while :meth:`CachedCallDecoding.step` is traced,
    and that op is traced as :func:`_attention_as_matmuls`.

    keras-hub takes the op's path on JAX and PyTorch only; on TensorFlow it falls back to its own attention,
    for Gemma a grouped 5-D einsum that tf2onnx lowers to batched 3-D MatMuls between Reshapes, which no
    runtime recognises as attention (OpenVINO's fusion in :mod:`attnkit.exporters.openvino_attention`
    included). Not for a layer with a logit soft cap (Gemma 2: TensorFlow's ``dot_product_attention`` ignores
    one, Keras 3.15) or with dropout. The export's check holds the result to keras-hub's own eager decode."""
    import keras

    original = keras.ops.dot_product_attention
    layers = [
        layer
        for layer in model._flatten_layers(include_self=False)
        if callable(getattr(type(layer), "_use_fused_attention_op", None))
        and getattr(layer, "logit_soft_cap", None) is None
        and not getattr(layer, "dropout", 0)
    ]

    def traced(*args, **kwargs):
        return _attention_as_matmuls(original, *args, **kwargs)

    with _patched(layers, "_use_fused_attention_op", lambda _: lambda: True):
        with _patched([keras.ops], "dot_product_attention", lambda _: traced):
            yield


@contextlib.contextmanager
def layer_patches(model, index):
    """:func:`keras_attention_op`, :func:`sliding_window_by_position` and :func:`once_per_step` on ``model``'s
    layers, for one trace of a call at cache index ``index``."""
    with keras_attention_op(model), sliding_window_by_position(model), once_per_step(model, index):
        with dense_einsums_as_matmuls():
            yield


@contextlib.contextmanager
def dense_einsums_as_matmuls():
    """``keras.ops.einsum`` of a projection (``EinsumDense``'s ``btd,dnh->btnh``, ``btnh,nhd->btd``: the input's
    trailing axes contracted with the kernel's, the output its leading axes then the kernel's others) traced as
    one MatMul of the input, its contracted axes merged, by the kernel as a matrix, then one Reshape to the
    output's axes; any other einsum is passed on.

    Why: TensorFlow's ``Einsum`` reaches tf2onnx, whose einsum decomposition merges the batch and sequence
    axes into one and splits them again around a 2-D Gemm (Unsqueeze, Reshape, Gemm, Shape, Gather, Concat,
    Reshape, Squeeze), where the peers' IR has one FullyConnected and a Reshape; and OpenVINO's RMSFusion
    missed the per-head norms behind it. Gemma 3 270M's compiled step: 1012 -> 743 nodes, 55 -> 91 RMS norms
    fused. The same sums of products; the export's check holds the tokens to keras-hub's eager decode. Operands
    of two dtypes (Keras's einsum casts them to one) are passed on.
    """
    import keras
    from keras.src import ops as src_ops

    original = src_ops.einsum

    def lowered(subscripts, *operands, **kwargs):
        plan = _projection(subscripts, operands) if len(operands) == 2 and not kwargs else None
        if plan is None:
            return original(subscripts, *operands, **kwargs)
        import tensorflow as tf

        prefix, contracted, out, perm = plan
        x, kernel = (tf.convert_to_tensor(t) for t in operands)
        lead = tf.shape(x)[:prefix]
        if perm != sorted(perm):
            kernel = tf.transpose(kernel, perm)
        size = math.prod(int(d) for d in kernel.shape[: len(contracted)])
        kernel = tf.reshape(kernel, (size, math.prod(int(d) for d in kernel.shape[len(contracted) :])))
        if len(contracted) > 1:
            x = tf.reshape(x, tf.concat([lead, [size]], 0))
        # a batched MatMul by a matrix (BatchMatMulV2 broadcasts it): ONNX's MatMul of the input as it is, where
        # Keras's matmul would go through tensordot's flattening Reshapes
        y = tf.linalg.matmul(x, kernel)
        return tf.reshape(y, tf.concat([lead, out], 0)) if len(out) > 1 else y

    with _patched([m for m in (src_ops, keras.ops) if m.einsum is original], "einsum", lambda _: lowered):
        yield


def _projection(subscripts, operands):
    """``(prefix length, contracted dims, output dims, kernel permutation)`` when ``subscripts`` is a projection
    of ``operands[0]`` by ``operands[1]`` (see :func:`dense_einsums_as_matmuls`), with static kernel and
    contracted dims; else None."""
    if not isinstance(subscripts, str) or "..." in subscripts or subscripts.count("->") != 1:
        return None
    inputs, output = subscripts.replace(" ", "").split("->")
    if inputs.count(",") != 1:
        return None
    a, b = inputs.split(",")
    x, kernel = operands
    if len(set(a)) != len(a) or len(set(b)) != len(b) or len(set(output)) != len(output):
        return None
    contracted = [c for c in a if c not in output]
    out = [c for c in output if c not in a]
    prefix = len(a) - len(contracted)
    if (
        not contracted
        or not out
        or a[prefix:] != "".join(contracted)
        or output != a[:prefix] + "".join(out)
        or sorted(b) != sorted(contracted + out)
        or any(c in b for c in a[:prefix])
        or prefix < 1
    ):
        return None
    x_shape, k_shape = getattr(x, "shape", None), getattr(kernel, "shape", None)
    if x_shape is None or k_shape is None or len(x_shape) != len(a) or len(k_shape) != len(b):
        return None
    if any(d is None for d in k_shape) or any(d is None for d in x_shape[prefix:]):
        return None
    if getattr(x, "dtype", None) != getattr(kernel, "dtype", None):
        return None
    perm = [b.index(c) for c in contracted + out]
    return prefix, contracted, [int(k_shape[b.index(c)]) for c in out], perm


@contextlib.contextmanager
def once_per_step(model, index):
    """Values every layer of one cached call recomputes, computed by the first layer and reused by the others,
    for one trace: keras-hub's causal mask (``compute_causal_mask``, called by every decoder block), each
    distinct sliding-window mask (:func:`sliding_window_by_position`) and each distinct rotary embedding's
    cosines and sines (``RotaryEmbedding._compute_cos_sin_embedding``, called for every layer's queries and
    keys). transformers computes both once a forward pass (``LlamaModel.forward``: ``causal_mask``,
    ``position_embeddings``), and so does the peers' IR; keras-hub's step carried them once a layer, about
    40 compiled nodes a layer on OpenVINO whose shapes change every step (Gemma 3 270M: 1738 -> 1012 compiled
    nodes a step; optimum-intel's IR of the same weights: 628). Nothing is shared across layers that could
    differ: a mask only for calls at this call's own cache ``index`` (the same object), whose queries are the
    residual stream (one batch, one length, in every layer) and whose keys are the cache (one length in every
    layer); a rotary embedding only between layers of one class and one config, at ``index``, positions not
    given. The export's check holds the result to keras-hub's eager decode, token for token.

    Written by hand: keras-hub has no hook to hand its layers a precomputed mask or embedding in a cached call.
    """
    import sys

    from keras_hub.src.layers.modeling import transformer_layer_utils
    from keras_hub.src.layers.modeling.rotary_embedding import RotaryEmbedding

    original = transformer_layer_utils.compute_causal_mask
    memo: dict = {}

    def causal_mask(batch_size, input_length, output_length, cache_index=0):
        if cache_index is not index:
            return original(batch_size, input_length, output_length, cache_index)
        if "causal" not in memo:
            memo["causal"] = original(batch_size, input_length, output_length, cache_index)
        return memo["causal"]

    # each decoder module imported the function by name: patched where it was imported
    modules = [
        m
        for name, m in list(sys.modules.items())
        if name.startswith("keras_hub.") and getattr(m, "compute_causal_mask", None) is original
    ]
    layers = list(model._flatten_layers(include_self=False))

    def shared_rotary(layer):
        compute = layer._compute_cos_sin_embedding
        config = {k: v for k, v in layer.get_config().items() if k not in ("name", "trainable")}
        kind = (type(layer), repr(sorted(config.items())), layer.compute_dtype)

        def cos_sin(inputs, start_index=0, positions=None):
            if positions is not None or start_index is not index:
                return compute(inputs, start_index, positions)
            key = ("rotary", kind, len(inputs.shape), inputs.shape[-1])
            if key not in memo:
                memo[key] = compute(inputs, start_index, positions)
            return memo[key]

        return cos_sin

    def shared_window(layer):  # sliding_window_by_position's mask (entered first), one a window size
        compute = layer._mask_sliding_window

        def mask(attention_mask, cache_update_index=0):
            if cache_update_index is not index:
                return compute(attention_mask, cache_update_index)
            key = ("window", layer.sliding_window_size)
            if key not in memo or memo[key][0] is not attention_mask:
                memo[key] = (attention_mask, compute(attention_mask, cache_update_index))
            return memo[key][1]

        return mask

    with contextlib.ExitStack() as stack:
        stack.enter_context(_patched(modules, "compute_causal_mask", lambda _: causal_mask))
        rotaries = [layer for layer in layers if isinstance(layer, RotaryEmbedding)]
        stack.enter_context(_patched(rotaries, "_compute_cos_sin_embedding", shared_rotary))
        windows = [layer for layer in layers if "_mask_sliding_window" in vars(layer)]
        stack.enter_context(_patched(windows, "_mask_sliding_window", shared_window))
        yield


@contextlib.contextmanager
def sliding_window_by_position(model):
    """keras-hub's sliding-window mask (Gemma 2/3, Qwen, ...: ``_mask_sliding_window``) computed from positions
    while :meth:`CachedCallDecoding.step` is traced: keras-hub builds a ``key_len x key_len`` band
    (``tf.linalg.band_part`` of ones, ``|i - j| <= min(key_len, window - 1)``) and slices the query rows out of
    it, so a decode step at L cached positions builds L^2 booleans in every sliding layer; the same rows are
    ``|(cache_update_index + q) - k| <= min(key_len, window - 1)`` over ``q < query_len``, ``k < key_len``:
    query_len x L. The same mask element for element (tested: tokens identical past the window). Layers with
    bidirectional attention keep keras-hub's."""
    layers = [
        layer
        for layer in model._flatten_layers(include_self=False)
        if callable(getattr(type(layer), "_mask_sliding_window", None))
        and isinstance(getattr(layer, "sliding_window_size", None), int)
        and not getattr(layer, "use_bidirectional_attention", False)
    ]

    def by_position(layer):
        def mask(attention_mask, cache_update_index=0):
            _, query_len, key_len = ops.shape(attention_mask)
            rows = ops.expand_dims(ops.arange(query_len, dtype="int32") + ops.cast(cache_update_index, "int32"), 1)
            band = ops.minimum(ops.cast(key_len, "int32"), layer.sliding_window_size - 1)
            within = ops.abs(rows - ops.expand_dims(ops.arange(key_len, dtype="int32"), 0)) <= band
            return ops.logical_and(attention_mask, ops.expand_dims(within, 0))

        return mask

    with _patched(layers, "_mask_sliding_window", by_position):
        yield


def _attention_as_matmuls(original, query, key, value, bias=None, mask=None, scale=None, is_causal=False, **kwargs):
    """TensorFlow's ``keras.ops.dot_product_attention`` (Keras 3.15: repeat keys and values for grouped
    queries, scaled logits in float32, ``where(mask, logits, very negative)``, softmax, back to the inputs'
    dtype), with its two einsums written as MatMuls of (batch, heads, sequence, depth) tensors: tf2onnx lowers
    Keras's ``BTNH,BSNH->BNTS`` einsum to 3-D batched MatMuls between computed Reshapes, where a MatMul keeps
    the heads axis the runtimes' attention fusions look for. Also repeats a single key/value head, which the
    Keras op leaves to a broadcast TensorFlow's einsum refuses (multi-query attention, Gemma 2B: "Dimensions
    must be equal, but are 4 and 1"). Anything else (a bias, a causal flag, a soft cap) goes to ``original``."""
    import keras

    try:
        from keras.src.backend.tensorflow.nn import _get_large_negative  # the masked logit Keras's op writes
    except ImportError:  # another Keras: its own op, as keras-hub would call it
        _get_large_negative = None
    heads, kv_heads, depth = (query.shape[2], key.shape[2], query.shape[3]) if len(query.shape) == 4 else (0, 0, 0)
    if bias is not None or is_causal or any(kwargs.values()) or not depth or _get_large_negative is None:
        return original(query, key, value, bias=bias, mask=mask, scale=scale, is_causal=is_causal, **kwargs)
    if heads and kv_heads and heads > kv_heads:
        key, value = ops.repeat(key, heads // kv_heads, axis=2), ops.repeat(value, heads // kv_heads, axis=2)
    dtype = keras.backend.result_type(query.dtype, key.dtype, value.dtype)
    query, key, value = (ops.cast(t, dtype) for t in (query, key, value))
    scale = 1.0 / float(depth) ** 0.5 if scale is None else scale
    logits_dtype = keras.backend.result_type(dtype, "float32")
    logits = ops.matmul(ops.transpose(query, (0, 2, 1, 3)), ops.transpose(key, (0, 2, 3, 1)))
    logits = ops.multiply(ops.cast(logits, logits_dtype), ops.cast(scale, logits_dtype))
    if mask is not None:
        logits = ops.where(mask, logits, _get_large_negative(logits.dtype))
    probs = ops.cast(ops.softmax(logits, axis=-1), dtype)
    return ops.transpose(ops.matmul(probs, ops.transpose(value, (0, 2, 1, 3))), (0, 2, 1, 3))


def _offsets_sequence_only(start_indices) -> bool:
    """``start_indices`` is ``[0, index, 0, ...]``: an update that offsets the sequence axis (1) only."""
    starts = list(start_indices) if isinstance(start_indices, (list, tuple)) else None
    return (
        starts is not None and len(starts) >= 2 and all(isinstance(s, int) and s == 0 for s in starts[:1] + starts[2:])
    )


@contextlib.contextmanager
def cache_writes_from(past):
    """keras-hub's cache writes in a decode step, taken from the step's own ``past`` (one ``(key, value)`` per
    layer, (batch, kv_heads, past, depth)): yields the list that fills with each layer's present key and value.

    In :meth:`CachedCallDecoding.step` keras-hub's cache is the past followed by zeros for the new tokens, and
    each cached attention writes its new keys, then its new values, at ``cache_update_index = past`` with
    ``ops.slice_update`` (``CachedMultiHeadAttention``, ``LlamaAttention``, ...; layer by layer, in order). So
    every write's result is exactly ``concat(past, update)`` on the sequence axis. Written as that, from the
    step's own inputs, the step graph has no 6-D cache to stack, transpose, slice per layer and stack again
    (llama3-124m: 2738 -> 2392 ONNX nodes a step, BENCHMARKS.md) and each present is one Concat of the past and
    the new keys. The write's ``inputs`` (keras-hub's cache slice) is read for its dtype only.

    Raises:
        ModelError: the model wrote its cache some other way (not two sequence-offset writes per layer); its
            step is then not exported from a guess.
    """
    import keras

    pending = [ops.transpose(t, (0, 2, 1, 3)) for pair in past for t in pair]  # keras-hub's (batch, seq, heads, depth)
    expected = len(pending)
    presents: list = []

    def write(inputs, start_indices, updates):
        if not _offsets_sequence_only(start_indices) or not pending:
            raise ModelError(
                "a keras-hub cached call wrote its cache other than once for keys and once for values per layer "
                "along the sequence axis; attnkit cannot export its decode step (report the model's class).",
                flag="MODEL",
            )
        present = ops.concatenate([pending.pop(0), ops.cast(updates, inputs.dtype)], axis=1)
        presents.append(present)
        return present

    out: list = []
    with _patched([keras.ops], "slice_update", lambda _: write):
        yield out
    if pending or len(presents) != expected:
        raise ModelError(
            f"a keras-hub cached call made {len(presents)} cache writes for {expected} past tensors; attnkit "
            "cannot export its decode step (report the model's class).",
            flag="MODEL",
        )
    as_bhsd = [ops.transpose(t, (0, 2, 1, 3)) for t in presents]
    out.extend(zip(as_bhsd[0::2], as_bhsd[1::2]))
