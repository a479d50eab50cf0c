"""The decode step of a keras-hub ``CausalLM`` (GPT-2, OPT, Llama 3, Mistral, Gemma, Gemma 3, Qwen, ...), by its
own ``call_with_cache``.

keras-hub's contract: ``call_with_cache(token_ids, cache, cache_update_index) -> (logits, hidden, cache)``
with one preallocated cache ``(batch, num_layers, 2, max_length, kv_heads, head_dim)`` (Gemma 3: one
``(key, value)`` pair of ``(batch, max_length, kv_heads, head_dim)`` a layer) that each call updates
in place at ``cache_update_index``; ``generate()`` pads the prompts on the right, seeds the cache with one
call over the whole padded length, then decodes slot by slot from the shortest prompt, keeping each row's
prompt tokens until its prompt ends. Positions are the cache slot (``cache_update_index``), the same for
every row, so padding is never attended to and no padding mask enters the cached call.

Why not export that call as is: its cache is ``max_length`` long at every step (a step costs attention over
``max_length`` slots however short the sequence), one tensor for every layer, and it is not the
``past_key_values.{i}.*`` -> ``present.{i}.*`` interface that ONNX Runtime, onnxruntime-genai, TensorRT and
attnkit's own decoders use. So the step here hands ``call_with_cache`` a cache exactly ``past + new`` slots
long (the past, then zeros for the new tokens) with ``cache_update_index = past``: keras-hub writes the new
keys/values into the zeros and attends over ``past + new`` slots. The arithmetic is keras-hub's own call;
only the cache's length and its per-layer split change (tested: tokens identical to ``generate()``).

The spec records ``positions="slot"`` (see :mod:`attnkit.core.genspec`): the step graphs take no padding mask,
and the loops feed each row's prompt slot by slot as ``generate()`` does.
"""

from __future__ import annotations

import contextlib

from keras import ops

from ..core.errors import ModelError
from ..core.genspec import GenerationSpec

# keras-hub models with rotary positions (Llama, Mistral, Gemma, Qwen) have no maximum length of their own;
# generation requests and TensorRT profiles need one.
ROTARY_MAX_LENGTH = 2048


def tokenizer_of(model) -> tuple:
    """``(tokenizer, start token id or None)`` of a keras-hub task's preprocessor (the start token where the
    preprocessor prepends one, as ``CausalLMPreprocessor`` does by default), or ``(None, None)``: how ``--data``
    texts become the ids the model was trained on."""
    preprocessor = getattr(model, "preprocessor", None)
    tokenizer = getattr(preprocessor, "tokenizer", None)
    if tokenizer is None:
        return None, None
    start = getattr(tokenizer, "start_token_id", None) if getattr(preprocessor, "add_start_token", False) else None
    return tokenizer, (int(start) if isinstance(start, int) else None)


def independent_weights(model, seed: int = 0) -> int:
    """Re-draw every weight of rank >= 2 of a model built from config from its own normal stream (the
    standard deviation it was initialised with; 0.02 where it was constant); returns how many were drawn.

    Why: keras-hub's attention layers clone one initializer, seed included, for their query, key, value and
    output kernels, so a model built from config has its key and value kernels equal and its query and
    output kernels starting with the same numbers (measured on Llama3Backbone, keras-hub 0.32). Runtimes
    then do what trained weights never allow: OpenVINO merges the equal key and value projections into one
    FullyConnected (llama3-124m: 73 of 85 a step, 2 % fewer bytes than a trained model streams), and a graph
    rewrite that swapped keys for values would still agree. Random models for timing and for the agreement
    tests are drawn through this.
    """
    import numpy as np

    rng = np.random.default_rng(seed)
    drawn = 0
    for weight in model.weights:
        if len(weight.shape) < 2:
            continue
        value = np.asarray(weight.numpy())
        std = float(value.std()) or 0.02
        weight.assign(rng.normal(0.0, std, value.shape).astype(value.dtype))
        drawn += 1
    return drawn


def text_inputs(model, inputs: dict) -> dict:
    """``inputs`` (token ids, padding mask) for keras-hub's ``generate()`` without a preprocessor: a model that
    also reads images (Gemma 3, keras-hub 0.32) returns its ``images`` input with the tokens and fails
    concatenating a missing one; its preprocessor gives a text prompt zero images, and so does this."""
    if hasattr(getattr(model, "backbone", None), "text_only_model"):
        import numpy as np

        inputs = {**inputs, "images": np.zeros((len(inputs["token_ids"]), 0, 1, 1, 3), "float32")}
    return inputs


def has_cached_call(model) -> bool:
    """True for a model that provides keras-hub's ``CausalLM`` cache contract: ``call_with_cache`` and
    ``_build_cache`` (which gives the cache's layout), with a ``backbone`` that has ``vocabulary_size`` and
    ``hidden_dim``. A custom model that provides the same is exported the same way."""
    if callable(getattr(model, "call_decoder_with_cache", None)) and callable(getattr(model, "call_encoder", None)):
        return True  # keras-hub's Seq2SeqLM (BART)
    return callable(getattr(model, "call_with_cache", None)) and callable(getattr(model, "_build_cache", None))


