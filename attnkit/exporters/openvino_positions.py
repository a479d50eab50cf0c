"""The positions of an OpenVINO decode step as an input: what GenAI's paged attention needs of a model.

OpenVINO's ``SDPAToPagedAttention`` (what GenAI's ``ContinuousBatchingPipeline``, the default attention backend of
its ``LLMPipeline`` on CPU, and OpenVINO Model Server run) turns the stateful model's attention into paged attention:
it drops ``attention_mask`` and the cache state, feeds every scheduled token as a row of its own
(``input_ids`` (tokens,) unsqueezed to (tokens, 1)), and gives each its position through ``position_ids``. A step
that computes its positions any other way answers wrongly, or not at all, after the rewrite:

- attnkit's decoders take positions from the padding mask (:func:`expose_positions`);
- keras-hub's take them from the cache slot, ``arange(new) + cache_update_index`` with the index read from the
  cache state's length, one row of positions broadcast over the batch (:func:`expose_slot_positions`). The
  rewrite replaces that length by ``max_context_len - 1``, so every token of a prompt got one position
  (measured on llama3-124m with GenAI 2026.4 before this module: the graph validated, 25 % of tokens matched).

Written by hand: optimum-intel traces ``position_ids`` from a transformers model; OpenVINO has no pass that turns
a computed position into an input.
"""

from __future__ import annotations

#: the stateful decoder's positions input, (batch, new) i64, where the step took them from its mask
#: (optimum-intel's name, which OpenVINO's paged-attention rewrite and GenAI feed by)
POSITION_IDS = "position_ids"


def positions_from_mask(mask, new: int):
    """What a mask-positioned step computes from its ``padding_mask`` (attnkit's ``TransformerLM.step``):
    each token's position among its row's tokens, padding taking none; the last ``new`` columns, i64."""
    import numpy as np

    return np.maximum(np.cumsum(np.asarray(mask, "int64"), axis=1) - 1, 0)[:, mask.shape[1] - new :]


def expose_positions(model) -> bool:
    """Give a step that derives its positions from its mask (``max(cumsum(mask) - 1, 0)``, sliced to the new
    tokens, into the position table's Gather) a ``position_ids`` input in their place, in place; the mask then
    feeds only the attention. True if the graph had that one path (one CumSum reaching one Gather's indices).

    Why: OpenVINO's ``SDPAToPagedAttention`` (what GenAI's ``ContinuousBatchingPipeline``, the default
    attention backend of its ``LLMPipeline`` on CPU, and OpenVINO Model Server run) drops ``attention_mask``
    and feeds positions through ``position_ids``; a mask still read for positions leaves the rewritten
    graph referring to a removed input ("Model references undeclared parameters: padding_mask", measured
    with GenAI 2026.4 on decoder-small). Written by hand: optimum-intel traces ``position_ids`` from a
    transformers model; OpenVINO has no pass that turns a computed position into an input."""
    from openvino import Type, opset13

    cumsums = [op for op in model.get_ops() if op.get_type_name() == "CumSum"]
    if len(cumsums) != 1:
        return False
    gathers, seen, todo = {}, set(), [cumsums[0]]
    while todo:  # everything downstream of the CumSum, up to the Gather that takes it as indices
        for output in todo.pop().outputs():
            for target in output.get_target_inputs():
                node = target.get_node()
                if node.get_type_name() == "Gather" and target.get_index() == 1:
                    gathers[node.get_friendly_name()] = target
                elif node.get_friendly_name() not in seen:
                    seen.add(node.get_friendly_name())
                    todo.append(node)
    if len(gathers) != 1:
        return False
    (indices,) = gathers.values()
    if indices.get_partial_shape().rank.get_length() != 2:
        return False
    positions = opset13.parameter([-1, -1], Type.i64, name=POSITION_IDS)
    positions.output(0).get_tensor().set_names({POSITION_IDS})
    model.add_parameters([positions])
    indices.replace_source_output(opset13.convert(positions, indices.get_element_type()).output(0))
    model.validate_nodes_and_infer_types()
    return True


