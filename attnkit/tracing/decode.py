"""``tf.function`` tracing of the generation functions: encode, prefill, decode step and ``generate``.

Each function takes its inputs positionally in the order of the :class:`GenerationSpec`'s tensor specs
(so SavedModel signatures and ONNX graphs get the spec's names) and returns a dict keyed by output name.
"""

from __future__ import annotations

import logging

from ..core.genspec import GenerationSpec
from ..core.names import EOS_ID, LENGTHS, MAX_NEW_TOKENS, OUTPUT_IDS
from ..core.spec import ExportSpec, ShapeRange
from . import tensor_signature as _signature


class _DottedNames(logging.Filter):
    """TF logs a warning per input whose name has a dot (``past_key_values.0.key``) while it makes a
    Python parameter name of it; the signature and the ONNX graph keep the dotted name, as tested."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "is not a valid tf.function parameter name" not in record.getMessage()


logging.getLogger("absl").addFilter(_DottedNames())


def _pairs(flat):
    return [(flat[i], flat[i + 1]) for i in range(0, len(flat), 2)]


def _split(g: GenerationSpec, args, with_past: bool):
    """(ids, mask, encoder_mask, cross, past) from the positional arguments of a step function."""
    if g.slot:  # no padding mask (see attnkit.core.genspec)
        ids, mask, rest = args[0], None, list(args[1:])
    else:
        ids, mask, rest = args[0], args[1], list(args[2:])
    enc_mask = cross = None
    if g.seq2seq:
        enc_mask, rest = rest[0], rest[1:]
        cross, rest = _pairs(rest[: 2 * g.num_layers]), rest[2 * g.num_layers :]
    past = _pairs(rest) if with_past else None
    return ids, mask, enc_mask, cross, past


def step_outputs(g: GenerationSpec, logits, presents) -> dict:
    out = {"logits": logits}
    for i, (k, v) in enumerate(presents):
        kn, vn = g.present(i)
        out[kn], out[vn] = k, v
    return out


def trace_step(decoding, with_past: bool = True, jit_compile: bool = False):
    """The decode step (``with_past``) or the prefill as a ``tf.function``."""
    import tensorflow as tf

    g = decoding.spec

    @tf.function(input_signature=_signature(g.step_inputs(with_past)), autograph=False, jit_compile=jit_compile)
    def step(*args):
        ids, mask, enc_mask, cross, past = _split(g, args, with_past)
        logits, presents = decoding.step(ids, mask, past, cross, enc_mask)
        return step_outputs(g, logits, presents)

    step.keras_model = decoding.model
    return step


def trace_encode(decoding, jit_compile: bool = False):
    """Source ids and mask -> the cross-attention cache of every decoder layer (seq2seq)."""
    import tensorflow as tf

    g = decoding.spec

    @tf.function(input_signature=_signature(g.encoder_inputs()), autograph=False, jit_compile=jit_compile)
    def encode(ids, mask):
        out = {}
        for i, (k, v) in enumerate(decoding.encode(ids, mask)):
            kn, vn = g.cross(i)
            out[kn], out[vn] = k, v
        return out

    encode.keras_model = decoding.model
    return encode


def generate_inputs(g: GenerationSpec):
    """The ``generate`` signature's inputs: the prompt (and source), ``max_new_tokens``, ``eos_id``."""
    from ..core.spec import TensorSpec

    prompt = g.prompt_inputs()
    source = g.encoder_inputs() if g.seq2seq else ()
    scalars = (TensorSpec(MAX_NEW_TOKENS, "int32", ()), TensorSpec(EOS_ID, "int32", ()))
    return prompt + source + scalars


def trace_generate(decoding, sampler="greedy"):
    """Generation in one graph: prefill, then the cached decode step in a ``tf.while_loop``.

    Inputs: the prompt ids and padding mask (either side, any lengths), for seq2seq the source ids and
    mask, ``max_new_tokens`` (>= 1) and ``eos_id`` (a row that produced it is finished and continues with
    ``eos_id``; -1 never stops). Outputs: ``output_ids`` (batch, max_new_tokens) and
    ``sequence_lengths`` (batch,), the tokens up to and including the first ``eos_id``. The loop ends
    early when every row is finished. Each token is chosen by ``sampler`` (:mod:`attnkit.core.sampling`, the
    same object the numpy loop calls, so both loops share one next-token rule). The request fails (InvalidArgument) for ``max_new_tokens`` < 1 or
    a prompt + ``max_new_tokens`` longer than the model's maximum length.
    """
    import tensorflow as tf

    from ..core.sampling import get_sampler

    sampler = get_sampler(sampler)
    g = decoding.spec
    if g.slot:
        return _trace_generate_slots(decoding, sampler)
    heads, depth = g.num_heads, g.depth

    @tf.function(input_signature=_signature(generate_inputs(g)), autograph=False)
    def generate(*args):
        ids, mask = args[0], args[1]
        max_new, eos = args[-2], args[-1]
        cross = enc_mask = None
        if g.seq2seq:
            enc_mask = args[3]
            cross = decoding.encode(args[2], enc_mask)
        prompt_len = tf.shape(ids)[1]
        with tf.control_dependencies(_request_checks(g, prompt_len, max_new)):
            mask = tf.identity(tf.cast(mask, tf.int32))
        logits, past = decoding.step(ids, mask, None, cross, enc_mask)
        last = tf.reduce_max(mask * tf.range(prompt_len)[None, :], axis=1)  # each row's last real token
        batch = tf.shape(ids)[0]
        token, done = sampler.next_token(tf.gather(logits, last, batch_dims=1), tf.zeros([batch], tf.bool), eos)

        def cond(i, token, done, mask, out, past):
            return tf.logical_and(i < max_new, tf.logical_not(tf.reduce_all(done)))

        def body(i, token, done, mask, out, past):
            mask = tf.concat([mask, tf.ones((batch, 1), tf.int32)], axis=1)
            logits, present = decoding.step(token[:, None], mask, past, cross, enc_mask)
            nxt, done = sampler.next_token(logits[:, -1], done, eos)
            return i + 1, nxt, done, mask, tf.concat([out, nxt[:, None]], 1), present

        kv = tf.TensorShape([None, heads, None, depth])
        _, _, _, _, out, _ = tf.while_loop(
            cond,
            body,
            (tf.constant(1), token, done, mask, token[:, None], past),
            shape_invariants=(
                tf.TensorShape([]),
                tf.TensorShape([None]),
                tf.TensorShape([None]),
                tf.TensorShape([None, None]),
                tf.TensorShape([None, None]),
                [(kv, kv)] * g.num_layers,
            ),
        )
        out = tf.pad(out, [[0, 0], [0, max_new - tf.shape(out)[1]]], constant_values=eos)
        return {OUTPUT_IDS: out, LENGTHS: _tf_lengths(out, eos)}

    generate.keras_model = decoding.model
    return generate