class CachedCallDecoding:
    """Prefill / decode-step functions over a keras-hub ``CausalLM`` (same interface as
    :class:`attnkit.models.decoding.Decoding`: ``spec``, ``step``).

    keras-hub's Gemma 3 keeps its cache as one ``(key, value)`` pair a layer, each (batch, length, kv_heads,
    depth), instead of one tensor (``per_layer``); the step hands it and reads it back in that layout, the rest
    is the same call.

    A ``Seq2SeqLM`` (BART: ``call_encoder`` + ``call_decoder_with_cache``) is the seq2seq family: ``encode``
    gives every decoder layer's cross-attention cache, the step reuses it (``cross_attention_cache_update_index``
    None) beside the growing self-attention cache.

    Raises:
        ModelError: a cache whose layout is neither of keras-hub's (names MODEL), or that cannot be built
            (names --generate).
    """

    def __init__(self, model):
        name = type(model).__name__
        self.model = model
        self.seq2seq = callable(getattr(model, "call_decoder_with_cache", None))
        self.per_layer = False
        backbone = model.backbone
        if self.seq2seq:  # BartSeq2SeqLM: (batch, layers, 2, length, heads, depth) for both caches
            shape = (1, int(backbone.num_layers), 2, 1, int(backbone.num_heads),
                     int(backbone.hidden_dim) // int(backbone.num_heads))  # fmt: skip
            self.dtype = model.compute_dtype
        else:
            try:
                cache = _built_cache(model)
            except (TypeError, ValueError) as e:
                raise ModelError(
                    f"`{name}`'s cache could not be built as keras-hub's `_build_cache` builds it ({e}); attnkit "
                    "cannot export its decode step (export it without --generate).",
                    flag="--generate",
                ) from None
            # Gemma 3: one (key, value) pair a layer, each (batch, length, kv_heads, depth)
            self.per_layer = isinstance(cache, (tuple, list)) and all(
                isinstance(pair, (tuple, list)) and len(pair) == 2 for pair in cache
            )
            if self.per_layer:
                key = cache[0][0]
                shape = (int(key.shape[0]), len(cache), 2, *(int(d) for d in key.shape[1:]))
            else:
                shape = tuple(int(d) for d in getattr(cache, "shape", ()))
            self.dtype = cache[0][0].dtype if self.per_layer else cache.dtype
        if len(shape) != 6 or shape[2] != 2:
            raise ModelError(
                f"`{name}`'s call_with_cache cache has shape {shape}, not keras-hub's "
                "(batch, layers, 2, length, heads, depth).",
                flag="MODEL",
            )
        max_length = getattr(backbone, "max_sequence_length", None) or ROTARY_MAX_LENGTH
        prefix = "decoder_" if self.seq2seq else ""
        self.spec = GenerationSpec(
            family="seq2seq" if self.seq2seq else "decoder",
            num_layers=shape[1],
            num_heads=shape[4],
            depth=shape[5],
            vocab_size=int(backbone.vocabulary_size),
            max_length=int(max_length),
            d_model=int(backbone.hidden_dim),
            ids=f"{prefix}token_ids",
            mask=f"{prefix}padding_mask",
            positions="slot",
        )

    @staticmethod
    def _to_keras_hub(pairs):
        """``[(key, value)]`` of (batch, heads, length, depth) -> (batch, layers, 2, length, heads, depth)."""
        stacked = ops.stack([ops.stack([k, v], axis=1) for k, v in pairs], axis=1)
        return ops.transpose(stacked, (0, 1, 2, 4, 3, 5))

    def _from_keras_hub(self, cache, num_layers):
        """keras-hub's cache -> ``[(key, value)]`` of (batch, heads, length, depth)."""
        if self.per_layer:
            return [(ops.transpose(k, (0, 2, 1, 3)), ops.transpose(v, (0, 2, 1, 3))) for k, v in cache]
        cache = ops.transpose(cache, (0, 1, 2, 4, 3, 5))
        return [(cache[:, i, 0], cache[:, i, 1]) for i in range(num_layers)]

    def _zeros(self, batch, length, heads, depth):
        """A zero cache ``length`` slots long in the model's own layout (one tensor, or a pair a layer)."""
        g = self.spec
        if self.per_layer:
            zero = ops.zeros((batch, length, heads, depth), self.dtype)
            return tuple((zero, zero) for _ in range(g.num_layers))
        return ops.zeros((batch, g.num_layers, 2, length, heads, depth), self.dtype)

    def encode(self, ids, mask):
        """BART: the encoder's output, and from it every decoder layer's cross-attention keys/values
        (``call_decoder_with_cache`` with ``cross_attention_cache_update_index=0`` over one start token,
        the way keras-hub seeds its cross cache)."""
        g = self.spec
        batch, source = ops.shape(ids)[0], ops.shape(ids)[1]
        hidden = self.model.call_encoder(token_ids=ids, padding_mask=mask)
        one = ops.zeros((batch, g.num_layers, 2, 1, g.num_heads, g.depth), self.dtype)
        cross = ops.zeros((batch, g.num_layers, 2, source, g.num_heads, g.depth), self.dtype)
        _, _, _, cross = self.model.call_decoder_with_cache(
            encoder_hidden_states=hidden,
            encoder_padding_mask=mask,
            decoder_token_ids=ops.zeros((batch, 1), "int32"),
            self_attention_cache=one,
            self_attention_cache_update_index=0,
            cross_attention_cache=cross,
            cross_attention_cache_update_index=0,
        )
        return self._from_keras_hub(cross, g.num_layers)

    def step(self, ids, mask=None, past=None, cross=None, encoder_mask=None):
        """Logits (batch, new, vocab) of ``ids`` at slots ``past .. past + new - 1`` and the cache grown by them.

        Args:
            ids: (batch, new) tokens. mask: ignored (slot positions attend to every earlier slot).
            past: ``[(key, value)]`` per layer, (batch, kv_heads, past, depth), or None for a prefill.
            cross, encoder_mask: BART's cross-attention cache from :meth:`encode` and the source mask.
        """
        batch, new = ops.shape(ids)[0], ops.shape(ids)[1]
        g = self.spec
        if past is None:
            cache, index = self._zeros(batch, new, g.num_heads, g.depth), 0
        elif self.seq2seq:
            fresh = self._zeros(batch, new, g.num_heads, g.depth)
            cache = ops.concatenate([self._to_keras_hub(past), fresh], axis=3)
            index = ops.shape(past[0][0])[2]
        else:
            # only this cache's length is read (keras-hub's causal mask); the keys and values come in through
            # cache_writes_from, so its heads and depth are 1: a zero tensor the runtimes fill and slice every step
            # (tf2onnx keeps it), 256x smaller than keras-hub's layout for 4 heads of 64
            index = ops.shape(past[0][0])[2]
            cache = self._zeros(batch, index + new, 1, 1)
        if self.seq2seq:
            source = ops.shape(cross[0][0])[2]
            # the encoder output is not read when the cross cache is given (update index None): zeros of its shape
            hidden = ops.zeros((batch, source, g.d_model), self.dtype)
            logits, _, cache, _ = self.model.call_decoder_with_cache(
                encoder_hidden_states=hidden,
                encoder_padding_mask=encoder_mask,
                decoder_token_ids=ids,
                self_attention_cache=cache,
                self_attention_cache_update_index=index,
                cross_attention_cache=self._to_keras_hub(cross),
                cross_attention_cache_update_index=None,
            )
        elif past is None:
            with slice_update_as_concat(), keras_attention_op(self.model), sliding_window_by_position(self.model):
                logits, _, cache = self.model.call_with_cache(ids, cache, index)
        else:
            with (
                cache_writes_from(past) as presents,
                keras_attention_op(self.model),
                sliding_window_by_position(self.model),
            ):
                logits, _, _ = self.model.call_with_cache(ids, cache, index)
            return ops.cast(logits, "float32"), presents
        return ops.cast(logits, "float32"), self._from_keras_hub(cache, g.num_layers)


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

    keras.ops.slice_update = lowered
    try:
        yield
    finally:
        keras.ops.slice_update = original


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
    for layer in layers:
        layer._use_fused_attention_op = lambda: True
    keras.ops.dot_product_attention = lambda *args, **kwargs: _attention_as_matmuls(original, *args, **kwargs)
    try:
        yield
    finally:
        keras.ops.dot_product_attention = original
        for layer in layers:
            del layer._use_fused_attention_op


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

    for layer in layers:
        layer._mask_sliding_window = by_position(layer)
    try:
        yield
    finally:
        for layer in layers:
            del layer._mask_sliding_window


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

    original = keras.ops.slice_update
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

    keras.ops.slice_update = write
    out: list = []
    try:
        yield out
    finally:
        keras.ops.slice_update = original
    if pending or len(presents) != expected:
        raise ModelError(
            f"a keras-hub cached call made {len(presents)} cache writes for {expected} past tensors; attnkit "
            "cannot export its decode step (report the model's class).",
            flag="MODEL",
        )
    as_bhsd = [ops.transpose(t, (0, 2, 1, 3)) for t in presents]
    out.extend(zip(as_bhsd[0::2], as_bhsd[1::2]))


def _built_cache(model):
    """keras-hub's empty cache for one token (``_build_cache``; Gemma 3's also takes image inputs, given as None
    for a text-only decode)."""
    import inspect

    extra = list(inspect.signature(model._build_cache).parameters)[1:]
    _, cache = model._build_cache(ops.ones((1, 1), "int32"), *[None] * len(extra))
    return cache


def decoding_for(model):
    """The decoding adapter of ``model``: keras-hub's cached call, or attnkit's own layers."""
    if has_cached_call(model):
        return CachedCallDecoding(model)
    from .decoding import Decoding

    return Decoding(model)
