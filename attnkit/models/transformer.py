"""Transformer blocks and the encoder / decoder-LM / seq2seq model builders.

Layers follow keras-hub's discipline: ``__init__`` stores config, ``build`` creates and names the
sublayers with ``dtype=self.dtype_policy``, ``get_config`` serialises every argument so every layer
round-trips through ``.keras``.
"""

from __future__ import annotations

import keras
import numpy as np
from keras import ops

from ..core.errors import ModelError
from .attention import MultiHeadAttention, additive_padding_mask, causal_mask, check_heads
from .policy import island_dtype

ATTENTION_IMPLS = ("classic", "keras")
ACTIVATIONS = ("relu", "gelu")


def sinusoidal_table(max_length: int, d_model: int) -> np.ndarray:
    """The original paper's positional encoding, shape (max_length, d_model), float32."""
    pos = np.arange(max_length)[:, None]
    i = np.arange(d_model)[None, :]
    angles = pos / np.power(10000.0, (2 * (i // 2)) / d_model)
    table = np.where(i % 2 == 0, np.sin(angles), np.cos(angles))
    return table.astype("float32")


@keras.saving.register_keras_serializable(package="attnkit")
class TokenAndPositionEmbedding(keras.layers.Layer):
    """Token embedding scaled by sqrt(d_model) plus a fixed sinusoidal positional encoding."""

    def __init__(self, vocab_size: int, d_model: int, max_length: int, **kwargs):
        super().__init__(**kwargs)
        self.vocab_size, self.d_model, self.max_length = vocab_size, d_model, max_length

    def build(self, input_shape):
        self.token_embedding = keras.layers.Embedding(
            self.vocab_size, self.d_model, name="token_embedding", dtype=self.dtype_policy
        )
        self.token_embedding.build(input_shape)
        self.positions = sinusoidal_table(self.max_length, self.d_model)

    def call(self, token_ids, start_index=0, positions=None):
        """``start_index``: absolute position of the first token (decoding with a KV cache feeds only
        the new tokens); 0 keeps exactly the graph of a full sequence. ``positions``: (batch, seq)
        absolute position of every token, per row (a batch of prompts of different lengths, decoded
        in lock-step: see :mod:`attnkit.models.decoding`); overrides ``start_index``."""
        seq = ops.shape(token_ids)[1]
        x = self.token_embedding(token_ids) * ops.cast(ops.sqrt(float(self.d_model)), self.compute_dtype)
        table = ops.convert_to_tensor(self.positions)
        if positions is not None:
            return x + ops.cast(ops.take(table, positions, axis=0), self.compute_dtype)
        if isinstance(start_index, int) and start_index == 0:
            pos = table[:seq]
        else:
            pos = ops.slice(table, (start_index, 0), (seq, self.d_model))
        return x + ops.cast(pos, self.compute_dtype)[None, :, :]

    def compute_output_shape(self, input_shape):
        return tuple(input_shape) + (self.d_model,)

    def get_config(self):
        return {
            **super().get_config(),
            "vocab_size": self.vocab_size,
            "d_model": self.d_model,
            "max_length": self.max_length,
        }


class _AttentionBlockBase(keras.layers.Layer):
    """Shared config and sublayer factories of the encoder and decoder blocks."""

    def __init__(
        self,
        d_model: int,
        num_heads: int,
        ffn_dim: int,
        activation: str = "relu",
        dropout: float = 0.0,
        norm_first: bool = False,
        attention: str = "classic",
        layer_norm_epsilon: float = 1e-6,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if attention not in ATTENTION_IMPLS:
            raise ValueError(f"`attention` must be one of {ATTENTION_IMPLS}; got {attention!r}.")
        if activation not in ACTIVATIONS:
            raise ValueError(f"`activation` must be one of {ACTIVATIONS}; got {activation!r}.")
        check_heads(d_model, num_heads)  # at construction time, whichever implementation is used
        self.d_model, self.num_heads, self.ffn_dim = d_model, num_heads, ffn_dim
        self.activation, self.dropout, self.norm_first = activation, dropout, norm_first
        self.attention, self.layer_norm_epsilon = attention, layer_norm_epsilon

    def _attention_layer(self, name, shape):
        if self.attention == "keras":
            layer = keras.layers.MultiHeadAttention(
                self.num_heads, self.d_model // self.num_heads, name=name, dtype=self.dtype_policy
            )
            layer.build(shape, shape)
        else:
            layer = MultiHeadAttention(self.d_model, self.num_heads, name=name, dtype=self.dtype_policy)
            layer.build(shape)
        return layer

    def _attend(self, layer, query, memory, mask, scores: bool, cache: dict | None = None):
        """The attention sublayer's output, its (batch, heads, q, k) weights when ``scores``, and its
        ``(key, value)`` when ``cache`` (``{"past_key_value": ..., "key_value": ...}``) is given.

        Scores and cache arguments are passed only when wanted, so the default graph is exactly the
        one without them.
        """
        if self.attention == "keras":
            if cache is not None:
                raise ModelError(
                    "a KV cache needs attnkit's classic attention; this block uses keras.layers.MultiHeadAttention.",
                    hint="Build the model with attention='classic'.",
                )
            # keras MHA wants a boolean keep-mask (batch, q, k); ours is additive (b|1, 1, q|1, k).
            keep = ops.less(mask[:, 0, :, :], 0.5) if mask is not None else None
            out = layer(query, memory, attention_mask=keep, return_attention_scores=scores)
            return (out[0], out[1], None) if scores else (out, None, None)
        extra = {"use_cache": True, **{k: v for k, v in cache.items() if v is not None}} if cache is not None else {}
        if cache is not None and cache.get("key_value") is not None:
            memory = None  # cross-attention over precomputed keys/values: the memory is not projected again
        out = layer(query, memory, attention_mask=mask, return_attention_scores=scores, **extra)
        if not scores and cache is None:
            return out, None, None
        return out[0], (out[1] if scores else None), (out[-1] if cache is not None else None)

    def _attention_branch(self, x, layer, norm, dropout, memory, mask, scores, training, cache=None):
        """Residual attention branch: post-LN ``norm(x + drop(attn(x)))`` or pre-LN ``x + drop(attn(norm(x)))``."""
        h = norm(x) if self.norm_first else x
        memory = h if memory is None and not (cache and cache.get("key_value") is not None) else memory
        out, weights, present = self._attend(layer, h, memory, mask, scores, cache)
        # ops.add promotes: with LayerNorm kept fp32 under a mixed policy the residual stream stays fp32.
        x = ops.add(x, dropout(out, training=training))
        return (x if self.norm_first else norm(x)), weights, present

    def _norm(self, name, shape):
        # LayerNorm is an fp32 island under mixed policies (the rule: attnkit.models.policy).
        layer = keras.layers.LayerNormalization(
            epsilon=self.layer_norm_epsilon, name=name, dtype=island_dtype(self.dtype_policy)
        )
        layer.build(shape)
        return layer

    def _dropout(self, name):
        return keras.layers.Dropout(self.dropout, name=name, dtype=self.dtype_policy)

    def _build_ffn(self, shape):
        self.ffn_inner = keras.layers.Dense(
            self.ffn_dim, activation=self.activation, name="ffn_inner", dtype=self.dtype_policy
        )
        self.ffn_inner.build(shape)
        self.ffn_outer = keras.layers.Dense(self.d_model, name="ffn_outer", dtype=self.dtype_policy)
        self.ffn_outer.build(tuple(shape[:-1]) + (self.ffn_dim,))
        self.ffn_norm = self._norm("ffn_norm", shape)
        self.ffn_dropout = self._dropout("ffn_dropout")

    def _ffn_branch(self, x, training):
        """Residual feed-forward branch, post-LN or pre-LN like the attention branch."""
        h = self.ffn_norm(x) if self.norm_first else x
        x = ops.add(x, self.ffn_dropout(self.ffn_outer(self.ffn_inner(h)), training=training))
        return x if self.norm_first else self.ffn_norm(x)

    # No compute_output_shape: Keras traces ``call`` symbolically, which also gets the
    # ``return_attention_scores=True`` form (output, scores) right.

    def get_config(self):
        return {
            **super().get_config(),
            "d_model": self.d_model,
            "num_heads": self.num_heads,
            "ffn_dim": self.ffn_dim,
            "activation": self.activation,
            "dropout": self.dropout,
            "norm_first": self.norm_first,
            "attention": self.attention,
            "layer_norm_epsilon": self.layer_norm_epsilon,
        }


@keras.saving.register_keras_serializable(package="attnkit")
class TransformerEncoderBlock(_AttentionBlockBase):
    """Self-attention + FFN, each with residual and LayerNorm (post-LN default, pre-LN option).

    Call args:
        x: (batch, seq, d_model). padding_mask: (batch, seq), 1 = token, 0 = padding.
        return_attention_scores: also return ``{"self_attention": (batch, heads, q, k) weights}``.
    """

    def build(self, x_shape, padding_mask_shape=None):
        self.self_attention = self._attention_layer("self_attention", x_shape)
        self.attention_norm = self._norm("attention_norm", x_shape)
        self.attention_dropout = self._dropout("attention_dropout")
        self._build_ffn(x_shape)

    def call(self, x, padding_mask=None, training=None, return_attention_scores=False):
        mask = additive_padding_mask(padding_mask) if padding_mask is not None else None
        # Self attention block.
        x, weights, _ = self._attention_branch(
            x, self.self_attention, self.attention_norm, self.attention_dropout, None, mask,
            return_attention_scores, training,
        )  # fmt: skip
        # Feed-forward block.
        x = self._ffn_branch(x, training)
        return (x, {"self_attention": weights}) if return_attention_scores else x


@keras.saving.register_keras_serializable(package="attnkit")
class TransformerDecoderBlock(_AttentionBlockBase):
    """Causal self-attention, optional cross-attention to an encoder, FFN.

    Args:
        cross_attention: build the cross-attention sublayer (seq2seq); False for a decoder-only LM.

    Call args:
        x: (batch, q, d_model). decoder_padding_mask: (batch, q). encoder_output: (batch, k, d_model).
        encoder_padding_mask: (batch, k). return_attention_scores: also return the weights of each
        attention sublayer, ``{"self_attention": ..., "cross_attention": ...}``.
        past_key_value: ``(key, value)`` of the tokens already decoded, (batch, heads, past, depth)
        each; ``x`` then holds only the new tokens and ``decoder_padding_mask`` covers past + new.
        cross_key_value: precomputed ``(key, value)`` of the encoder output for cross-attention
        (``cross_attention_layer.project_key_value(encoder_output)``), reused at every step.
        use_cache: also return ``{"self_attention": (key, value), "cross_attention": (key, value)}``.
        attention_mask, encoder_attention_mask: precomputed additive masks (1.0 = masked) replacing the
        ones built from the padding masks: a decode step builds them once for every layer.
    """

    def __init__(self, *args, cross_attention: bool = False, **kwargs):
        super().__init__(*args, **kwargs)
        self.cross_attention = cross_attention

    def build(
        self, x_shape, decoder_padding_mask_shape=None, encoder_output_shape=None, encoder_padding_mask_shape=None
    ):
        self.self_attention = self._attention_layer("self_attention", x_shape)
        self.attention_norm = self._norm("attention_norm", x_shape)
        self.attention_dropout = self._dropout("attention_dropout")
        if self.cross_attention:
            self.cross_attention_layer = self._attention_layer("cross_attention", x_shape)
            self.cross_attention_norm = self._norm("cross_attention_norm", x_shape)
            self.cross_attention_dropout = self._dropout("cross_attention_dropout")
        self._build_ffn(x_shape)

    def call(
        self,
        x,
        decoder_padding_mask=None,
        encoder_output=None,
        encoder_padding_mask=None,
        training=None,
        return_attention_scores=False,
        past_key_value=None,
        cross_key_value=None,
        use_cache=False,
        attention_mask=None,
        encoder_attention_mask=None,
    ):
        if attention_mask is not None:
            mask = attention_mask
        else:
            past_len = 0 if past_key_value is None else ops.shape(past_key_value[0])[2]
            mask = causal_mask(ops.shape(x)[1], past_len)
            if decoder_padding_mask is not None:
                mask = ops.maximum(mask, additive_padding_mask(decoder_padding_mask))
        scores, present = {}, {}
        # Causal self attention block.
        cache = {"past_key_value": past_key_value} if use_cache or past_key_value is not None else None
        x, scores["self_attention"], present["self_attention"] = self._attention_branch(
            x, self.self_attention, self.attention_norm, self.attention_dropout, None, mask,
            return_attention_scores, training, cache,
        )  # fmt: skip
        # Cross attention block.
        if self.cross_attention:
            if encoder_output is None and cross_key_value is None:
                raise ValueError("a decoder block built with cross_attention=True needs `encoder_output`.")
            cross_mask = encoder_attention_mask
            if cross_mask is None and encoder_padding_mask is not None:
                cross_mask = additive_padding_mask(encoder_padding_mask)
            cache = {"key_value": cross_key_value} if use_cache or cross_key_value is not None else None
            x, scores["cross_attention"], present["cross_attention"] = self._attention_branch(
                x, self.cross_attention_layer, self.cross_attention_norm, self.cross_attention_dropout,
                encoder_output, cross_mask, return_attention_scores, training, cache,
            )  # fmt: skip
        # Feed-forward block.
        x = self._ffn_branch(x, training)
        out = (x,) + ((scores,) if return_attention_scores else ()) + ((present,) if use_cache else ())
        return out if len(out) > 1 else x

    def get_config(self):
        return {**super().get_config(), "cross_attention": self.cross_attention}


def _block_kwargs(cfg: dict) -> dict:
    keys = ("d_model", "num_heads", "ffn_dim", "activation", "dropout", "norm_first", "attention")
    return {k: cfg[k] for k in keys if k in cfg}


def _token_inputs(prefix: str = ""):
    ids = keras.Input((None,), dtype="int32", name=f"{prefix}token_ids")
    mask = keras.Input((None,), dtype="int32", name=f"{prefix}padding_mask")
    return ids, mask


def _encoder_stack(cfg, ids, mask, prefix=""):
    x = TokenAndPositionEmbedding(cfg["vocab_size"], cfg["d_model"], cfg["max_length"], name=f"{prefix}embedding")(ids)
    for i in range(cfg["num_layers"]):
        x = TransformerEncoderBlock(**_block_kwargs(cfg), name=f"{prefix}encoder_block_{i}")(x, padding_mask=mask)
    if cfg.get("norm_first"):
        x = keras.layers.LayerNormalization(epsilon=1e-6, name=f"{prefix}final_norm")(x)
    return x


def build_mha(cfg: dict, name: str = "mha") -> keras.Model:
    """One attention layer on float features: x (batch, seq, d_model) -> output, same shape."""
    x = keras.Input((None, cfg["d_model"]), name="x")
    if cfg.get("attention", "classic") == "keras":
        layer = keras.layers.MultiHeadAttention(cfg["num_heads"], cfg["d_model"] // cfg["num_heads"], name="attention")
        y = layer(x, x)
    else:
        y = MultiHeadAttention(cfg["d_model"], cfg["num_heads"], name="attention")(x)
    return keras.Model({"x": x}, {"output": y}, name=name)


def build_encoder(cfg: dict, name: str = "encoder") -> keras.Model:
    """Token ids + padding mask -> contextual hidden states (batch, seq, d_model)."""
    ids, mask = _token_inputs()
    x = _encoder_stack(cfg, ids, mask)
    return keras.Model({"token_ids": ids, "padding_mask": mask}, {"hidden_states": x}, name=name)


def _decoder_stack(cfg, ids, mask, memory=None, memory_mask=None, prefix=""):
    x = TokenAndPositionEmbedding(cfg["vocab_size"], cfg["d_model"], cfg["max_length"], name=f"{prefix}embedding")(ids)
    for i in range(cfg["num_layers"]):
        block = TransformerDecoderBlock(
            **_block_kwargs(cfg), cross_attention=memory is not None, name=f"{prefix}decoder_block_{i}"
        )
        x = block(x, decoder_padding_mask=mask, encoder_output=memory, encoder_padding_mask=memory_mask)
    if cfg.get("norm_first"):
        x = keras.layers.LayerNormalization(epsilon=1e-6, name=f"{prefix}final_norm")(x)
    return keras.layers.Dense(cfg["vocab_size"], name="lm_head")(x)


def build_decoder_lm(cfg: dict, name: str = "decoder") -> keras.Model:
    """Causal language model: token ids + padding mask -> next-token logits (batch, seq, vocab)."""
    ids, mask = _token_inputs()
    logits = _decoder_stack(cfg, ids, mask)
    return keras.Model({"token_ids": ids, "padding_mask": mask}, {"logits": logits}, name=name)


def build_seq2seq(cfg: dict, name: str = "seq2seq") -> keras.Model:
    """Encoder-decoder: source and target ids + masks -> target logits (batch, target seq, vocab)."""
    enc_ids, enc_mask = _token_inputs("encoder_")
    dec_ids, dec_mask = _token_inputs("decoder_")
    enc_cfg = {**cfg, "num_layers": cfg["encoder_layers"]}
    dec_cfg = {**cfg, "num_layers": cfg["decoder_layers"]}
    memory = _encoder_stack(enc_cfg, enc_ids, enc_mask, prefix="encoder_")
    logits = _decoder_stack(dec_cfg, dec_ids, dec_mask, memory, enc_mask, prefix="decoder_")
    inputs = {
        "encoder_token_ids": enc_ids,
        "encoder_padding_mask": enc_mask,
        "decoder_token_ids": dec_ids,
        "decoder_padding_mask": dec_mask,
    }
    return keras.Model(inputs, {"logits": logits}, name=name)
