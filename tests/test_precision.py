"""Reduced precision: fp16/int8 ONNX, TF mixed policies, LayerNorm fusion, the GELU rewrite, --locate."""

from __future__ import annotations

import json
import shutil

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from onnx import numpy_helper

import attnkit
from attnkit.cli import cli
from attnkit.core.errors import AttnkitError, BackendError
from attnkit.exporters.passes import apply_passes, fuse_layernorm, op_counts
from attnkit.exporters.precision import to_fp16

LOWERED = "fp32,bf16,fp16,int8"


@pytest.fixture(scope="module", params=["encoder-tiny", "mha", "decoder-small"])
def lowered_export(request, tmp_path_factory):
    out = tmp_path_factory.mktemp("precision") / request.param
    return attnkit.export(request.param, out, precision=LOWERED)


def test_every_precision_passes_its_tolerance_at_two_shapes(lowered_export):
    report = lowered_export.report
    assert report.ok, [
        (r.backend, r.precision, r.agreements[0].failures if r.agreements else r.error)
        for r in report.results
        if not r.passed
    ]
    fp32 = [a.rel_l2 for r in report.results if r.precision == "fp32" for a in r.agreements]
    assert fp32 and max(fp32) <= 1e-5
    checked = {(r.backend, r.precision) for r in report.results}
    assert {("onnxruntime", p) for p in ("fp32", "fp16", "int8")} <= checked
    assert {("savedmodel", p) for p in ("fp32", "bf16", "fp16")} <= checked
    assert len({(r.batch, r.seq) for r in report.results}) == 2
    summary = report.summary()
    assert 1e-5 < summary[("onnxruntime", "fp16")]["rel_l2"] < 1e-2  # really fp16, and close
    assert summary[("onnxruntime", "int8")]["cosine"] >= 0.999
    for a in lowered_export.manifest.artifacts:
        if a.format in ("onnx", "savedmodel"):
            assert a.agreement and a.agreement["passed"], a
    assert lowered_export.manifest.artifact("onnx", "bf16") is None
    (note,) = lowered_export.manifest.notes
    assert "no model.bf16.onnx" in note and "tf-function" in note  # which runtimes can run bf16 instead


def test_fp16_graph_keeps_fp32_islands(lowered_export):
    model = onnx.load(lowered_export.out / "model.fp16.onnx")
    types = {v.name: v.type.tensor_type.elem_type for v in onnx.shape_inference.infer_shapes(model).graph.value_info}
    f32, f16 = onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16
    islands = [n for n in model.graph.node if n.op_type in ("LayerNormalization", "Softmax")]
    assert islands
    for n in islands:
        assert all(types.get(o, f32) == f32 for o in n.output), n.name
    weights = [i for i in model.graph.initializer if len(i.dims) == 2]
    assert weights and all(i.data_type == f16 for i in weights)
    assert all(i.type.tensor_type.elem_type == f32 for i in model.graph.input if i.type.tensor_type.elem_type != 6)
    assert model.graph.output[0].type.tensor_type.elem_type == f32  # keep_io_types


