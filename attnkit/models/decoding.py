"""The cached decode step of a decoder-only LM or an encoder-decoder built from attnkit's layers.

``Decoding(model)`` finds the model's parts (token embedding, decoder blocks, final norm, LM head; for
seq2seq also the encoder) and exposes the two functions a generation server runs, in Keras ops so that
they trace under ``tf.function`` like the full model:

- ``encode(source ids, source mask)`` -> the cross-attention keys/values of every decoder layer (seq2seq);
- ``step(ids, mask, past, cross, encoder_mask)`` -> logits of the new tokens and the grown cache.

A prefill is ``step`` with no past. The full-sequence model is not touched: the step calls the same
layer objects (same weights) with their cache arguments.

Models are recognised by the layer types and names attnkit's builders give (``embedding``,
``decoder_block_{i}``, ``final_norm``, ``lm_head``; prefixed ``decoder_`` / ``encoder_`` in seq2seq).
A model with any other top-level layer is refused: attnkit could not know how that layer caches.
"""

from __future__ import annotations

import re

from keras import ops

from ..core.errors import ModelError
from ..core.genspec import GenerationSpec
from .attention import additive_padding_mask, causal_mask
from .transformer import TokenAndPositionEmbedding, TransformerDecoderBlock, TransformerEncoderBlock


def _blocks(layers: dict, pattern: str, kind) -> list:
    found = []
    for name, layer in layers.items():
        m = re.fullmatch(pattern, name)
        if m and isinstance(layer, kind):
            found.append((int(m.group(1)), layer))
    return [layer for _, layer in sorted(found, key=lambda t: t[0])]


class Decoding:
    """Encode / prefill / decode-step functions over a Keras decoder or seq2seq model.

    Raises:
        ModelError: the model has no causal decoder attnkit knows how to cache (names MODEL).
    """

    def __init__(self, model):
        layers = {layer.name: layer for layer in model.layers}
        seq2seq = "decoder_embedding" in layers
        prefix = "decoder_" if seq2seq else ""
        self.model = model
        self.embedding = layers.get(f"{prefix}embedding")
        self.blocks = _blocks(layers, rf"{prefix}decoder_block_(\d+)", TransformerDecoderBlock)
        self.final_norm = layers.get(f"{prefix}final_norm")
        self.head = layers.get("lm_head")
        if not isinstance(self.embedding, TokenAndPositionEmbedding) or not self.blocks or self.head is None:
            raise ModelError(
                f"`{model.name}` has no causal decoder attnkit can cache (it needs a TokenAndPositionEmbedding "
                "`embedding`, TransformerDecoderBlock `decoder_block_N` layers and an `lm_head`).",
                flag="MODEL",
                hint="Generation is for decoder and seq2seq models built from attnkit's layers, e.g. decoder-small.",
            )
        if any(b.attention != "classic" for b in self.blocks):
            raise ModelError(
                "a KV cache needs attnkit's classic attention; this model uses keras.layers.MultiHeadAttention.",
                flag="MODEL",
                hint="Build the model with attention='classic'.",
            )
        known = {f"{prefix}embedding", f"{prefix}final_norm", "lm_head"} | {b.name for b in self.blocks}
        self.encoder_embedding = self.encoder_blocks = self.encoder_norm = None
        if seq2seq:
            self.encoder_embedding = layers.get("encoder_embedding")
            self.encoder_blocks = _blocks(layers, r"encoder_encoder_block_(\d+)", TransformerEncoderBlock)
            self.encoder_norm = layers.get("encoder_final_norm")
            known |= {"encoder_embedding", "encoder_final_norm"} | {b.name for b in self.encoder_blocks}
            if not all(b.cross_attention for b in self.blocks) or not self.encoder_blocks:
                raise ModelError(
                    f"`{model.name}` has a decoder_embedding but no encoder/cross-attention.", flag="MODEL"
                )
        unknown = [name for name, layer in layers.items() if name not in known and type(layer).__name__ != "InputLayer"]
        if unknown:
            raise ModelError(
                f"`{model.name}` has layers attnkit does not know how to cache: {', '.join(unknown[:5])}.",
                flag="MODEL",
                hint="Generation export covers models built from attnkit's embedding, decoder blocks and lm_head, "
                "and keras-hub CausalLM models (call_with_cache).",
            )
        block = self.blocks[0]
        self.spec = GenerationSpec(
            family="seq2seq" if seq2seq else "decoder",
            num_layers=len(self.blocks),
            num_heads=block.num_heads,
            depth=block.d_model // block.num_heads,
            vocab_size=self.embedding.vocab_size,
            max_length=self.embedding.max_length,
            d_model=block.d_model,
            ids=f"{prefix}token_ids",
            mask=f"{prefix}padding_mask",
        )

    def encode(self, ids, mask):
        """Cross-attention ``[(key, value)]`` per decoder layer from the source (seq2seq only)."""
        x = self.encoder_embedding(ids)
        for block in self.encoder_blocks:
            x = block(x, padding_mask=mask)
        if self.encoder_norm is not None:
            x = self.encoder_norm(x)
        return [b.cross_attention_layer.project_key_value(x) for b in self.blocks]

    def step(self, ids, mask, past=None, cross=None, encoder_mask=None):
        """Logits (batch, new, vocab) of the new tokens ``ids`` and the cache ``[(key, value)]`` grown by them.

        Args:
            ids: (batch, new) new tokens. mask: (batch, past + new), 1 = token, 0 = padding.
            past: ``[(key, value)]`` per layer, (batch, heads, past, depth), or None for a prefill.
            cross: the cross-attention cache from :meth:`encode` (seq2seq). encoder_mask: the source mask.
        """
        new = ops.shape(ids)[1]
        total = ops.shape(mask)[1]
        # Per-row positions: padding (on either side, or between the prompt and the generated tokens)
        # takes no position, so each row is decoded as it would be alone.
        positions = ops.maximum(ops.cumsum(ops.cast(mask, "int32"), axis=1) - 1, 0)
        positions = ops.slice(positions, (0, total - new), (ops.shape(mask)[0], new))
        x = self.embedding(ids, positions=positions)
        # The masks once per step, not once per layer (fewer small nodes in the exported step graph).
        self_mask = ops.maximum(causal_mask(new, total - new), additive_padding_mask(mask))
        cross_mask = additive_padding_mask(encoder_mask) if encoder_mask is not None else None
        presents = []
        for i, block in enumerate(self.blocks):
            x, present = block(
                x,
                attention_mask=self_mask,
                encoder_attention_mask=cross_mask,
                past_key_value=None if past is None else past[i],
                cross_key_value=None if cross is None else cross[i],
                use_cache=True,
            )
            presents.append(present["self_attention"])
        if self.final_norm is not None:
            x = self.final_norm(x)
        logits = self.head(x)
        return ops.cast(logits, "float32"), presents
