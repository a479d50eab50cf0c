"""Multi-head attention in the classic formulation (wq/wk/wv/dense, split_heads, additive mask).

Masks follow the classic convention: an *additive* mask holds 1.0 where a position must not be
attended to and 0.0 elsewhere; the logits get ``mask * -1e9``. Padding masks given as model inputs
follow keras-hub's convention instead (1 = real token, 0 = padding) and are converted here.
"""

from __future__ import annotations

import keras
from keras import ops

from ..core.errors import ModelError

NEG_INF = -1e9


def padding_mask_from_ids(token_ids, pad_id: int = 0):
    """Keras-style padding mask (1 = token, 0 = padding) from token ids."""
    return ops.cast(ops.not_equal(token_ids, pad_id), "int32")


def padding_mask_from_lengths(lengths, max_length: int):
    """Keras-style padding mask (1 = token, 0 = padding) from valid lengths, shape (batch, max_length)."""
    positions = ops.arange(max_length, dtype="int32")[None, :]
    return ops.cast(positions < ops.expand_dims(ops.cast(lengths, "int32"), -1), "int32")


def additive_padding_mask(padding_mask):
    """(batch, k) keep-mask -> (batch, 1, 1, k) additive mask with 1.0 at padded keys."""
    keep = ops.cast(padding_mask, "float32")
    return (1.0 - keep)[:, None, None, :]


def causal_mask(seq_len, past_len=0):
    """(1, 1, q, past + q) additive mask with 1.0 at future positions: query i (at absolute position
    past + i) may attend keys 0..past + i. ``past_len=0`` is the plain (q, q) causal mask."""
    no_past = isinstance(past_len, int) and past_len == 0  # then the graph is exactly the plain mask's
    i = ops.arange(seq_len)[:, None] if no_past else ops.arange(seq_len)[:, None] + past_len
    j = ops.arange(seq_len if no_past else seq_len + past_len)[None, :]
    return ops.cast(j > i, "float32")[None, None, :, :]


def check_heads(d_model: int, num_heads: int) -> int:
    """The depth of each head; refuses a width the head count does not divide (keras-hub's message style).

    Raises:
        ModelError: ``d_model % num_heads != 0`` or ``num_heads < 1``, with both numbers.
    """
    if num_heads < 1 or d_model % num_heads != 0:
        raise ModelError(
            f"`d_model` ({d_model}) must be divisible by `num_heads` ({num_heads}); "
            f"{d_model} % {num_heads} = {d_model % max(num_heads, 1)}.",
            hint="Choose a head count that divides the model width.",
        )
    return d_model // num_heads


def scaled_dot_product_attention(q, k, v, mask=None):
    """softmax(q kᵀ / sqrt(depth) + mask * -1e9) v.

    The logits, mask and softmax are computed in float32 whatever the compute dtype: under
    float16 ``-1e9`` overflows and ``0 * -inf`` would turn unmasked logits into NaN.

    Returns:
        (output in q's dtype, attention weights in float32).
    """
    depth = ops.cast(ops.shape(k)[-1], "float32")
    logits = ops.cast(ops.matmul(q, ops.swapaxes(k, -1, -2)), "float32") / ops.sqrt(depth)
    if mask is not None:
        logits = logits + ops.cast(mask, "float32") * NEG_INF
    weights = ops.softmax(logits, axis=-1)
    return ops.matmul(ops.cast(weights, v.dtype), v), weights


