"""The rotary embedding and the RMS norm of a traced keras-hub decode step, rewritten into the forms OpenVINO's
own fusions recognise (steps 3 and 4 of :mod:`attnkit.exporters.openvino_attention`, which proves and writes
them).

Why by hand: keras-hub computes both as its Keras code says, and OpenVINO's ``RoPEFusion*`` and ``RMSFusion``
passes match the graphs the PyTorch frontend makes of transformers' code. The values are the same; only the
form differs:

- rotate-half: keras-hub ``reshape(stack((-x2, x1), axis=-2), shape(x))`` (``RotaryEmbedding``); transformers
  ``concat((-x2, x1), axis=-1)``, which ``RoPEFusionGPTNEOX`` turns, with ``x * cos + rotated * sin``, into one
  ``RoPE`` node;
- RMS norm: keras-hub ``x * (1 / sqrt(mean(x^2, axis=2) + eps) * scale)`` (``LlamaLayerNorm``; Gemma's
  ``RMSNormalization`` squares as ``x * x``, its scale ``1 + scale`` folded to a constant); the form
  ``RMSFusion`` matches, ``scale * (x * 1 / sqrt(mean(x^2, axis=-1) + eps))``, becomes one ``RMS`` node.

Each function rewrites an ``ov.Model`` in place and returns how many places it rewrote; anything that does
not match is left as it was. At the end, the readers of the attention's own forms that the fusion matches
(a where as tf2onnx lowers it, an identity Slice): they rewrite nothing.
"""

from __future__ import annotations

#: the permutation between (batch, sequence, heads, depth) and (batch, heads, sequence, depth); its own inverse
BSHD_BHSD = [0, 2, 1, 3]


def constant_values(output):
    """The values of a Constant output, else None."""
    node = output.get_node()
    if node.get_type_name() != "Constant":
        return None
    return node.get_data()


def is_perm(output, perm) -> bool:
    """True if ``output`` is a Transpose by the constant permutation ``perm``."""
    node = output.get_node()
    if node.get_type_name() != "Transpose":
        return False
    order = constant_values(node.input_value(1))
    return order is not None and [int(v) for v in order.ravel()] == perm


def rank_of(shape) -> int:
    """The rank of a partial shape, -1 where it is dynamic (what no pattern here matches)."""
    return shape.rank.get_length() if shape.rank.is_static else -1


def _unsqueezed(output, axis: int):
    """The input of ``output``'s op if that op inserts one axis at ``axis`` of a rank-4 tensor (an Unsqueeze,
    or a Reshape whose output has size 1 there); else None."""
    import numpy as np

    node = output.get_node()
    src = node.input_value(0) if node.get_input_size() else None
    if src is None or rank_of(src.get_partial_shape()) != 4:
        return None
    if node.get_type_name() == "Unsqueeze":
        axes = constant_values(node.input_value(1))
        return src if axes is not None and [int(a) % 5 for a in np.ravel(axes)] == [axis] else None
    if node.get_type_name() == "Reshape":
        out = node.get_output_partial_shape(0)
        return src if rank_of(out) == 5 and out[axis].is_static and out[axis].get_length() == 1 else None
    return None


