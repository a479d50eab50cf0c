"""Attention of a traced decode step fused into OpenVINO's ``ScaledDotProductAttention``, the KV cache in the
layout OpenVINO's CPU plugin appends to in place.

Why: a keras-hub decode step reaches OpenVINO as keras-hub computes attention, an explicit
``softmax(q k^T * scale, where(mask))`` with the keys and values repeated by ``Tile`` for grouped-query
attention, and its cache concatenated in keras-hub's (batch, sequence, heads, depth) layout between two
Transposes. OpenVINO fuses none of it: neither its MOC transformations nor the CPU plugin recognise that
graph as attention (measured on llama3-124m with OpenVINO 2026.4: 12 Softmax, 0 ScaledDotProductAttention
after ``apply_moc_transformations``), so every step runs ~1000 small shape ops and a cache copy per layer.
The peers' step (optimum-intel's IR of the same weights) has one ``ScaledDotProductAttention`` per layer fed
by ``ReadValue -> Gather(beam_idx) -> Concat -> Unsqueeze -> Broadcast -> Reshape``, which the CPU plugin's
``StatefulSDPAFusion`` turns into one node that appends to the cache in place.

Written by hand because no library does it for a graph that did not come from PyTorch: OpenVINO's own
``SDPAFusion`` matches PyTorch's traced patterns only, optimum-intel builds its IR from a transformers model.
The rewrite here is five steps, all on the decode step's IR (before it is made stateful):

1. :func:`canonical_caches`: each ``present = Transpose(Concat(Transpose(past), new))`` becomes
   ``Concat(past, Transpose(new))`` on the sequence axis of (batch, heads, sequence, depth), the layout of
   the step's own inputs and outputs; what read the old concat reads a Transpose of the new one.
2. :func:`fuse_attention`: each ``Softmax`` whose input is a MatMul of the queries and the (repeated) cached
   keys, scaled by a constant, masked by ``where(mask, scores, very negative)`` or an additive bias, possibly
   with a bias added inside the scale (keras-hub Falcon's and Bloom's ALiBi, ``(q k^T + alibi) * c``), and
   whose output is multiplied by the (repeated) cached values (identity Slices between, keras-hub Gemma 4's,
   taken as layout), becomes
   ``ScaledDotProductAttention(q, repeat(keys), repeat(values), mask, scale)`` with the repeat written as
   OpenVINO's GQA pattern (``Unsqueeze -> Broadcast(bidirectional) -> Reshape``).
3. ``openvino_forms.canonical_rotary``: keras-hub's rotary embedding rotates half of each head as
   ``reshape(stack((-x2, x1), axis=-2), shape(x))`` (``RotaryEmbedding._apply_rotary_pos_emb``); the same
   values are ``concat((-x2, x1), axis=-1)`` with ``x1, x2 = VariadicSplit(x)``, the rotate-half form of the
   transformers models that OpenVINO's ``RoPEFusionGPTNEOX`` matches. Rewritten so, the CPU plugin compiles each
   query's and key's rotation into one ``RoPE`` node (llama3-124m: 24 ``RoPE``, 800 -> 620 compiled nodes a
   step; the peers' IR has them too).
4. ``openvino_forms.canonical_rms``: keras-hub's RMS norm computes
   ``x * (1 / sqrt(mean(x^2, axis=last) + eps) * scale)`` with the axis as a positive number; OpenVINO's
   ``RMSFusion`` matches ``scale * (x * 1 / sqrt(mean(x^2, axis=-1) + eps))`` only. Reassociated so (the same
   product in another order, equal within fp32's rounding, proven below), the CPU plugin compiles each norm
   into one ``RMS`` node (llama3-124m: 25, 620 -> 470 compiled nodes a step).
5. ``openvino_forms.rotary_after_transpose``: keras-hub rotates queries and keys in (batch, sequence, heads,
   depth) and transposes them for attention afterwards; the rotation commutes with that permutation, so the
   Transpose is moved before it, where OpenVINO folds it into the ``RoPE`` node (``input_trans0213``) as it
   does for the peers' IR (llama3-124m: 48 -> 24 compiled Transposes, 383 -> 361 nodes, logits bit-identical,
   a step 15.85 -> 14.42 ms; BENCHMARKS.md).

Anything that does not match is left as it was. The caller proves the rewrite: :func:`agrees` compiles both
graphs and compares every output on seeded random inputs (a prefill and a decode step), and the exporter keeps
the unfused graph if they differ.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .openvino_forms import (
    BSHD_BHSD,
    bool_source,
    canonical_rms,
    canonical_rotary,
    constant_values,
    identity_slice,
    is_perm,
    rank_of,
    rotary_after_transpose,
    unwhere,
)

#: ops between a cached tensor and the MatMul that reads it that only repeat heads or move axes
_LAYOUT = {"Transpose", "Reshape", "Tile", "Unsqueeze", "Squeeze", "Broadcast"}


@dataclass
class Fused:
    """What :func:`fuse_attention` did: ``caches`` presents in (batch, heads, sequence, depth) concat form,
    ``attention`` Softmax blocks fused, ``rotary`` and ``rms`` rotations and norms rewritten (steps 3 and 4),
    ``rotary_transposed`` rotations moved behind their Transpose (step 5), ``left`` Softmax ops not fused with why
    (first reason per kind)."""

    caches: int = 0
    attention: int = 0
    softmax: int = 0
    rotary: int = 0
    rms: int = 0
    rotary_transposed: int = 0
    left: dict = field(default_factory=dict)

    def as_record(self) -> dict:
        return {"fused_attention": self.attention, "softmax": self.softmax, "caches_bhsd": self.caches,
                "rotary_rewritten": self.rotary, "rms_rewritten": self.rms, "rotary_transposed": self.rotary_transposed,
                **({"not_fused": self.left} if self.left else {})}  # fmt: skip


def _swapped(output):
    """The input of ``output``'s op if that op swaps axes 1 and 2 of a rank-4 tensor: a Transpose by
    ``BSHD_BHSD``, or a Reshape that does the same because the axis it moves has size 1 (OpenVINO writes a
    single key/value head's Transpose so); else None."""
    node = output.get_node()
    if is_perm(output, BSHD_BHSD):
        return node.input_value(0)
    if node.get_type_name() != "Reshape":
        return None
    source = node.input_value(0)
    a, b = source.get_partial_shape(), output.get_partial_shape()
    if a.rank.is_dynamic or b.rank.is_dynamic or a.rank.get_length() != 4 or b.rank.get_length() != 4:
        return None
    ones = [d.is_static and d.get_length() == 1 for d in (a[1], a[2], b[1], b[2])]
    depth = a[3].is_static and b[3].is_static and a[3].get_length() == b[3].get_length()
    return source if depth and ((ones[1] and ones[2]) or (ones[0] and ones[3])) else None


def canonical_caches(model, pairs: dict[str, str]) -> dict:
    """Step 1 (module docstring), in place. ``pairs``: past input name -> present output name. Returns the
    cached tensors the attention may read, ``{node name: (batch, heads, sequence, depth) concat output}``:
    each rewritten concat under the name of the Transpose that now stands for the old one, and each present
    that already was a ``Concat(past, new)`` on axis 2 under its own name."""
    import numpy as np
    from openvino import opset13

    results = {}
    for result in model.get_results():
        for name in result.output(0).get_names() | result.input_value(0).get_names():
            results[name] = result
    out = {}
    for past_name, present_name in pairs.items():
        result = results.get(present_name)
        if result is None:
            continue
        source = result.input_value(0)
        node = source.get_node()
        if node.get_type_name() == "Concat" and node.get_attributes().get("axis") in (2, -2):
            out[node.get_friendly_name()] = source
            continue
        inner = _swapped(source)
        if inner is None:
            continue
        concat = inner.get_node()
        if concat.get_type_name() != "Concat" or len(concat.inputs()) != 2:
            continue
        if concat.get_attributes().get("axis") not in (1, -3):
            continue
        past, new = _swapped(concat.input_value(0)), concat.input_value(1)
        if past is None or past_name not in past.get_names():
            continue
        new_bhsd = opset13.transpose(new, opset13.constant(np.array(BSHD_BHSD, np.int64)))
        fused = opset13.concat([past, new_bhsd.output(0)], 2)
        fused.set_friendly_name(concat.get_friendly_name() + "/bhsd")
        stand_in = opset13.transpose(fused, opset13.constant(np.array(BSHD_BHSD, np.int64)))
        stand_in.set_friendly_name(concat.get_friendly_name() + "/bshd")
        for target in list(concat.output(0).get_target_inputs()):
            if target.get_node() is not node:
                target.replace_source_output(stand_in.output(0))
        names = source.get_names()
        source.replace(fused.output(0))  # the present, and whatever else read it (GPT-2's attention does)
        fused.output(0).get_tensor().add_names(names)
        out[stand_in.get_friendly_name()] = out[fused.get_friendly_name()] = fused.output(0)
    model.validate_nodes_and_infer_types()
    return out


def _cached(output, caches: dict):
    """The cache concat that ``output`` repeats or permutes (through layout ops only), else None."""
    seen = 0
    while seen < 12:
        node = output.get_node()
        name = node.get_friendly_name()
        if name in caches:
            return caches[name]
        if node.get_type_name() not in _LAYOUT and not identity_slice(node):
            return None
        output = node.input_value(0)
        seen += 1
    return None


def _scores(output, bias_allowed: bool = True):
    """``(qk MatMul node, scale, transposed, bias, bias_scale)`` of the scores ``output``: a MatMul, possibly scaled by a
    constant (``* c``, ``/ c``), possibly with its last two axes swapped (``transposed``: tf2onnx computes
    Keras's ``MultiHeadAttention`` einsum as ``(k q^T)^T``), and possibly plus one additive bias that is not
    itself scores (keras-hub Falcon's and Bloom's ALiBi, added before the scale), in any order; else None.
    ``bias`` is that tensor (or None) and ``bias_scale`` the scale applied after it: SDPA adds its mask after
    scaling, so the mask it needs is ``bias_scale * bias``. Builds nothing (callers probe with it)."""
    scale, transposed, bias, bias_scale = 1.0, False, None, 1.0
    for _ in range(5):
        node = output.get_node()
        kind = node.get_type_name()
        if kind == "MatMul":
            return node, scale, transposed, bias, bias_scale
        if kind == "Transpose" and is_perm(output, [0, 1, 3, 2]) and not transposed and bias is None:
            transposed, output = True, node.input_value(0)
            continue
        if kind == "Add" and bias_allowed and bias is None and not transposed:
            a, b = node.input_value(0), node.input_value(1)
            sides = [(x, y) for x, y in ((a, b), (b, a)) if _scores(x, False) and not _scores(y, False)]
            if len(sides) != 1:
                return None
            output, bias = sides[0]
            bias_scale = scale  # output = scale * (scores + bias): the mask SDPA adds is scale * bias
            continue
        if kind not in ("Multiply", "Divide"):
            return None
        for i in (0, 1) if kind == "Multiply" else (0,):
            value = constant_values(node.input_value(1 - i))
            if value is not None and value.size == 1:
                c = float(value.ravel()[0])
                scale *= c if kind == "Multiply" else 1.0 / c
                output = node.input_value(i)
                break
        else:
            return None
    return None


def _swap_last(output):
    """``output`` with its last two axes swapped."""
    import numpy as np
    from openvino import opset13

    return opset13.transpose(output, opset13.constant(np.array([0, 1, 3, 2], np.int64))).output(0)


def _query_and_keys(qk, transposed: bool):
    """The queries (batch, heads, new, depth) and the keys' side of ``qk``, whose product (or its transpose,
    ``transposed``) is the scores: ``op(x) @ op(y)`` with ``op`` the MatMul's own transposes."""
    attrs = qk.get_attributes()
    x, y = qk.input_value(0), qk.input_value(1)
    if not transposed:  # scores = op(x) @ op(y): the queries are op(x)
        return (_swap_last(x) if attrs.get("transpose_a") else x), y
    # scores = (op(x) @ op(y))^T = op(y)^T @ op(x)^T: the queries are op(y)^T
    return (y if attrs.get("transpose_b") else _swap_last(y)), x


def _masked(output):
    """``(scores output, mask output or None)`` of the Softmax's input: TensorFlow's ``where(m, s, neg)`` as
    tf2onnx lowers it (``Convert(m) * s + Convert(not m) * neg``), an additive bias ``s + b``, or plain ``s``."""
    node = output.get_node()
    if node.get_type_name() != "Add":
        return output, None
    a, b = node.input_value(0), node.input_value(1)
    for left, right in ((a, b), (b, a)):
        if left.get_node().get_type_name() == "Multiply":
            mul = left.get_node()
            for i in (0, 1):
                mask = bool_source(mul.input_value(i))
                if mask is None or right.get_node().get_type_name() != "Multiply":
                    continue
                other = right.get_node()
                nots = [bool_source(other.input_value(j)) for j in (0, 1)]
                negs = [constant_values(other.input_value(j)) for j in (0, 1)]
                for j in (0, 1):
                    n = nots[j]
                    if n is None or n.get_node().get_type_name() != "LogicalNot":
                        continue
                    if n.get_node().input_value(0) != mask or negs[1 - j] is None or negs[1 - j].max() > -1e4:
                        continue
                    return mul.input_value(1 - i), mask
    for left, right in ((a, b), (b, a)):
        if _scores(left) is not None and _scores(right) is None:
            return left, right
    return output, None


def _repeat_heads(kv, heads: int):
    """``kv`` (batch, kv_heads, seq, depth) with each head repeated ``heads // kv_heads`` times, adjacent
    (grouped-query attention), as the GQA pattern OpenVINO's CPU plugin fuses: Unsqueeze -> Broadcast
    (bidirectional) -> Reshape. ``kv`` itself when the counts agree."""
    import numpy as np
    from openvino import opset3, opset13

    kv_heads = kv.get_partial_shape()[1].get_length()
    if kv_heads == heads:
        return kv
    rep = heads // kv_heads
    depth = kv.get_partial_shape()[3].get_length()
    expanded = opset13.unsqueeze(kv, opset13.constant(np.array([2], np.int64)))
    tiled = opset3.broadcast(expanded, opset13.constant(np.array([1, 1, rep, 1, 1], np.int64)),
                             broadcast_spec="BIDIRECTIONAL")  # fmt: skip
    return opset13.reshape(tiled, opset13.constant(np.array([0, heads, -1, depth], np.int64)), True).output(0)


def _fuse_one(softmax, caches: dict):
    """Replace one Softmax block with ScaledDotProductAttention; returns None, or why not."""
    import numpy as np
    from openvino import opset13

    if rank_of(softmax.get_output_partial_shape(0)) != 4:
        return "not rank 4"
    if softmax.get_attributes().get("axis") not in (-1, 3):
        return "softmax not over the last axis"
    scores, mask = _masked(softmax.input_value(0))
    probs = unwhere(softmax.output(0), mask)
    targets = list(probs.get_target_inputs())
    if len(targets) != 1 or targets[0].get_node().get_type_name() != "MatMul" or targets[0].get_index() != 0:
        return "its output is not only the left side of one MatMul"
    pv = targets[0].get_node()
    if any(pv.get_attributes().get(k) for k in ("transpose_a", "transpose_b")):
        return "probabilities x values MatMul transposes"
    found = _scores(scores)
    if found is None:
        return "its input is not a (scaled) MatMul"
    qk, scale, transposed, bias, bias_scale = found
    query, key_side = _query_and_keys(qk, transposed)
    keys = _cached(key_side, caches)
    values = _cached(pv.input_value(1), caches)
    if keys is None or values is None:
        return "keys or values are not the step's cache"
    heads = query.get_partial_shape()[1]
    kv_heads = keys.get_partial_shape()[1]
    if not (heads.is_static and kv_heads.is_static) or heads.get_length() % kv_heads.get_length():
        return "head counts not static multiples"
    dtype = query.get_element_type()
    scale_c = opset13.constant(np.array(scale, dtype.to_dtype()))
    if bias is not None:  # SDPA takes one mask: the bias, scaled, where the mask allows (else the lowest float)
        bias = opset13.multiply(bias, opset13.constant(np.array(bias_scale, dtype.to_dtype()))).output(0)
        if mask is None:
            mask = bias
        elif mask.get_element_type().is_real():
            mask = opset13.add(mask, bias).output(0)
        else:
            lowest = opset13.constant(np.array(np.finfo(dtype.to_dtype()).min, dtype.to_dtype()))
            mask = opset13.select(mask, bias, lowest).output(0)
    if mask is None:
        mask = opset13.constant(np.array(0, dtype.to_dtype())).output(0)
    sdpa = opset13.scaled_dot_product_attention(
        query, _repeat_heads(keys, heads.get_length()), _repeat_heads(values, heads.get_length()), mask, scale_c
    )
    sdpa.set_friendly_name(softmax.get_friendly_name() + "/sdpa")
    pv.output(0).replace(sdpa.output(0))
    return None


def fuse_attention(model, pairs: dict[str, str]) -> Fused:
    """The five steps of the module docstring on ``model`` (an ``ov.Model`` of a decode step), in place."""
    caches = canonical_caches(model, pairs)
    done = Fused(caches=len({v.get_node().get_friendly_name() for v in caches.values()}))
    softmaxes = [op for op in model.get_ordered_ops() if op.get_type_name() == "Softmax"]
    done.softmax = len(softmaxes)
    for softmax in softmaxes:
        why = _fuse_one(softmax, caches)
        if why is None:
            done.attention += 1
        else:
            done.left.setdefault(why, softmax.get_friendly_name())
    done.rotary = canonical_rotary(model)
    done.rms = canonical_rms(model)
    done.rotary_transposed = rotary_after_transpose(model)
    model.validate_nodes_and_infer_types()
    return done


def _feeds(model, pairs: dict[str, str], ids: str, mask: str | None, batch: int, past: int, new: int, rng) -> dict:
    """Seeded random inputs of one step: tokens inside the vocabulary, a cache of ``past`` slots, a mask of
    ones over past and new tokens (for a step that takes one)."""
    import numpy as np

    vocab = model.output(0).get_partial_shape()[-1]
    high = vocab.get_length() if vocab.is_static else 1000
    out = {}
    for port in model.inputs:
        name = port.get_any_name()
        dtype = port.get_element_type().to_dtype()
        shape = port.get_partial_shape()
        if name in pairs:
            dims = [batch, shape[1].get_length(), past, shape[3].get_length()]
            out[name] = rng.standard_normal(dims).astype(dtype)
        elif name == ids:
            out[name] = rng.integers(1, high, (batch, new)).astype(dtype)
        elif name == mask:
            out[name] = np.ones((batch, past + new), dtype)
        else:
            return {}  # an input this check cannot make up (a seq2seq cross cache): not compared, not fused
    return out


def agrees(original, fused, pairs: dict[str, str], ids: str, mask: str | None) -> str | None:
    """None if ``fused`` gives ``original``'s outputs (fp32's element-wise tolerance, f32 forced) on seeded
    random inputs of a prefill (batch 2, 5 new tokens) and a decode step (batch 2, 7 cached, 1 new); else
    what differed."""
    import numpy as np
    import openvino as ov

    from ..core.compare import DEFAULT_TOLERANCES
    from .openvino import compile_with_fallback

    tol = DEFAULT_TOLERANCES["fp32"]
    core = ov.Core()
    config = {"INFERENCE_PRECISION_HINT": "f32"}
    a, _ = compile_with_fallback(lambda c: core.compile_model(original, "CPU", c), config)
    b, _ = compile_with_fallback(lambda c: core.compile_model(fused, "CPU", c), config)
    rng = np.random.default_rng(0)
    for batch, past, new in ((2, 0, 5), (2, 7, 1)):
        feeds = _feeds(original, pairs, ids, mask, batch, past, new, rng)
        if not feeds:
            return "inputs other than tokens, mask and cache"
        got_a, got_b = a(feeds), b(feeds)
        for port in a.outputs:
            name = port.get_any_name()
            x, y = got_a[port], got_b[b.output(name)]
            if x.shape != y.shape or not np.all(np.abs(x - y) <= tol.atol + tol.rtol * np.abs(x)):
                return f"{name} differs (batch {batch}, past {past}, new {new})"
    return None


def fuse_ir(xml, pairs: dict[str, str], ids: str, mask: str | None) -> dict:
    """Fuse the decode step IR at ``xml`` (:func:`fuse_attention`) and save it over itself if the rewrite
    changed it and :func:`agrees`; returns what was done, for the manifest (``fused_attention``: how many
    Softmax blocks became ScaledDotProductAttention in the written IR; ``fusion_refused``: why the unfused
    graph was kept)."""
    import openvino as ov

    core = ov.Core()
    original = core.read_model(str(xml))
    model = core.read_model(str(xml))
    done = fuse_attention(model, pairs)
    record = done.as_record()
    if not done.attention:  # nothing written: the caches' layout is not reported either
        return {"fused_attention": 0, "softmax": done.softmax, **({"not_fused": done.left} if done.left else {})}
    why = agrees(original, model, pairs, ids, mask)
    if why:
        return {"fused_attention": 0, "softmax": done.softmax, "fusion_refused": why}
    tmp = xml.with_name(xml.stem + ".fused.xml")
    try:
        ov.save_model(model, str(tmp), compress_to_fp16=False)
        del model, original
        tmp.with_suffix(".bin").replace(xml.with_suffix(".bin"))
        tmp.replace(xml)
    finally:
        for f in (tmp, tmp.with_suffix(".bin")):
            f.unlink(missing_ok=True)
    return record