def takes_paged_attention(model, windows: list | None = None) -> str | None:
    """None if OpenVINO's paged-attention rewrite (``SDPAToPagedAttention``, as GenAI applies it) turns a copy
    of ``model`` into a valid graph (ScaledDotProductAttention ops fed by the cache state, ``input_ids`` and
    ``position_ids`` inputs, the mask read by nothing else); else why not, in the rewrite's own words (a step
    whose attention is not ScaledDotProductAttention: "No ScaledDotProductAttention operation observed in the
    graph", as keras-hub's were before :mod:`attnkit.exporters.openvino_attention` fused them). A step
    positioned by cache slot is asked after :func:`expose_slot_positions`; one with sliding ``windows`` (one per
    attention layer, None for full attention) also that each PagedAttention op took its layer's."""
    from openvino._offline_transformations import paged_attention_transformation

    from .openvino_window import paged_windows

    copy = model.clone()
    try:
        paged_attention_transformation(copy)
        copy.validate_nodes_and_infer_types()
    except RuntimeError as e:
        lines = [line.strip() for line in str(e).splitlines() if line.strip()]
        return next((line for line in lines[1:] if not line.startswith("Check ")), lines[0] if lines else "failed")
    if not any(op.get_type_name() == "PagedAttentionExtension" for op in copy.get_ops()):
        return "the rewrite left no PagedAttention op"
    if any(windows or []):
        took, wanted = paged_windows(copy), [w or 0 for w in windows]
        if took != wanted:
            return f"the rewrite gave its attention ops sliding windows {took}, not the layers' {wanted}"
    return None


#: nodes that end the search for what the positions reach: the attention takes them no further, and a ShapeOf
#: reads no values (Gemma 4: the mask reaches the attention's output, whose shape a later layer's rotary reads)
_PAST_ATTENTION = {"ScaledDotProductAttention", "Result", "Assign", "ShapeOf"}
#: nodes that end the positions' own computation: the rotary sines and cosines, a position table's read
_POSITIONS_END = {"Sin", "Cos", "Gather"} | _PAST_ATTENTION


def _downstream(output, stop: set[str]):
    """Every (node, input index) reached from ``output``, not going past a node whose type is in ``stop``."""
    seen, todo = set(), [output]
    while todo:
        for target in todo.pop().get_target_inputs():
            node = target.get_node()
            yield node, target.get_index()
            if node.get_type_name() not in stop and node.get_friendly_name() not in seen:
                seen.add(node.get_friendly_name())
                todo.extend(node.outputs())


def _readers(output) -> set[str]:
    """The op types reached from ``output`` up to the attention (a causal mask's path ends there; the rotary
    embedding's goes through its own MatMul, ``inv_freq @ positions`` in some families, to its Sin and Cos); a
    Gather reached through its indices counts as ``"Gather:indices"`` (a position table's read)."""
    return {
        f"{node.get_type_name()}:indices" if node.get_type_name() == "Gather" and index == 1 else node.get_type_name()
        for node, index in _downstream(output, _PAST_ATTENTION)
    }


def _slot_positions(model) -> list:
    """The step's rank-1 ``Range + index`` Adds: the slot positions every row shares."""
    found = []
    for op in model.get_ops():
        if op.get_type_name() != "Add" or op.get_output_partial_shape(0).rank.get_length() != 1:
            continue
        sources = [port.get_source_output().get_node() for port in op.inputs()]
        sources = [s.input_value(0).get_node() if s.get_type_name() == "Convert" else s for s in sources]
        if any(s.get_type_name() == "Range" for s in sources):
            found.append(op)
    return found