def _request_checks(g: GenerationSpec, prompt_len, max_new):
    import tensorflow as tf

    return [
        tf.debugging.assert_positive(max_new, message=f"{MAX_NEW_TOKENS} must be >= 1"),
        tf.debugging.assert_less_equal(
            prompt_len + max_new,
            g.max_length,
            message=f"prompt length + {MAX_NEW_TOKENS} exceeds the model's maximum length {g.max_length}",
        ),
    ]


def _trace_generate_slots(decoding, sampler):
    """``generate`` for ``positions="slot"`` (keras-hub's loop; the numpy twin is
    :func:`attnkit.generation.loop._decode_slots`): prefill the slots every prompt fills, then one slot per
    step, each row fed its own prompt until it ends and its chosen tokens after; ``output_ids`` holds each
    row's ``max_new_tokens`` tokens after its own prompt."""
    import tensorflow as tf

    g = decoding.spec
    kv = tf.TensorShape([None, g.num_heads, None, g.depth])

    @tf.function(input_signature=_signature(generate_inputs(g)), autograph=False)
    def generate(*args):
        ids, mask, max_new, eos = args[0], args[1], args[-2], args[-1]
        cross = enc_mask = None
        if g.seq2seq:
            enc_mask = args[3]
            cross = decoding.encode(args[2], enc_mask)
        lengths = tf.reduce_sum(tf.cast(mask, tf.int32), axis=1)
        with tf.control_dependencies(_request_checks(g, tf.shape(ids)[1], max_new)):
            start = tf.identity(tf.reduce_min(lengths))
        end = tf.reduce_max(lengths) + max_new  # slots start .. end - 1 are chosen in the loop
        prompt = tf.pad(ids, [[0, 0], [0, end - tf.shape(ids)[1]]])
        batch = tf.shape(ids)[0]

        def choose(slot, logits, done):
            nxt, next_done = sampler.next_token(logits, done, eos)
            generating = slot >= lengths
            token = tf.where(generating, nxt, prompt[:, slot])
            return token, tf.where(generating, next_done, done)

        logits, past = decoding.step(prompt[:, :start], None, None, cross, enc_mask)
        token, done = choose(start, logits[:, -1], tf.zeros([batch], tf.bool))

        def cond(slot, token, done, out, past):
            return tf.logical_and(slot < end, tf.logical_not(tf.reduce_all(done)))

        def body(slot, token, done, out, past):
            logits, present = decoding.step(token[:, None], None, past, cross, enc_mask)
            token, done = choose(slot, logits[:, -1], done)
            return slot + 1, token, done, tf.concat([out, token[:, None]], 1), present

        _, _, _, out, _ = tf.while_loop(
            cond,
            body,
            (start + 1, token, done, token[:, None], past),
            shape_invariants=(
                tf.TensorShape([]),
                tf.TensorShape([None]),
                tf.TensorShape([None]),
                tf.TensorShape([None, None]),
                [(kv, kv)] * g.num_layers,
            ),
        )
        out = tf.pad(out, [[0, 0], [0, end - start - tf.shape(out)[1]]], constant_values=eos)  # stopped early
        # out[:, j] is slot start + j; a row's new tokens start at its own length
        picks = (lengths - start)[:, None] + tf.range(max_new)[None, :]
        new = tf.gather(out, picks, batch_dims=1)
        return {OUTPUT_IDS: new, LENGTHS: _tf_lengths(new, eos)}

    generate.keras_model = decoding.model
    return generate


def _tf_lengths(out, eos):
    """Tokens up to and including the first ``eos`` per row (all of them when there is none);
    the numpy twin is :func:`attnkit.core.sampling.sequence_lengths`."""
    import tensorflow as tf

    hit = tf.equal(out, eos)
    first = tf.argmax(tf.cast(hit, tf.int32), axis=1, output_type=tf.int32)
    return tf.where(tf.reduce_any(hit, axis=1), first + 1, tf.shape(out)[1])


def step_export_spec(g: GenerationSpec, name: str, encoder: bool = False) -> ExportSpec:
    """An ExportSpec for the ONNX converter (names and dynamic axes of the step or encoder graph)."""
    inputs, outputs = (g.encoder_inputs(), g.encoder_outputs()) if encoder else (g.step_inputs(), g.step_outputs())
    max_len = g.max_length
    return ExportSpec(name, inputs, outputs, sequence=ShapeRange(1, min(128, max_len), max_len), max_sequence=max_len)
