"""The decode step of a keras-hub ``CausalLM`` (GPT-2, OPT, Llama 3, Mistral, Gemma, Qwen, ...), by its own
``call_with_cache``.

keras-hub's contract: ``call_with_cache(token_ids, cache, cache_update_index) -> (logits, hidden, cache)``
with one preallocated cache ``(batch, num_layers, 2, max_length, kv_heads, head_dim)`` that each call updates
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

The spec records ``positions="slot"`` (see :mod:`attnkit.genspec`): the step graphs take no padding mask,
and the loops feed each row's prompt slot by slot as ``generate()`` does.
"""

from __future__ import annotations

from keras import ops

from ..errors import ModelError
from ..genspec import GenerationSpec

# keras-hub models with rotary positions (Llama, Mistral, Gemma, Qwen) have no maximum length of their own;
# generation requests and TensorRT profiles need one.
ROTARY_MAX_LENGTH = 2048


def has_cached_call(model) -> bool:
    """True for a model that provides keras-hub's ``CausalLM`` cache contract: ``call_with_cache`` and
    ``_build_cache`` (which gives the cache's layout), with a ``backbone`` that has ``vocabulary_size`` and
    ``hidden_dim``. A custom model that provides the same is exported the same way."""
    return callable(getattr(model, "call_with_cache", None)) and callable(getattr(model, "_build_cache", None))


class CachedCallDecoding:
    """Prefill / decode-step functions over a keras-hub ``CausalLM`` (same interface as
    :class:`attnkit.models.decoding.Decoding`: ``spec``, ``step``).

    Raises:
        ModelError: a Seq2SeqLM (its cached call takes the encoder's output; not exported yet), or a cache
            whose layout is not keras-hub's (names MODEL).
    """

    def __init__(self, model):
        name = type(model).__name__
        if "Seq2Seq" in name or hasattr(model, "call_decoder_with_cache"):
            raise ModelError(
                f"`{name}` is an encoder-decoder; attnkit exports the cached decode step of keras-hub CausalLM "
                "models only.",
                flag="MODEL",
                hint="Pass a keras-hub CausalLM (GPT-2, OPT, Llama 3, Mistral, Gemma, Qwen), or attnkit's seq2seq.",
            )
        self.model = model
        _, cache = model._build_cache(ops.ones((1, 1), "int32"))
        shape = tuple(int(d) for d in cache.shape)
        if len(shape) != 6 or shape[2] != 2:
            raise ModelError(
                f"`{name}`'s call_with_cache cache has shape {shape}, not keras-hub's "
                "(batch, layers, 2, length, heads, depth).",
                flag="MODEL",
            )
        backbone = model.backbone
        max_length = getattr(backbone, "max_sequence_length", None) or ROTARY_MAX_LENGTH
        self.spec = GenerationSpec(
            family="decoder",
            num_layers=shape[1],
            num_heads=shape[4],
            depth=shape[5],
            vocab_size=int(backbone.vocabulary_size),
            max_length=int(max_length),
            d_model=int(backbone.hidden_dim),
            positions="slot",
        )
        self.dtype = cache.dtype

    def step(self, ids, mask=None, past=None, cross=None, encoder_mask=None):
        """Logits (batch, new, vocab) of ``ids`` at slots ``past .. past + new - 1`` and the cache grown by them.

        Args:
            ids: (batch, new) tokens. mask: ignored (slot positions attend to every earlier slot).
            past: ``[(key, value)]`` per layer, (batch, kv_heads, past, depth), or None for a prefill.
        """
        batch, new = ops.shape(ids)[0], ops.shape(ids)[1]
        g = self.spec
        fresh = ops.zeros((batch, g.num_layers, 2, new, g.num_heads, g.depth), self.dtype)
        if past is None:
            cache, index = fresh, 0
        else:
            # (batch, heads, past, depth) per layer -> keras-hub's (batch, layers, 2, past, heads, depth)
            stacked = ops.stack([ops.stack([k, v], axis=1) for k, v in past], axis=1)
            cache = ops.concatenate([ops.transpose(stacked, (0, 1, 2, 4, 3, 5)), fresh], axis=3)
            index = ops.shape(past[0][0])[2]
        logits, _, cache = self.model.call_with_cache(ids, cache, index)
        cache = ops.transpose(cache, (0, 1, 2, 4, 3, 5))
        presents = [(cache[:, i, 0], cache[:, i, 1]) for i in range(g.num_layers)]
        return ops.cast(logits, "float32"), presents


def decoding_for(model):
    """The decoding adapter of ``model``: keras-hub's cached call, or attnkit's own layers."""
    if has_cached_call(model):
        return CachedCallDecoding(model)
    from .decoding import Decoding

    return Decoding(model)