def test_fp16_of_an_initializer_shared_by_an_fp32_island_and_an_fp16_node_loads_and_agrees(rng):
    """onnxconverter-common leaves an initializer read by a blocked (fp32) node and by another node fp32 while
    the other node's inputs become fp16: onnxruntime refuses the graph (keras-hub GPT-2's token embedding:
    ``Less(Cast(ids), 0.0)`` where ``Range`` reads the same 0.0). The readers outside the island get their own
    copy; only the shared initializer is copied."""
    import onnxruntime as ort
    from onnx import TensorProto as T  # noqa: N817
    from onnx import helper as h

    c = numpy_helper.from_array(np.array(2.0, np.float32), "c")
    nodes = [
        h.make_node("Cast", ["ids"], ["idsf"], to=T.FLOAT, name="cast_ids"),  # int -> float: kept fp32 by name
        h.make_node("Less", ["idsf", "c"], ["less"], name="less"),
        h.make_node("Cast", ["less"], ["lessf"], to=T.FLOAT, name="cast_less"),
        h.make_node("Pow", ["x", "c"], ["p"], name="pow"),  # an fp32 island reading the same c
        h.make_node("Mul", ["p", "lessf"], ["y"], name="mul"),
    ]
    inputs = [h.make_tensor_value_info("x", T.FLOAT, [6]), h.make_tensor_value_info("ids", T.INT64, [6])]
    graph = h.make_graph(nodes, "shared", inputs, [h.make_tensor_value_info("y", T.FLOAT, [6])], [c])
    model = h.make_model(graph, opset_imports=[h.make_opsetid("", 17)], ir_version=8)
    half = to_fp16(model)
    copies = [i.name for i in half.graph.initializer if i.name.startswith("c")]
    assert sorted(copies) == ["c", "c/unshared"] and len(model.graph.initializer) == 1  # the input is untouched
    feeds = {"x": rng.standard_normal(6).astype(np.float32), "ids": rng.integers(0, 4, 6)}
    (ref,) = ort.InferenceSession(model.SerializeToString()).run(None, feeds)
    (got,) = ort.InferenceSession(half.SerializeToString()).run(None, feeds)
    assert np.allclose(got, ref, rtol=2e-3, atol=1e-3) and (ref != 0).any() and (ref == 0).any()


def test_fp16_file_is_half_the_fp32_file(lowered_export):
    fp32 = (lowered_export.out / "model.onnx").stat().st_size
    fp16 = (lowered_export.out / "model.fp16.onnx").stat().st_size
    assert fp16 / fp32 == pytest.approx(0.5, abs=0.05)


def test_int8_graph_has_quantised_matmuls_and_float_attention(lowered_export):
    model = onnx.load(lowered_export.out / "model.int8.onnx")
    ops = op_counts(model)
    assert ops["MatMulInteger"] + ops["DynamicQuantizeMatMul"] > 0
    assert ops["MatMul"] >= 2  # q kᵀ and weights·v stay float
    scheme = lowered_export.manifest.artifact("onnx", "int8").extra["int8_scheme"]
    weight_type = onnx.TensorProto.UINT8 if scheme == "u8u8" else onnx.TensorProto.INT8
    assert any(i.data_type == weight_type and len(i.dims) == 2 for i in model.graph.initializer)
    if lowered_export.manifest.spec.name != "mha":
        assert ops["LayerNormalization"] > 0


def test_layernorm_fusion_counts_and_agreement(tiny_export):
    model = onnx.load(tiny_export.out / "model.onnx")  # already fused by export
    assert op_counts(model)["LayerNormalization"] == 4 and op_counts(model)["GlobalAveragePool"] == 0
    record = tiny_export.manifest.artifact("onnx", "fp32")
    assert record.extra["passes"]["layernorm_fused"] == 4
    assert record.extra["passes"]["tf2onnx"]["GlobalAveragePool"] == 8  # mean + variance per LayerNorm
    assert record.extra["passes"]["gelu_canonical"] == 2  # one GELU per FFN, none left in tf2onnx's Erfc form
    assert not any(n.op_type == "Neg" and "/Gelu/" in n.name for n in model.graph.node)


def test_fusion_is_exact_on_the_raw_graph(tmp_path):
    import onnxruntime as ort

    result = attnkit.export("encoder-tiny", tmp_path / "raw", formats="onnx", fuse=False)
    raw = onnx.load(result.out / "model.onnx")
    assert op_counts(raw)["LayerNormalization"] == 0
    fused, counts = apply_passes(raw)
    assert counts == {"layernorm_fused": 4, "gelu_canonical": 2}
    onnx.checker.check_model(fused, full_check=True)
    feeds = result.manifest.spec.sample_feeds(3, 21, seed=4)
    a = ort.InferenceSession(raw.SerializeToString()).run(None, feeds)[0]
    b = ort.InferenceSession(fused.SerializeToString()).run(None, feeds)[0]
    np.testing.assert_allclose(a, b, atol=2e-5)


