"""A keras-hub step's sliding attention window in the form OpenVINO's paged-attention rewrite reads it.

``SDPAToPagedAttention`` (what GenAI's ``ContinuousBatchingPipeline`` and the default backend of its
``LLMPipeline`` on CPU run) drops each attention's mask and gives the PagedAttention op a ``sliding_window`` of
its own, which it sets only where the mask matches one of two transformers graphs (``state_management_pattern.cpp``,
OpenVINO 2026: Phi-3's and GPT-OSS's); any other mask, keras-hub's band included, gets 0, full attention, and a
windowed model's tokens past the window would differ. Measured before this module: Mistral and Gemma 4 refused
paged attention for that reason (mistral-160m on the AMX Xeon: attnkit's best row 0.89x OpenVINO GenAI's paged
default on optimum-intel's IR).

:func:`window_for_paged_attention` ANDs each windowed attention's mask with the window written the GPT-OSS way,
``key slot > query slot - window`` (``Add(q, -window)``, ``Greater``, four ``BitwiseAnd``, ``Broadcast``,
``Select``, ``Slice``): the rewrite reads ``-offset`` as the op's window, and without the rewrite the term
repeats what keras-hub's mask already holds (the same band, ``|q - k| < window``), so the stateful step
answers as before. Written by hand: OpenVINO has no pass that gives a mask's window to paged attention, and
optimum-intel gets it by tracing transformers' own mask code.
"""

from __future__ import annotations

#: why a step whose sliding windows could not be written for paged attention is refused it: the rewrite would drop
#: the mask that holds them, and tokens past a window would differ
WINDOW_REFUSED = "sliding-window attention the paged-attention rewrite cannot be given: {why}"

#: PagedAttentionExtension's input that holds the window (OpenVINO 2026: q, k, v, key and value cache, past_lens,
#: subsequence_begins, block_indices, block_indices_begins, scale, sliding_window, ...)
PA_SLIDING_WINDOW = 10


def narrow_windows(windows: list | None, max_length: int) -> list | None:
    """``windows`` (one per attention layer) with those a sequence of ``max_length`` never reaches as None (Qwen
    3's 32768 in a 2048-token model: full attention within it); None when none is left."""
    narrow = [w if w and w < max_length else None for w in windows or []]
    return narrow if any(narrow) else None


def window_for_paged_attention(model, windows: list) -> str | None:
    """In place: each ScaledDotProductAttention of ``model`` (a stateful step, in graph order, which is layer
    order: each layer reads the one before it) whose entry in ``windows`` (one per attention layer, tokens, None
    for full attention) is set gets the window in the GPT-OSS form OpenVINO's rewrite takes. None when done,
    else why not, ``model`` untouched."""
    sdpas = [op for op in model.get_ordered_ops() if op.get_type_name() == "ScaledDotProductAttention"]
    if len(sdpas) != len(windows):
        return (
            f"{len(sdpas)} fused attention ops for {len(windows)} attention layers: which has which window is unknown"
        )
    masks = [sdpa.input_value(3) if sdpa.get_input_size() > 3 else None for sdpa, w in zip(sdpas, windows) if w]
    if any(mask is None or mask.get_partial_shape().rank.get_length() < 2 for mask in masks):
        return "a windowed attention has no (query, key) mask"
    for sdpa, window in zip(sdpas, windows):
        if window:
            sdpa.input(3).replace_source_output(_windowed_mask(sdpa, int(window)))
    model.validate_nodes_and_infer_types()
    return None


def _windowed_mask(sdpa, window: int):
    """The mask of ``sdpa`` (boolean: allowed; real: added to the scores) where the key's slot is within
    ``window`` of the query's, as an additive mask of the query's type in GPT-OSS's graph form. The slots: the
    query's ``new`` tokens are the last of the keys' ``total`` (a decode step's keys are the cache and the new
    tokens), so query ``i`` is slot ``total - new + i`` and key ``j`` slot ``j``; both lengths are read off the mask's
    shape (its last two axes), not the keys': another reader of the cache's concatenation keeps OpenVINO's CPU
    plugin from fusing the cache into the attention (``ScaledDotProductAttentionWithKVCache``; measured: none of
    mistral-160m's 8 fused, its stateful step at 0.79x the tokens/s, two runs on one day, BENCHMARKS.md)."""
    import numpy as np
    from openvino import opset13

    dtype = sdpa.get_input_element_type(0)
    lowest = opset13.constant(np.array(np.finfo(dtype.to_dtype()).min, dtype.to_dtype()))
    zero = opset13.constant(np.array(0, dtype.to_dtype()))

    shape = opset13.shape_of(sdpa.input_value(3), "i32")
    total, new = (
        opset13.gather(shape, opset13.constant(np.int32(axis)), opset13.constant(np.int32(0))) for axis in (-1, -2)
    )
    one = opset13.constant(np.int32(1))
    queries = opset13.unsqueeze(opset13.range(opset13.subtract(total, new), total, one, "i32"), [1])  # (new, 1)
    keys = opset13.unsqueeze(opset13.range(opset13.constant(np.int32(0)), total, one, "i32"), [0])  # (1, total)
    within = opset13.greater(keys, opset13.add(queries, opset13.constant(np.int32(-window))))
    causal = opset13.less_equal(keys, queries)
    # GPT-OSS's chain: its mask's four terms (causal, window, padding, ...) ANDed in this order; here the causal
    # term fills the places the pattern leaves open (repeating it changes nothing)
    chain = opset13.bitwise_and(causal, within)
    chain = opset13.bitwise_and(chain, causal)
    chain = opset13.bitwise_and(causal, chain)
    chain = opset13.bitwise_and(chain, causal)
    chain = opset13.broadcast(chain, opset13.shape_of(chain))
    mask = sdpa.input_value(3)
    if not mask.get_element_type().is_real():
        mask = opset13.select(mask, zero, lowest).output(0)
    elif mask.get_element_type() != dtype:
        mask = opset13.convert(mask, dtype).output(0)
    masked = opset13.select(chain, mask, lowest)
    whole = opset13.slice(masked, np.array([0], np.int64), np.array([np.iinfo(np.int64).max], np.int64),
                          np.array([1], np.int64), np.array([-1], np.int64))  # fmt: skip
    return whole.output(0)


def paged_windows(model) -> list:
    """The sliding window of each PagedAttention op of ``model`` (after OpenVINO's rewrite), in graph order,
    tokens; 0 for full attention, None where it is not a constant."""
    from openvino import Model
    from openvino.passes import ConstantFolding, Manager

    ops = [op for op in model.get_ordered_ops() if op.get_type_name() == "PagedAttentionExtension"]
    probe = Model([op.input_value(PA_SLIDING_WINDOW) for op in ops], [], "windows")
    manager = Manager()
    manager.register_pass(ConstantFolding())
    manager.run_passes(probe)
    out = []
    for result in probe.get_results():
        source = result.input_value(0).get_node()
        out.append(int(source.get_vector()[0]) if source.get_type_name() == "Constant" else None)
    return out
