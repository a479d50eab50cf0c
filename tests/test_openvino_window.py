"""A stateful step's sliding windows in the form OpenVINO's paged-attention rewrite reads
(:mod:`attnkit.exporters.openvino_window`), on a synthetic two-layer step: the window-local layer's mask already
holds its band, as keras-hub's does, so the step answers as before; the rewrite gives each PagedAttention op its
layer's window. The keras-hub families that need it (Mistral, Gemma 3, Gemma 4) decode token for token through
GenAI's continuous batching in the ``--runslow`` family tests."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("openvino", reason="needs the openvino extra (pip install 'attnkit[openvino]')")

HEADS, DEPTH, VOCAB, WINDOW = 2, 4, 16, 3


def _step(seed: int):
    """Two layers of a stateful decode step as OpenVINO GenAI drives one (``input_ids``, ``position_ids``,
    ``beam_idx``; keys and values as state, fed to ScaledDotProductAttention), its mask by cache slot: layer 0
    causal within ``WINDOW`` slots (keras-hub's band, ``|q - k| < window``), layer 1 causal."""
    import openvino as ov
    from openvino import Type, opset6, opset13

    rng = np.random.default_rng(seed)
    width = HEADS * DEPTH

    def named(shape, dtype, name):
        p = opset13.parameter(shape, dtype, name=name)
        p.output(0).get_tensor().set_names({name})
        return p

    ids, positions = named([-1, -1], Type.i64, "input_ids"), named([-1, -1], Type.i64, "position_ids")
    beam = named([-1], Type.i32, "beam_idx")
    x = opset13.gather(opset13.constant(rng.standard_normal((VOCAB, width)).astype("f4")), ids, 0)
    x = opset13.add(x, opset13.convert(opset13.unsqueeze(positions, [2]), "f32"))
    assigns = []
    for layer in range(2):

        def heads(y):
            y = opset13.matmul(y, opset13.constant((rng.standard_normal((width, width)) * 0.3).astype("f4")), 0, 0)
            y = opset13.reshape(y, opset13.constant(np.array([0, 0, HEADS, DEPTH], np.int64)), True)
            return opset13.transpose(y, opset13.constant(np.array([0, 2, 1, 3], np.int64)))

        q, kv = heads(x), []
        for name in ("key", "value"):
            info = ov.op.util.VariableInfo()
            info.data_shape, info.data_type = ov.PartialShape([-1, HEADS, -1, DEPTH]), Type.f32
            info.variable_id = f"{name}.{layer}"
            variable = ov.op.util.Variable(info)
            batch = opset13.gather(opset13.shape_of(ids), opset13.constant([0]), 0)
            empty = opset13.broadcast(
                opset13.constant(np.float32(0)),
                opset13.concat([batch, opset13.constant(np.array([HEADS, 0, DEPTH]))], 0),
            )
            past = opset6.read_value(empty, variable)
            both = opset13.concat([opset13.gather(past, beam, 0), heads(x)], 2)
            assigns.append(opset6.assign(both, variable))
            kv.append(both)
        # the slots from the cache state's length and the new tokens', as keras-hub's step reads them: a reader of
        # the concatenation would keep the CPU plugin from fusing the cache into the attention
        new = opset13.gather(opset13.shape_of(q), opset13.constant(np.int64(2)), 0)
        total = opset13.add(opset13.gather(opset13.shape_of(past), opset13.constant(np.int64(2)), 0), new)
        one = opset13.constant(np.int64(1))
        rows = opset13.unsqueeze(opset13.range(opset13.subtract(total, new), total, one, "i64"), [1])
        cols = opset13.unsqueeze(opset13.range(opset13.constant(np.int64(0)), total, one, "i64"), [0])
        mask = opset13.less_equal(cols, rows)
        if layer == 0:
            band = opset13.less_equal(opset13.abs(opset13.subtract(rows, cols)), opset13.constant(np.int64(WINDOW - 1)))
            mask = opset13.logical_and(mask, band)
        out = opset13.scaled_dot_product_attention(q, kv[0], kv[1], mask)
        out = opset13.transpose(out, opset13.constant(np.array([0, 2, 1, 3], np.int64)))
        x = opset13.reshape(out, opset13.constant(np.array([0, 0, width], np.int64)), True)
    logits = opset13.result(opset13.matmul(x, opset13.constant(rng.standard_normal((width, VOCAB)).astype("f4")), 0, 0))
    logits.output(0).get_tensor().set_names({"logits"})
    return ov.Model([logits], assigns, [ids, positions, beam])


def _decode(model, ids: np.ndarray, steps: int) -> np.ndarray:
    """The logits of a prompt and ``steps`` one-token steps after it (fixed tokens), the cache kept as state."""
    import openvino as ov

    request = ov.Core().compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": "f32"}).create_infer_request()
    out, past = [], 0
    for chunk in [ids] + [ids[:, i : i + 1] for i in range(steps)]:
        feeds = {"input_ids": chunk, "position_ids": np.arange(past, past + chunk.shape[1])[None, :],
                 "beam_idx": np.zeros(1, np.int32)}  # fmt: skip
        out.append(request.infer(feeds)["logits"][:, -1])
        past += chunk.shape[1]
    return np.concatenate(out)


def test_windows_written_for_paged_attention_keep_the_answers_and_reach_each_layer():
    """Layer 0's window in GPT-OSS's form: the step's logits over a prompt longer than the window and four
    steps after it are the unrewritten step's (a query or key slot off by one would cut the band and change
    them), and OpenVINO's paged-attention rewrite gives PagedAttention window 3 to layer 0 and none (0) to
    layer 1; the cache's concatenation gets no new reader; asked for another window, :func:`takes_paged_attention`
    says which it got. A window list that does
    not match the attention ops is refused with the reason and leaves the step as it was."""
    from attnkit.exporters.openvino_positions import takes_paged_attention
    from attnkit.exporters.openvino_window import window_for_paged_attention

    ids = np.random.default_rng(4).integers(1, VOCAB, (1, 7))
    before = _decode(_step(2), ids, 4)
    model = _step(2)
    ops = len(model.get_ops())
    assert "2 fused attention ops for 3 attention layers" in window_for_paged_attention(model, [WINDOW, None, 1])
    assert len(model.get_ops()) == ops
    sdpas = [op for op in model.get_ordered_ops() if op.get_type_name() == "ScaledDotProductAttention"]

    def readers():  # who reads each attention's keys and values (the cache's concatenation)
        return [sorted(t.get_node().get_type_name() for t in op.input_value(i).get_target_inputs())
                for op in sdpas for i in (1, 2)]  # fmt: skip

    before_readers = readers()
    assert window_for_paged_attention(model, [WINDOW, None]) is None
    assert len(model.get_ops()) > ops
    # no new reader of the cache: one would keep the CPU plugin from fusing it into the attention
    assert readers() == before_readers
    np.testing.assert_allclose(_decode(model, ids, 4), before, rtol=1e-5, atol=1e-5)
    assert takes_paged_attention(model, [WINDOW, None]) is None
    assert "sliding windows [3, 0], not the layers' [4, 0]" in takes_paged_attention(model, [WINDOW + 1, None])
    # without the window written, the rewrite gives every op full attention: what the check refuses
    assert "sliding windows [0, 0]" in takes_paged_attention(_step(2), [WINDOW, None])
