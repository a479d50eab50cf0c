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

from keras import ops

from ..core.errors import ModelError
from ..core.genspec import GenerationSpec
from .keras_hub_trace import cache_writes_from, layer_patches, slice_update_as_concat

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


def _window_of(layer) -> int | None:
    """``layer``'s own sliding window, in tokens, else None. keras-hub spells it three ways:
    ``use_sliding_window_attention`` with ``sliding_window_size`` (Gemma, Gemma 3's local layers, Qwen),
    ``sliding_window_size`` alone (Qwen 3), and ``sliding_window`` / ``_sliding_window`` (Mistral, Mixtral, GPT-OSS,
    Gemma 3n)."""
    if hasattr(layer, "use_sliding_window_attention"):
        size = getattr(layer, "sliding_window_size", None) if layer.use_sliding_window_attention else None
    else:
        size = next((getattr(layer, a) for a in ("sliding_window_size", "sliding_window", "_sliding_window")
                     if isinstance(getattr(layer, a, None), int)), None)  # fmt: skip
    return size if isinstance(size, int) and not isinstance(size, bool) and size > 0 else None


def _narrowest(layers) -> int | None:
    windows = [w for w in map(_window_of, layers) if w]
    return min(windows) if windows else None


def sliding_window(model) -> int | None:
    """The narrowest sliding attention window of ``model``'s layers, in tokens, else None (full attention, and
    any model that is not keras-hub's)."""
    return _narrowest(getattr(model, "_flatten_layers", lambda **_: [])(include_self=False))


def layer_windows(model) -> list | None:
    """The sliding window of each of ``model``'s transformer layers, in order (keras-hub's
    ``backbone.transformer_layers``): the narrowest of the layer's and its sublayers', None for full attention
    (Gemma 3's and Gemma 4's global layers); None for a model without that list. What
    :func:`attnkit.exporters.openvino_window.window_for_paged_attention` gives each layer's attention."""
    blocks = getattr(getattr(model, "backbone", None), "transformer_layers", None)
    if not isinstance(blocks, (list, tuple)) or not blocks:
        return None
    return [_narrowest([block, *block._flatten_layers(include_self=False)]) for block in blocks]


def has_cached_call(model) -> bool:
    """True for a model that provides keras-hub's ``CausalLM`` cache contract: ``call_with_cache`` and
    ``_build_cache`` (which gives the cache's layout), with a ``backbone`` that has ``vocabulary_size`` and
    ``hidden_dim``. A custom model that provides the same is exported the same way."""
    if callable(getattr(model, "call_decoder_with_cache", None)) and callable(getattr(model, "call_encoder", None)):
        return True  # keras-hub's Seq2SeqLM (BART)
    return callable(getattr(model, "call_with_cache", None)) and callable(getattr(model, "_build_cache", None))


def _input_names(backbone) -> set[str]:
    """The names of a functional backbone's inputs (a dict of inputs, keras-hub's way), else none."""
    inputs = getattr(backbone, "input", None)
    return set(inputs) if isinstance(inputs, dict) else set()


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
        described = ""
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
                self.dtype = key.dtype
            elif hasattr(cache, "shape") and hasattr(cache, "dtype"):
                shape = tuple(int(d) for d in cache.shape)
                self.dtype = cache.dtype
            else:  # Qwen 3.5's linear-attention layers keep recurrent and convolution states beside keys and values
                shape = ()
                described = (
                    f"a {type(cache).__name__} of {len(cache)} items" if isinstance(cache, (tuple, list)) else ""
                )
        if len(shape) != 6 or shape[2] != 2:
            raise ModelError(
                f"`{name}`'s call_with_cache cache is {described or f'of shape {shape}'}, not keras-hub's "
                "(batch, layers, 2, length, heads, depth) nor one (key, value) pair a layer: attnkit cannot export "
                "its decode step (export it without --generate).",
                flag="--generate",
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
            # keras-hub Gemma 4's backbone takes its positions as an input (its preprocessor feeds 0..n-1)
            position_ids="position_ids" if "position_ids" in _input_names(backbone) else None,
        )

    @staticmethod
    def _to_keras_hub(pairs):
        """``[(key, value)]`` of (batch, heads, length, depth) -> (batch, layers, 2, length, heads, depth)."""
        stacked = ops.stack([ops.stack([k, v], axis=1) for k, v in pairs], axis=1)
        return ops.transpose(stacked, (0, 1, 2, 4, 3, 5))

    def _from_keras_hub(self, cache):
        """keras-hub's cache -> ``[(key, value)]`` of (batch, heads, length, depth)."""
        if self.per_layer:
            return [(ops.transpose(k, (0, 2, 1, 3)), ops.transpose(v, (0, 2, 1, 3))) for k, v in cache]
        cache = ops.transpose(cache, (0, 1, 2, 4, 3, 5))
        return [(cache[:, i, 0], cache[:, i, 1]) for i in range(self.spec.num_layers)]

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
        return self._from_keras_hub(cross)

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
        if isinstance(index, int) and not self.seq2seq:
            # a tensor, as keras-hub's generate() passes it: SmolLM3's layers take the cache and its index through
            # **kwargs, where Keras refuses a Python int beside a tensor; a traced step (dynamic shapes) has a
            # tensor here already, so its graph is the same
            index = ops.convert_to_tensor(index, "int32")
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
            with slice_update_as_concat(), layer_patches(self.model, index):
                logits, _, cache = self.model.call_with_cache(ids, cache, index)
        else:
            with cache_writes_from(past) as presents, layer_patches(self.model, index):
                logits, _, _ = self.model.call_with_cache(ids, cache, index)
            return ops.cast(logits, "float32"), presents
        return ops.cast(logits, "float32"), self._from_keras_hub(cache)


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