@keras.saving.register_keras_serializable(package="attnkit")
class MultiHeadAttention(keras.layers.Layer):
    """Classic multi-head attention: output has the query's shape.

    Args:
        d_model: model width; must be divisible by ``num_heads``.
        num_heads: number of heads; each has depth ``d_model // num_heads``.

    Call args:
        query: (batch, q, d_model). value: (batch, k, d_model), defaults to query. key: defaults
        to value. attention_mask: additive mask broadcastable to (batch, heads, q, k), 1.0 = masked.
        return_attention_scores: also return the (batch, heads, q, k) float32 weights.

    Example:
        >>> mha = MultiHeadAttention(d_model=64, num_heads=4)
        >>> y = mha(x, x, attention_mask=causal_mask(seq))
    """

    def __init__(self, d_model: int, num_heads: int, **kwargs):
        super().__init__(**kwargs)
        self.depth = check_heads(d_model, num_heads)
        self.d_model = d_model
        self.num_heads = num_heads

    def build(self, query_shape, value_shape=None, key_shape=None):
        value_shape = value_shape or query_shape
        key_shape = key_shape or value_shape

        def dense(name):
            return keras.layers.Dense(self.d_model, name=name, dtype=self.dtype_policy)

        self.wq, self.wk, self.wv, self.dense = (dense(n) for n in ("wq", "wk", "wv", "dense"))
        self.wq.build(query_shape)
        self.wk.build(key_shape)
        self.wv.build(value_shape)
        self.dense.build(tuple(query_shape[:-1]) + (self.d_model,))

    def split_heads(self, x, batch_size):
        """(batch, seq, d_model) -> (batch, heads, seq, depth).

        ``batch_size`` comes from the *query* and the sequence axis is ``-1``, as in the classic
        formulation. Taking both from ``shape(x)`` makes tf2onnx emit a copy-dims ``[0, 0, h, d]``
        Reshape that its optimizer then merges with Dense's 2-D reshape, producing a graph that
        fails at run time (measured with tf2onnx 1.17).
        """
        x = ops.reshape(x, (batch_size, -1, self.num_heads, self.depth))
        return ops.transpose(x, (0, 2, 1, 3))

    def merge_heads(self, x, batch_size):
        """(batch, heads, seq, depth) -> (batch, seq, d_model)."""
        x = ops.transpose(x, (0, 2, 1, 3))
        return ops.reshape(x, (batch_size, -1, self.d_model))

    def call(
        self,
        query,
        value=None,
        key=None,
        attention_mask=None,
        return_attention_scores=False,
        past_key_value=None,
        key_value=None,
        use_cache=False,
    ):
        """See the class docstring; the cache arguments are for decoding token by token.

        Args:
            past_key_value: ``(key, value)`` of the tokens already seen, each (batch, heads, past,
                depth): the new tokens' keys and values are appended to them (self-attention).
            key_value: precomputed ``(key, value)`` (cross-attention over a fixed encoder output: see
                :meth:`project_key_value`); ``value``/``key`` are then not projected.
            use_cache: also return ``(key, value)`` as attended (past + new, or the precomputed pair).

        Returns:
            output, then the weights if ``return_attention_scores``, then ``(key, value)`` if ``use_cache``.
        """
        batch_size = ops.shape(query)[0]
        # Project and split into heads.
        q = self.split_heads(self.wq(query), batch_size)
        if key_value is not None:
            k, v = key_value
        else:
            value = query if value is None else value
            k, v = self.project_key_value(value, key, batch_size)  # the query's batch: the graph of before
        if past_key_value is not None:
            k = ops.concatenate([past_key_value[0], k], axis=2)
            v = ops.concatenate([past_key_value[1], v], axis=2)
        # Attend, merge heads, project back.
        attended, weights = scaled_dot_product_attention(q, k, v, attention_mask)
        output = self.dense(self.merge_heads(attended, batch_size))
        result = (output,) + ((weights,) if return_attention_scores else ()) + (((k, v),) if use_cache else ())
        return result if len(result) > 1 else output

    def project_key_value(self, value, key=None, batch_size=None):
        """``(key, value)`` heads of a memory, (batch, heads, k, depth) each: what a decoder computes once
        per encoder output and reuses at every step (``key_value=``)."""
        key = value if key is None else key
        batch_size = ops.shape(value)[0] if batch_size is None else batch_size
        return self.split_heads(self.wk(key), batch_size), self.split_heads(self.wv(value), batch_size)

    # No compute_output_shape: Keras traces ``call`` symbolically, which also gets the
    # ``return_attention_scores=True`` form (output, weights) right.

    def get_config(self):
        return {**super().get_config(), "d_model": self.d_model, "num_heads": self.num_heads}


def copy_weights_to_keras_mha(src: MultiHeadAttention, dst: keras.layers.MultiHeadAttention) -> None:
    """Copy the classic layer's weights into an equivalent ``keras.layers.MultiHeadAttention``.

    The classic (d, d) kernels reshape to Keras's EinsumDense (d, heads, depth) kernels because
    ``split_heads`` reshapes the last axis in C order as (heads, depth).
    """
    h, depth, d = src.num_heads, src.depth, src.d_model
    pairs = [(src.wq, dst._query_dense), (src.wk, dst._key_dense), (src.wv, dst._value_dense)]
    for dense, einsum in pairs:
        einsum.set_weights([dense.kernel.numpy().reshape(d, h, depth), dense.bias.numpy().reshape(h, depth)])
    out = dst._output_dense
    out.set_weights([src.dense.kernel.numpy().reshape(h, depth, d), src.dense.bias.numpy()])


def _is_attention(layer) -> bool:
    """attnkit's classic layer, Keras's (keras-hub's cached one included), or a keras-hub model's own
    attention layer (Llama, Mistral, Qwen, ...): keras-hub's convention is a ``_compute_attention`` that
    turns scores into weights through ``_masked_softmax``."""
    if isinstance(layer, (MultiHeadAttention, keras.layers.MultiHeadAttention)):
        return True
    kind = type(layer)
    return callable(getattr(kind, "_compute_attention", None)) and callable(getattr(kind, "_masked_softmax", None))


def attention_layers(model) -> list:
    """Attention layers of a model, in call order.

    A functional model's (and a nested backbone's) layers are walked in the graph's order, any other
    layer's in the order it tracks them. Keras's ``_flatten_layers`` is not call order once layers nest
    (a keras-hub backbone came out last layer first; a decoder block cross before self attention).
    """
    found, seen = [], set()

    def walk(layer):
        children = layer.layers if isinstance(layer, keras.Model) else layer._flatten_layers(False, False)
        for child in children:
            if id(child) in seen:
                continue
            seen.add(id(child))
            if _is_attention(child):
                found.append(child)
            else:
                walk(child)

    walk(model)
    return found