def _perturb(path, layer_scope: str, scale: float = 1.5):
    model = onnx.load(path)
    inits = {i.name: i for i in model.graph.initializer}
    node = next(
        n
        for n in model.graph.node
        if layer_scope in n.name and n.op_type == "MatMul" and any(i in inits for i in n.input)
    )
    init = inits[next(i for i in node.input if i in inits)]
    init.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(init) * scale, init.name))
    onnx.save(model, path)


@pytest.mark.parametrize(
    "scope,expected",
    [
        ("encoder_block_1_1/ffn_inner", "encoder_block_1/ffn_inner"),
        ("encoder_block_0_1/self_attention_1/wv", "encoder_block_0/self_attention/wv"),
    ],
)
def test_locate_names_the_perturbed_layer(tiny_export, tmp_path, scope, expected):
    from attnkit.checks.locate import locate
    from attnkit.core.compare import DEFAULT_TOLERANCES
    from attnkit.exporters.manifest import Manifest, sha256_path

    out = tmp_path / "p"
    shutil.copytree(tiny_export.out, out)
    _perturb(out / "model.onnx", scope)
    m = Manifest.load(out)
    m.artifact("onnx").sha256 = sha256_path(out / "model.onnx")
    m.write(out)
    clean = locate(tiny_export.out, "fp32", DEFAULT_TOLERANCES["fp32"])
    assert clean.first is None and sum(e.onnx_tensor is not None for e in clean.curve) > 10
    report = locate(out, "fp32", DEFAULT_TOLERANCES["fp32"])
    assert report.first.layer == expected
    before = report.curve[: report.curve.index(report.first)]
    assert before and all(not e.exceeds for e in before)
    code = CliRunner().invoke(cli, ["verify", str(out), "--locate", "--json", str(tmp_path / "r.json")])
    assert code.exit_code == 1 and expected in code.output
    data = json.loads((tmp_path / "r.json").read_text())
    assert data["locate"][0]["first_diverging"]["layer"] == expected and len(data["locate"][0]["curve"]) > 10


def test_locate_reads_tensors_after_onnxruntime_contrib_ops(tiny_export):
    """onnx's shape inference types nothing after a MatMulNBits (q8/q4), so --locate could not read any
    layer after the first quantised weight and matched what it could read instead (on keras-hub Llama 3's q4,
    a false "first diverging layer"); onnxruntime's symbolic inference types them."""
    from attnkit.checks.locate import _onnx_values
    from attnkit.exporters.precision import to_weight_only

    q4 = to_weight_only(onnx.load(tiny_export.out / "model.onnx"), "q4")
    nbits = [i for i, n in enumerate(q4.graph.node) if n.op_type == "MatMulNBits"]
    after = [o for n in q4.graph.node[nbits[0] + 1 :] for o in n.output if "/" in n.name and n.op_type == "Add"]
    feeds = tiny_export.manifest.spec.sample_feeds(2, 9, seed=5)
    values = _onnx_values(q4, after, feeds)
    assert len(after) > 4 and set(after) <= set(values), sorted(set(after) - set(values))[:3]


def test_locate_without_onnx_is_refused(tmp_path):
    out = attnkit.export("mha", tmp_path / "sm", formats="savedmodel").out
    result = CliRunner().invoke(cli, ["verify", str(out), "--locate"])
    assert result.exit_code != 0 and "--locate" in result.output and "Traceback" not in result.output


def test_precision_a_backend_cannot_run_is_refused(tiny_export):
    with pytest.raises(BackendError, match="keras, tf-function, xla, savedmodel"):
        attnkit.bench(
            str(tiny_export.out), backends=["onnxruntime-bf16"], batch_sizes="1", seq_lens="8", calibrate=False
        )
    with pytest.raises(AttnkitError, match="precision.*bf16"):
        attnkit.export("mha", "/tmp/never-written", formats="onnx", precision="bf16")
    with pytest.raises(AttnkitError, match="precision.*int8"):
        attnkit.export("mha", "/tmp/never-written", formats="savedmodel", precision="int8")