def _halves(negated, first):
    """``x`` if ``negated`` is minus the second half of ``x`` (a Negative, or a Multiply by -1) and ``first`` its
    first half, both from one Split (or an even VariadicSplit) of a rank-4 ``x`` on its last axis; else None."""
    import numpy as np

    neg = negated.get_node()
    if neg.get_type_name() == "Multiply":
        minus = constant_values(neg.input_value(1))
        if minus is None or minus.size != 1 or float(np.ravel(minus)[0]) != -1.0:
            return None
    elif neg.get_type_name() != "Negative":
        return None
    split = neg.input_value(0).get_node()
    if split.get_type_name() not in ("Split", "VariadicSplit") or split.get_output_size() != 2:
        return None
    if neg.input_value(0) != split.output(1) or first != split.output(0):
        return None
    x = split.input_value(0)
    shape, axis = x.get_partial_shape(), constant_values(split.input_value(1))
    if rank_of(shape) != 4 or axis is None or int(np.ravel(axis)[0]) % 4 != 3 or not shape[3].is_static:
        return None
    if split.get_type_name() == "VariadicSplit":
        lengths = constant_values(split.input_value(2))
        if lengths is None or [int(v) for v in np.ravel(lengths)] != [shape[3].get_length() // 2] * 2:
            return None
    return x


def canonical_rotary(model) -> int:
    """In place: every ``Reshape(Concat(Unsqueeze(-x2, 3), Unsqueeze(x1, 3)))``
    back to rank 4 with ``x``'s last dimension becomes ``Concat(-x2, x1, axis=-1)`` over a ``VariadicSplit`` of
    ``x``; returns how many. (Why the same values: stacking two halves of ``h`` on a new axis before the last
    and merging the two axes lays out, per row, the ``h`` values of ``-x2`` then the ``h`` of ``x1``.)"""
    done = 0
    for node in model.get_ordered_ops():
        if node.get_type_name() != "Reshape":
            continue
        concat = node.input_value(0).get_node()
        if concat.get_type_name() != "Concat" or concat.get_input_size() != 2:
            continue
        if rank_of(concat.get_output_partial_shape(0)) != 5 or concat.get_axis() % 5 != 3:
            continue
        negated, first = (_unsqueezed(concat.input_value(i), 3) for i in range(2))
        x = _halves(negated, first) if negated is not None and first is not None else None
        out = node.get_output_partial_shape(0)
        if x is None or rank_of(out) != 4 or not out[3].is_static or out[3] != x.get_partial_shape()[3]:
            continue
        node.output(0).replace(_rotate_half(x))
        done += 1
    return done


def _rotate_half(x):
    """``concat(-x2, x1)`` over a ``VariadicSplit`` of rank-4 ``x``'s last axis into halves: the rotate-half form
    of transformers, which ``RoPEFusionGPTNEOX`` matches."""
    import numpy as np
    from openvino import opset13

    half = x.get_partial_shape()[3].get_length() // 2
    split = opset13.variadic_split(x, opset13.constant(np.int64(3)), opset13.constant(np.array([half, half], np.int64)))
    minus = opset13.multiply(split.output(1), opset13.constant(np.array(-1.0, x.get_element_type().to_dtype())))
    return opset13.concat([minus.output(0), split.output(0)], -1).output(0)


def _one_over_root_mean_square(output, x):
    """``eps`` if ``output`` is ``1 / sqrt(ReduceMean(x ** 2, last axis) + eps)`` (or ``(...) ** -0.5``) with a
    constant ``eps``; else None."""
    import numpy as np

    div = output.get_node()
    if div.get_type_name() == "Power":  # keras-hub Gemma 4: ``power(mean + eps, -0.5)``
        half = constant_values(div.input_value(1))
        if half is None or half.size != 1 or float(np.ravel(half)[0]) != -0.5:
            return None
        add = div.input_value(0).get_node()
    else:
        one = constant_values(div.input_value(0)) if div.get_type_name() == "Divide" else None
        if one is None or one.size != 1 or float(np.ravel(one)[0]) != 1.0:
            return None
        sqrt = div.input_value(1).get_node()
        add = sqrt.input_value(0).get_node() if sqrt.get_type_name() == "Sqrt" else None
    if add is None or add.get_type_name() != "Add":
        return None
    for i in (0, 1):
        mean, eps = add.input_value(i).get_node(), add.input_value(1 - i)
        if mean.get_type_name() != "ReduceMean" or constant_values(eps) is None or constant_values(eps).size != 1:
            continue
        if not mean.get_attributes().get("keep_dims"):  # the rewrite keeps the reduced axis
            return None
        axes, rank = constant_values(mean.input_value(1)), rank_of(x.get_partial_shape())
        if not _squares(mean.input_value(0).get_node(), x) or axes is None or rank < 0:
            return None
        return eps if [int(a) % rank for a in np.ravel(axes)] == [rank - 1] else None
    return None


def _squares(node, x) -> bool:
    """True if ``node`` is ``x ** 2`` (a Power by 2, or ``x * x`` as tf2onnx writes Keras's ``square``: Gemma)."""
    import numpy as np

    if node.get_type_name() == "Multiply":
        return node.input_value(0) == x and node.input_value(1) == x
    two = constant_values(node.input_value(1)) if node.get_type_name() == "Power" else None
    return two is not None and two.size == 1 and float(np.ravel(two)[0]) == 2.0 and node.input_value(0) == x


def canonical_rms(model) -> int:
    """In place: every ``x * (r * scale)`` and ``(x * r) * scale`` with ``r`` = ``1 / sqrt(mean(x^2) + eps)`` or
    ``(mean(x^2) + eps) ** -0.5`` (scale a constant, ``x^2`` a Power or ``x * x``; keras-hub's Llama, Gemma and
    Gemma 4 forms) becomes ``scale * (x * 1 / sqrt(mean(x ** 2, axis=-1) + eps))``; returns how many."""
    import numpy as np
    from openvino import opset13

    def canonical(x, eps, scale):
        dtype = x.get_element_type().to_dtype()
        square = opset13.power(x, opset13.constant(np.array(2.0, dtype)))
        square_mean = opset13.reduce_mean(square, opset13.constant(np.array([-1], np.int64)), True)
        root = opset13.sqrt(opset13.add(square_mean, eps))
        normed = opset13.multiply(x, opset13.divide(opset13.constant(np.array(1.0, dtype)), root))
        return opset13.multiply(scale, normed).output(0)

    def match(mul):
        """``(x, eps, scale)`` of one of the two forms at ``mul``, else None."""
        for i in (0, 1):
            other = mul.input_value(1 - i)
            node = other.get_node()
            if node.get_type_name() != "Multiply":
                continue
            for j in (0, 1):
                if constant_values(node.input_value(1 - j)) is not None:  # x * (r * scale)
                    eps = _one_over_root_mean_square(node.input_value(j), mul.input_value(i))
                    if eps is not None:
                        return mul.input_value(i), eps, node.input_value(1 - j)
                if constant_values(mul.input_value(i)) is not None:  # (x * r) * scale
                    eps = _one_over_root_mean_square(node.input_value(1 - j), node.input_value(j))
                    if eps is not None:
                        return node.input_value(j), eps, mul.input_value(i)
        return None

    done = 0
    for mul in model.get_ordered_ops():
        found = match(mul) if mul.get_type_name() == "Multiply" else None
        if found is not None:
            mul.output(0).replace(canonical(*found))
            done += 1
    return done


def _rotary_parts(add):
    """``(x, cos, sin)`` if ``add`` is ``x * cos + concat(-x2, x1) * sin`` in rotate-half form on a rank-4
    ``x`` (the form :func:`canonical_rotary` writes); else None."""
    if add.get_type_name() != "Add":
        return None
    for i in (0, 1):
        direct, rotated = add.input_value(i).get_node(), add.input_value(1 - i).get_node()
        if direct.get_type_name() != "Multiply" or rotated.get_type_name() != "Multiply":
            continue
        for j in (0, 1):
            concat, sin = rotated.input_value(j).get_node(), rotated.input_value(1 - j)
            if concat.get_type_name() != "Concat" or concat.get_input_size() != 2 or concat.get_axis() % 4 != 3:
                continue
            x = _halves(concat.input_value(0), concat.input_value(1))
            if x is None:
                continue
            for k in (0, 1):
                if direct.input_value(k) == x and rank_of(direct.input_value(1 - k).get_partial_shape()) == 4:
                    cos = direct.input_value(1 - k)
                    if rank_of(sin.get_partial_shape()) == 4:
                        return x, cos, sin
    return None


def rotary_after_transpose(model) -> int:
    """In place: every ``Transpose(rotary(x, cos, sin), [0, 2, 1, 3])`` becomes ``rotary(Transpose(x), ...)``
    with ``cos`` and ``sin`` transposed alike (once each, shared by the layers that read them); returns how many.

    Why: keras-hub rotates queries and keys in (batch, sequence, heads, depth) and then transposes them for
    attention; transformers transposes first. OpenVINO's RoPE fusion folds a Transpose *before* the rotation into
    its ``RoPE`` node (``input_trans0213``) but keeps one after it as a node of its own: two Transposes a layer a
    step in keras-hub's graph, none in the peers' (llama3-124m: 48 against 25 compiled Transposes). The rotation
    is element-wise over the last axis, which the permutation leaves in place, so it commutes with it: the same
    values in another order of operations."""
    import numpy as np
    from openvino import opset13

    done, moved = 0, {}

    def transposed(output):
        key = (output.get_node().get_name(), output.get_index())  # the unique name: friendly names may repeat
        if key not in moved:
            moved[key] = opset13.transpose(output, opset13.constant(np.array(BSHD_BHSD, np.int64))).output(0)
        return moved[key]

    for node in model.get_ordered_ops():
        parts = _rotary_parts(node.input_value(0).get_node()) if is_perm(node.output(0), BSHD_BHSD) else None
        if parts is None:
            continue
        x, cos, sin = parts
        xt = transposed(x)
        out = opset13.add(opset13.multiply(xt, transposed(cos)), opset13.multiply(_rotate_half(xt), transposed(sin)))
        node.output(0).replace(out.output(0))
        done += 1
    return done


# the attention of a traced step as tf2onnx and OpenVINO write it (read by openvino_attention.fuse_attention)


def identity_slice(node) -> bool:
    """A ``Slice`` that keeps all of every axis it slices (start 0, step 1, end past a static length): keras-hub
    Gemma 4 slices its cached keys and values so (``x[..., :heads, :depth]``)."""
    if node.get_type_name() != "Slice" or node.get_input_size() < 4:
        return False
    starts, ends, steps = (constant_values(node.input_value(i)) for i in (1, 2, 3))
    axes = constant_values(node.input_value(4)) if node.get_input_size() > 4 else None
    shape = node.get_input_partial_shape(0)
    if starts is None or ends is None or steps is None or shape.rank.is_dynamic:
        return False
    axes = range(len(starts)) if axes is None else axes
    for axis, start, end, step in zip(axes, starts, ends, steps):
        dim = shape[int(axis)]
        if start != 0 or step != 1 or not dim.is_static or end < dim.get_length():
            return False
    return True


def bool_source(output):
    """``m`` of ``Convert(m)`` where m is boolean, else None."""
    from openvino import Type

    node = output.get_node()
    if node.get_type_name() == "Convert" and node.input_value(0).get_element_type() == Type.boolean:
        return node.input_value(0)
    return None


def unwhere(probs, mask):
    """The output after Keras's ``where(mask, softmax, 0)`` (its ``Softmax`` layer zeroes masked positions
    again; tf2onnx: ``Convert(m) * p + Convert(not m) * 0``) when ``mask`` is the mask the scores were masked
    with, else ``probs``. With the same mask the where changes nothing but rows with no position allowed,
    which a causal step does not have (every token attends to itself)."""
    if mask is None:
        return probs
    targets = list(probs.get_target_inputs())
    if len(targets) != 1 or targets[0].get_node().get_type_name() != "Multiply":
        return probs
    mul = targets[0].get_node()
    if bool_source(mul.input_value(1 - targets[0].get_index())) != mask:
        return probs
    after = list(mul.output(0).get_target_inputs())
    if len(after) != 1 or after[0].get_node().get_type_name() != "Add":
        return probs
    add = after[0].get_node()
    other = add.input_value(1 - after[0].get_index()).get_node()
    if other.get_type_name() != "Multiply":
        return probs
    for j in (0, 1):
        n = bool_source(other.input_value(j))
        zero = constant_values(other.input_value(1 - j))
        if n is not None and n.get_node().get_type_name() == "LogicalNot" and n.get_node().input_value(0) == mask:
            if zero is not None and not zero.any():
                return add.output(0)
    return probs
