"""The KV-cache path of the attention layers (issue 11, part 1): decoding token by token with cached
keys/values gives the full recompute's logits, and the full-sequence path is unchanged."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import rel_l2
from keras import ops

from attnkit.core.errors import ModelError
from attnkit.models import resolve
from attnkit.models.attention import MultiHeadAttention
from attnkit.models.transformer import TransformerDecoderBlock


def _parts(model, prefix=""):
    layers = {layer.name: layer for layer in model.layers}
    blocks = sorted(
        (layer for name, layer in layers.items() if name.startswith(f"{prefix}decoder_block_")),
        key=lambda b: int(b.name.rsplit("_", 1)[1]),
    )
    return layers[f"{prefix}embedding"], blocks, layers.get(f"{prefix}final_norm"), layers["lm_head"]


def _decode(model, ids, prompt: int, prefix="", memory=None, memory_mask=None):
    """Logits of every position from a prefill of ``prompt`` tokens and then one token per step."""
    embed, blocks, final_norm, head = _parts(model, prefix)
    cross = [b.cross_attention_layer.project_key_value(memory) for b in blocks] if memory is not None else None
    past, logits, start = [None] * len(blocks), [], 0
    for stop in [prompt] + list(range(prompt + 1, ids.shape[1] + 1)):
        x = embed(ids[:, start:stop], start_index=start)
        for i, block in enumerate(blocks):
            x, present = block(
                x,
                encoder_padding_mask=memory_mask,
                past_key_value=past[i],
                cross_key_value=cross[i] if cross else None,
                use_cache=True,
            )
            past[i] = present["self_attention"]
        x = final_norm(x) if final_norm is not None else x
        logits.append(np.asarray(head(x)))
        start = stop
    return np.concatenate(logits, axis=1)


def test_decoder_lm_cached_decoding_equals_full_recompute(rng):
    model, spec, _ = resolve("decoder-small", seed=3)
    ids = rng.integers(1, 1000, size=(2, 19)).astype("int32")
    full = np.asarray(model({"token_ids": ids, "padding_mask": np.ones_like(ids)})["logits"])
    cached = _decode(model, ids, prompt=5)
    assert cached.shape == full.shape
    assert rel_l2(full, cached) < 1e-5
    assert (full.argmax(-1) == cached.argmax(-1)).all()  # the same greedy tokens at every position


def test_seq2seq_cached_decoding_with_precomputed_cross_attention(rng):
    model, spec, _ = resolve("seq2seq-base", seed=1)
    src = rng.integers(1, 1000, size=(2, 11)).astype("int32")
    src_mask = np.ones_like(src)
    src_mask[1, 8:] = 0  # padding in the source: the cross-attention mask must hold with the cache too
    tgt = rng.integers(1, 1000, size=(2, 9)).astype("int32")
    feeds = {"encoder_token_ids": src, "encoder_padding_mask": src_mask}
    full = np.asarray(model({**feeds, "decoder_token_ids": tgt, "decoder_padding_mask": np.ones_like(tgt)})["logits"])
    layers = {layer.name: layer for layer in model.layers}
    memory = layers["encoder_embedding"](src)
    for i in range(6):
        memory = layers[f"encoder_encoder_block_{i}"](memory, padding_mask=src_mask)
    cached = _decode(model, tgt, prompt=3, prefix="decoder_", memory=memory, memory_mask=src_mask)
    assert rel_l2(full, cached) < 1e-5


def test_full_sequence_path_is_unchanged_by_the_cache_arguments(rng):
    block = TransformerDecoderBlock(32, 4, 64, cross_attention=True)
    x = rng.standard_normal((2, 6, 32)).astype("float32")
    memory = rng.standard_normal((2, 5, 32)).astype("float32")
    plain = np.asarray(block(x, encoder_output=memory))
    out, present = block(x, encoder_output=memory, use_cache=True)
    np.testing.assert_array_equal(np.asarray(out), plain)  # bit-identical
    k, v = present["self_attention"]
    assert k.shape == v.shape == (2, 4, 6, 8) and present["cross_attention"][0].shape == (2, 4, 5, 8)
    mha = MultiHeadAttention(32, 4)
    y = np.asarray(mha(x))
    y2, (k2, _) = mha(x, use_cache=True)
    np.testing.assert_array_equal(np.asarray(y2), y)
    assert ops.shape(k2) == (2, 4, 6, 8)


def test_keras_attention_has_no_cache():
    block = TransformerDecoderBlock(16, 2, 32, attention="keras")
    x = np.ones((1, 3, 16), "float32")
    block(x)
    with pytest.raises(ModelError, match="classic"):
        block(x, use_cache=True)