def test_tf_backends_run_mixed_precision_from_the_same_weights(tiny_export):
    report = attnkit.verify(tiny_export.out, backends=["tf-function-bf16", "xla-fp16", "keras-bf16"])
    assert report.ok and {(r.backend, r.precision) for r in report.results} == {
        ("tf-function", "bf16"),
        ("xla", "fp16"),
        ("keras", "bf16"),
    }
    assert all(r.agreements[0].rel_l2 > 1e-4 for r in report.results)


def test_cli_bad_tolerance_conflict_and_precision(tiny_export):
    r = CliRunner().invoke(cli, ["verify", str(tiny_export.out), "--atol", "fp16=1e-2", "--atol", "fp16=5e-2"])
    assert r.exit_code != 0 and "--atol" in r.output and "conflicting" in r.output
    r = CliRunner().invoke(cli, ["bench", str(tiny_export.out), "--backends", "onnxruntime", "--precision", "bf16"])
    assert r.exit_code != 0 and "cannot run bf16" in r.output and "tf-function" in r.output


def test_int8_weight_scales_follow_the_scheme_unless_asked(tmp_path):
    """U8U8 (portable) and U8S8 (cpu-amx) take a weight scale per output channel by default, and per_channel
    overrides either; the file holds what its manifest record says."""
    import onnx

    def scales(result):
        model = onnx.load(result.out / "model.int8.onnx")
        dims = [tuple(i.dims) for i in model.graph.initializer if i.name.endswith("_scale")]
        assert dims, "no weight scales"
        return result.manifest.artifact("onnx", "int8").extra["per_channel"], {len(d) == 1 and d[0] > 1 for d in dims}

    def export(name, **kw):
        return attnkit.export("encoder-tiny", tmp_path / name, formats="onnx", precision="int8", **kw)

    portable = export("portable")
    assert portable.report.ok and scales(portable) == (True, {True})
    assert scales(export("per-tensor", per_channel=False)) == (False, {False})
    # U8S8 is made, not run, here: its answers are checked on VNNI/AMX CPUs only (test_targets)
    assert scales(export("amx", target="cpu-amx", check=False)) == (True, {True})
    assert scales(export("amx-pt", target="cpu-amx", check=False, per_channel=False)) == (False, {False})


def test_reducemean_layernorm_form_is_fused_exactly(rng):
    """The other decomposition tf2onnx emits (ReduceMean over the last axis), built by hand."""
    from onnx import TensorProto, helper

    d = 6
    inits = [
        numpy_helper.from_array(np.array(1e-5, np.float32), "eps"),
        numpy_helper.from_array(rng.standard_normal(d).astype(np.float32), "gamma"),
        numpy_helper.from_array(rng.standard_normal(d).astype(np.float32), "beta"),
    ]
    n = helper.make_node
    nodes = [
        n("ReduceMean", ["x"], ["mu"], axes=[-1], keepdims=1, name="ln/mean"),
        n("Sub", ["x", "mu"], ["d"], name="ln/sub"),
        n("Mul", ["d", "d"], ["sq"], name="ln/sq"),
        n("ReduceMean", ["sq"], ["var"], axes=[-1], keepdims=1, name="ln/var"),
        n("Add", ["var", "eps"], ["ve"], name="ln/add_eps"),
        n("Sqrt", ["ve"], ["sd"], name="ln/sqrt"),
        n("Reciprocal", ["sd"], ["inv"], name="ln/recip"),
        n("Mul", ["inv", "gamma"], ["s"], name="ln/scale"),
        n("Mul", ["x", "s"], ["xs"], name="ln/mul_x"),
        n("Neg", ["mu"], ["nm"], name="ln/neg"),
        n("Mul", ["nm", "s"], ["ms"], name="ln/mul_mean"),
        n("Add", ["ms", "beta"], ["b"], name="ln/add_beta"),
        n("Add", ["xs", "b"], ["y"], name="ln/add_2"),
    ]
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3, 4, d])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3, 4, d])
    model = helper.make_model(
        helper.make_graph(nodes, "ln", [x], [y], inits), opset_imports=[helper.make_opsetid("", 17)]
    )
    model.ir_version = 8
    fused, count = fuse_layernorm(model)
    assert count == 1 and [nd.op_type for nd in fused.graph.node] == ["LayerNormalization"]
    assert fused.graph.node[0].name == "ln/LayerNormalization"
    import onnxruntime as ort

    feeds = {"x": rng.standard_normal((2, 3, 4, d)).astype(np.float32)}
    a = ort.InferenceSession(model.SerializeToString()).run(None, feeds)[0]
    b = ort.InferenceSession(fused.SerializeToString()).run(None, feeds)[0]
    np.testing.assert_allclose(a, b, atol=2e-5)