def expose_slot_positions(model):
    """``(model, None)``: a copy of a step positioned by cache slot with a ``position_ids`` input (batch, new),
    i64, in place of the positions its rotary embedding's sines and cosines or its position table read; the causal
    mask keeps reading the cache's length (the rewrite drops it, and the stateful step without the rewrite still
    needs it). Each such reader is an ``Unsqueeze`` to (1, new) (or to (1, 1, new) through two), replaced by the
    input (a Reshape after it that pinned that batch of 1 now takes any), or a position table's Gather, whose
    output gains the batch; a Slice of a position table from the cache index (GPT-2, OPT) becomes a Gather of
    each row's positions. Else ``(model, why not)``, ``model`` itself untouched (the copy is rewritten, and
    returned only when every reader took the input).

    Checked where it counts: the export's check runs the stateful step and GenAI's continuous batching on the
    rewritten IR, token for token against the model's own eager decode (a difference fails the export, as any
    artifact's would)."""
    import numpy as np
    from openvino import Type, opset13

    work = model.clone()
    adds, slices = _slot_positions(work), _table_slices(work)
    if not adds and not slices:
        return model, "no slot positions (arange + cache index) found in the step"
    positions = opset13.parameter([-1, -1], Type.i64, name=POSITION_IDS)
    positions.output(0).get_tensor().set_names({POSITION_IDS})
    replaced = 0
    for add in adds:
        for target in list(add.output(0).get_target_inputs()):
            reader = target.get_node()
            kind = reader.get_type_name()
            table = kind == "Gather" and target.get_index() == 1  # a position table's read of them
            if not table and not _readers(reader.output(0)) & {"Sin", "Cos", "Gather:indices"}:
                continue  # the causal mask's, or another reader that feeds no position
            if table:
                target.replace_source_output(opset13.convert(positions, add.get_output_element_type(0)).output(0))
            elif _leading_unsqueeze(reader):
                # (1, new), or (1, 1, new) after another leading Unsqueeze (SmolLM3): (batch, [1,] new) in its place
                leading = reader
                while len(leading.output(0).get_target_inputs()) == 1:
                    (after,) = leading.output(0).get_target_inputs()
                    if not _leading_unsqueeze(after.get_node()):
                        break
                    leading = after.get_node()
                batched = opset13.convert(positions, reader.get_output_element_type(0)).output(0)
                ones = leading.get_output_partial_shape(0).rank.get_length() - 2
                if ones:
                    batched = opset13.unsqueeze(batched, opset13.constant(list(range(1, 1 + ones)))).output(0)
                for after in list(leading.output(0).get_target_inputs()):
                    after.replace_source_output(batched)
            else:
                return model, f"the slot positions are read by a {kind}, not an Unsqueeze to (1, new) or a Gather"
            replaced += 1
    for window in slices:  # GPT-2's position table, sliced from the cache index: each row's positions gathered
        table = window.input_value(0)
        rows = opset13.gather(table, opset13.convert(positions, "i64"), opset13.constant(np.int64(0)))
        for after in list(window.output(0).get_target_inputs()):
            after.replace_source_output(rows.output(0))
        replaced += 1
    if not replaced:
        return model, "the slot positions feed no rotary embedding or position table"
    work.add_parameters([positions])
    for node in [t.get_node() for t in positions.output(0).get_target_inputs()]:
        _unpin_batch(node)
    work.validate_nodes_and_infer_types()
    return work, None


def _table_slices(model) -> list:
    """Slices of a 2-D constant table (a position embedding), the table's full width, from a start read off a
    runtime shape: keras-hub's ``PositionEmbedding`` with a ``start_index`` (GPT-2, OPT), rows ``[index, index +
    new)`` for every row of the batch, the index being the cache state's length (a step has no other)."""
    found = []
    for op in model.get_ops():
        if op.get_type_name() != "Slice" or op.get_input_partial_shape(0).rank.get_length() != 2:
            continue
        table = op.input_value(0).get_node()
        table = table.input_value(0).get_node() if table.get_type_name() == "Convert" else table
        width = op.get_input_partial_shape(0)[1]
        if table.get_type_name() != "Constant" or op.get_output_partial_shape(0)[1] != width:
            continue
        if "ShapeOf" in {node.get_type_name() for node in _upstream(op.input_value(1).get_node())}:
            found.append(op)
    return found


def _upstream(node, limit: int = 200) -> list:
    """Up to ``limit`` nodes that ``node`` is computed from, nearest first."""
    seen, order, todo = set(), [], [node]
    while todo and len(order) < limit:
        current = todo.pop(0)
        for port in current.inputs():
            source = port.get_source_output().get_node()
            if source.get_friendly_name() not in seen:
                seen.add(source.get_friendly_name())
                order.append(source)
                todo.append(source)
    return order


def _leading_unsqueeze(node) -> bool:
    """An Unsqueeze that adds a leading axis of 1."""
    if node.get_type_name() != "Unsqueeze" or node.input_value(1).get_node().get_type_name() != "Constant":
        return False
    return list(node.input_value(1).get_node().get_vector()) == [0]


def _unpin_batch(start) -> None:
    """Reshapes in the positions' own computation (from ``start`` to the rotary Sin/Cos or the position table's
    Gather) whose target was a constant with a leading 1 (the batch of the one shared row of positions) and no
    -1: that 1 becomes -1."""
    import numpy as np
    from openvino import opset13

    for node, _ in list(_downstream(start.output(0), _POSITIONS_END)):
        if node.get_type_name() == "Reshape" and node.input_value(1).get_node().get_type_name() == "Constant":
            shape = np.array(node.input_value(1).get_node().get_vector(), np.int64)
            if len(shape) and shape[0] == 1 and -1 not in shape:
                shape[0] = -1
                node.input(1).replace_source_output(opset13.constant(shape).output(0))