def _erfc_gelu_model():
    """TensorFlow's exact GELU as tf2onnx lowers it: (0.5 * x) * (1 - Erf(Neg(x) * 0.7071)), built by hand."""
    from onnx import TensorProto, helper

    inits = [
        numpy_helper.from_array(np.array(0.5, np.float32), "half"),
        numpy_helper.from_array(np.array(1.0, np.float32), "one"),
        numpy_helper.from_array(np.array(2**-0.5, np.float32), "rsqrt2"),
    ]
    n = helper.make_node
    nodes = [
        n("Mul", ["half", "x"], ["hx"], name="ffn/Gelu/mul"),
        n("Neg", ["x"], ["nx"], name="ffn/Gelu/Neg"),
        n("Mul", ["nx", "rsqrt2"], ["z"], name="ffn/Gelu/mul_1"),
        n("Erf", ["z"], ["e"], name="ffn/Gelu/Erfc"),
        n("Sub", ["one", "e"], ["erfc"], name="ffn/Gelu/Erfc_erfc"),
        n("Mul", ["hx", "erfc"], ["y"], name="ffn/Gelu/mul_2"),
    ]
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 5, 16])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 5, 16])
    model = helper.make_model(
        helper.make_graph(nodes, "gelu", [x], [y], inits), opset_imports=[helper.make_opsetid("", 17)]
    )
    model.ir_version = 8
    return model


def _optimised_ops(model, tmp_path) -> list[str]:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.optimized_model_filepath = str(tmp_path / "optimised.onnx")
    ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    return [nd.op_type for nd in onnx.load(tmp_path / "optimised.onnx").graph.node]


def test_erfc_gelu_is_rewritten_into_the_form_onnxruntime_fuses(rng, tmp_path):
    import onnxruntime as ort

    model = _erfc_gelu_model()
    assert "Gelu" not in _optimised_ops(model, tmp_path)  # tf2onnx's form: onnxruntime fuses nothing
    rewritten, counts = apply_passes(model)
    assert counts["gelu_canonical"] == 1
    assert sorted(nd.op_type for nd in rewritten.graph.node) == ["Add", "Div", "Erf", "Mul", "Mul"]
    assert all(nd.name.startswith("ffn/Gelu/") for nd in rewritten.graph.node)  # --locate maps by scope
    assert _optimised_ops(rewritten, tmp_path) == ["Gelu"]  # one kernel instead of five passes
    feeds = {"x": (3 * rng.standard_normal((2, 5, 16))).astype(np.float32)}
    a = ort.InferenceSession(model.SerializeToString()).run(None, feeds)[0]
    b = ort.InferenceSession(rewritten.SerializeToString()).run(None, feeds)[0]
    np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6)


def test_a_gelu_like_graph_with_other_constants_is_left_alone():
    model = _erfc_gelu_model()
    half = next(i for i in model.graph.initializer if i.name == "half")
    half.CopyFrom(numpy_helper.from_array(np.array(0.6, np.float32), "half"))
    rewritten, counts = apply_passes(model)
    assert counts["gelu_canonical"] == 0
    assert sorted(nd.op_type for nd in rewritten.graph.node) == sorted(nd.op_type for nd in model.graph.node)
