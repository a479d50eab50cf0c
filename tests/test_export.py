"""export: artifacts, manifest, ONNX validity at other shapes, SavedModel signature, user models."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import onnx
import onnxruntime as ort
import pytest
from conftest import rel_l2

import attnkit
from attnkit.core.errors import AgreementError, ModelError
from attnkit.exporters.manifest import sha256_path
from attnkit.models import get_preset
from attnkit.tracing import call_model

HERE = Path(__file__).parent


def test_manifest_records_every_artifact(tiny_export):
    out = tiny_export.out
    m = json.loads((out / "manifest.json").read_text())
    assert m["model"]["name"] == "encoder-tiny" and m["model"]["source"] == "preset"
    assert [i["name"] for i in m["spec"]["inputs"]] == ["token_ids", "padding_mask"]
    assert m["spec"]["inputs"][0]["shape"] == [None, None]
    assert m["spec"]["outputs"][0]["shape"] == [None, None, 128]
    formats = {a["format"]: a for a in m["artifacts"]}
    assert set(formats) == {"keras", "savedmodel", "onnx"}
    assert formats["savedmodel"]["path"] == "savedmodel/1"
    for a in m["artifacts"]:
        assert a["bytes"] > 0 and a["sha256"] == sha256_path(out / a["path"])
    for fmt in ("savedmodel", "onnx"):
        assert formats[fmt]["agreement"]["passed"] and formats[fmt]["agreement"]["rel_l2"] <= 1e-5
    assert {"tensorflow", "tf2onnx", "onnxruntime", "onnx"} <= set(m["versions"])
    assert m["created"]
    leftovers = [p.name for p in out.parent.iterdir() if ".tmp-" in p.name or ".old-" in p.name]
    assert leftovers == []


def test_onnx_is_valid_dynamic_and_agrees_at_other_shapes(tiny_export):
    path = tiny_export.out / "model.onnx"
    model = onnx.load(path)
    onnx.checker.check_model(model, full_check=True)
    assert not any(n.op_type == "Erfc" for n in model.graph.node)
    assert any(n.op_type == "Erf" for n in model.graph.node)  # exact GELU kept, via 1 - erf
    dims = [d.dim_param for d in model.graph.input[0].type.tensor_type.shape.dim]
    assert dims == ["batch", "sequence"]
    keras_model = keras.models.load_model(tiny_export.out / "model.keras")
    spec = tiny_export.manifest.spec
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for batch, seq in [(1, 7), (5, 100)]:
        feeds = spec.sample_feeds(batch, seq, seed=batch * 100 + seq)
        (got,) = session.run(["hidden_states"], feeds)
        ref = np.asarray(call_model(keras_model, spec, feeds)["hidden_states"])
        assert got.shape == (batch, seq, 128)
        assert rel_l2(ref, got) <= 1e-5


def test_savedmodel_signature_and_saved_model_cli(tiny_export, tmp_path):
    import tensorflow as tf

    sm = tf.saved_model.load(str(tiny_export.out / "savedmodel/1"))
    sig = sm.signatures["serving_default"]
    assert set(sig.structured_input_signature[1]) == {"token_ids", "padding_mask"}
    assert set(sig.structured_outputs) == {"hidden_states"}
    cli = Path(sys.executable).parent / "saved_model_cli"
    np.save(tmp_path / "ids.npy", np.random.default_rng(0).integers(1, 1000, (2, 9)).astype("int32"))
    np.save(tmp_path / "mask.npy", np.ones((2, 9), "int32"))
    run = subprocess.run(
        [
            str(cli),
            "run",
            "--dir",
            str(tiny_export.out / "savedmodel/1"),
            "--tag_set",
            "serve",
            "--signature_def",
            "serving_default",
            "--inputs",
            f"token_ids={tmp_path / 'ids.npy'};padding_mask={tmp_path / 'mask.npy'}",
            "--outdir",
            str(tmp_path / "o"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    assert np.load(tmp_path / "o" / "hidden_states.npy").shape == (2, 9, 128)


@pytest.mark.parametrize("name", ["mha"])  # decoder-small: test_precision's export checks the same, fp32 included
def test_presets_export_and_agree(name, tmp_path):
    result = attnkit.export(name, tmp_path / name, formats="onnx")
    assert result.report.ok
    worst = max(a.rel_l2 for r in result.report.results for a in r.agreements)
    assert worst <= 1e-5


@pytest.mark.slow
@pytest.mark.parametrize("name", ["encoder-base", "seq2seq-base"])
def test_large_presets_export_and_agree(name, tmp_path):
    result = attnkit.export(name, tmp_path / name)
    assert result.report.ok


def test_mixed_precision_savedmodel_and_fp32_onnx(tmp_path):
    result = attnkit.export("encoder-tiny", tmp_path / "bf16", precision="bf16")
    m = result.manifest
    assert m.artifact("savedmodel").precision == "bf16"
    assert m.artifact("onnx").precision == "fp32"
    summary = result.report.summary()
    assert 1e-4 < summary[("savedmodel", "bf16")]["rel_l2"] < 3e-2  # really bf16, within its tolerance
    assert summary[("onnxruntime", "fp32")]["rel_l2"] <= 1e-5
    model = onnx.load(result.out / "model.onnx")
    types = {i.data_type for i in model.graph.initializer}
    assert onnx.TensorProto.BFLOAT16 not in types and onnx.TensorProto.FLOAT16 not in types


def _user_model(rng_seed=0):
    """Two named int inputs, an embedding, a custom layer from tests/custom_layers_src.py."""
    sys.path.insert(0, str(HERE))
    import custom_layers_src

    ids = keras.Input((None,), dtype="int32", name="word_ids")
    seg = keras.Input((None,), dtype="int32", name="segment_ids")
    x = custom_layers_src.ScaledSum(0.5)(keras.layers.Embedding(50, 16)(ids), keras.layers.Embedding(3, 16)(seg))
    x = keras.layers.Dense(8, activation="gelu", name="proj")(x)
    pooled = keras.layers.GlobalAveragePooling1D(name="pool")(x)
    return keras.Model([ids, seg], {"tokens": x, "pooled": pooled}, name="user")


def _unregister(key="usermodels>ScaledSum"):
    keras.saving.get_custom_objects().pop(key, None)


def test_user_model_with_custom_layer_needs_import(tmp_path):
    model = _user_model()
    path = tmp_path / "user.keras"
    model.save(path)
    _unregister()
    with pytest.raises(ModelError, match="imports"):
        attnkit.export(str(path), tmp_path / "out")
    result = attnkit.export(str(path), tmp_path / "out", imports=(str(HERE / "custom_layers_src.py"),))
    spec = result.manifest.spec
    assert spec.input_names == ["word_ids", "segment_ids"]
    assert sorted(spec.output_names) == ["pooled", "tokens"]
    assert result.report.ok
    session = ort.InferenceSession(str(result.out / "model.onnx"))
    assert sorted(o.name for o in session.get_outputs()) == ["pooled", "tokens"]
    # verify re-imports the module recorded in the manifest
    _unregister()
    assert attnkit.verify(result.out).ok


def test_lambda_model_needs_unsafe(tmp_path):
    x = keras.Input((None, 4), name="x")
    y = keras.layers.Lambda(lambda t: t * 3.0)(x)
    path = tmp_path / "lam.keras"
    keras.Model(x, y).save(path)
    with pytest.raises(ModelError, match="unsafe"):
        attnkit.export(str(path), tmp_path / "out")
    result = attnkit.export(str(path), tmp_path / "out", unsafe=True, formats="onnx")
    assert result.report.ok


def test_failed_export_keeps_existing_directory(tiny_export, tmp_path, monkeypatch):
    out = tmp_path / "keep"
    shutil.copytree(tiny_export.out, out)
    before = sha256_path(out)

    def boom(*a, **k):
        raise RuntimeError("simulated crash in the middle of the export")

    monkeypatch.setattr("attnkit.exporters.onnx.convert", boom)
    with pytest.raises(RuntimeError):
        attnkit.export("mha", out, force=True)
    assert sha256_path(out) == before
    assert [p.name for p in tmp_path.iterdir()] == ["keep"]


def test_disagreement_fails_but_writes_the_directory(tmp_path, monkeypatch):
    from attnkit.core import compare

    strict = dict(compare.DEFAULT_TOLERANCES)
    strict["fp32"] = compare.Tolerance(atol=0.0, rtol=0.0, rel_l2=0.0, min_cosine=1.0)
    monkeypatch.setattr(compare, "DEFAULT_TOLERANCES", strict)
    monkeypatch.setattr("attnkit.checks.agreement.DEFAULT_TOLERANCES", strict)
    with pytest.raises(AgreementError) as e:
        attnkit.export("encoder-tiny", tmp_path / "x", formats="onnx")
    assert not e.value.report.ok
    m = json.loads((tmp_path / "x" / "manifest.json").read_text())
    assert m["artifacts"][1]["agreement"]["passed"] is False


def test_preset_weights_are_deterministic_per_seed():
    a = get_preset("mha").build(seed=1).get_weights()[0]
    b = get_preset("mha").build(seed=1).get_weights()[0]
    c = get_preset("mha").build(seed=2).get_weights()[0]
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_a_captured_constant_is_written_into_the_onnx_graph():
    """A tensor the traced function captures that is not a variable (Gemma's backbone scales its embeddings by a
    constant computed eagerly while the functional model was built) is left by tf2onnx as a graph input the
    caller cannot feed; attnkit writes its value in, so the graph takes only the spec's inputs and computes
    the captured constant's product."""
    import onnxruntime as ort
    import tensorflow as tf

    from attnkit.core.spec import ExportSpec, TensorSpec
    from attnkit.exporters.onnx import convert

    rng = np.random.default_rng(7)
    scale = tf.constant(rng.uniform(1.5, 3.0, size=(4,)).astype("float32"))

    @tf.function(input_signature=[tf.TensorSpec([None, 4], tf.float32, name="x")], autograph=False)
    def fn(x):
        return {"y": tf.identity(x * scale, name="y")}

    spec = ExportSpec("captured", (TensorSpec("x", "float32", (None, 4), ("batch", None)),),
                      (TensorSpec("y", "float32", (None, 4), ("batch", None)),))  # fmt: skip
    model = convert(fn, spec)
    assert [i.name for i in model.graph.input] == ["x"]
    x = rng.standard_normal((3, 4)).astype("float32")
    (y,) = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})
    np.testing.assert_allclose(y, x * scale.numpy(), rtol=1e-6)


def test_the_transpose_pass_is_left_out_only_while_asked():
    """Decode steps convert without tf2onnx's TransposeOptimizer (it ran gpt2-124m's step out of memory);
    tf2onnx's optimizer list is the same, in the same order, afterwards, even when the conversion fails."""
    from tf2onnx import optimizer

    from attnkit.exporters.onnx import _without_transpose_pass

    before = list(optimizer._optimizers)
    assert "optimize_transpose" in before
    with pytest.raises(RuntimeError, match="inside"):
        with _without_transpose_pass():
            assert "optimize_transpose" not in optimizer._optimizers
            raise RuntimeError("inside")
    assert list(optimizer._optimizers) == before


def test_the_frugal_freeze_gives_tf2onnx_the_graph_its_own_freeze_gives():
    """attnkit freezes variables without TensorFlow's concrete-function round trip (it ran Gemma 3 270M out of
    memory): on an attention model the ONNX graph has the same ops and weights as with tf2onnx's own freeze,
    and onnxruntime's outputs are bit-identical; tf2onnx's loader is its own again afterwards."""
    import collections

    import tensorflow as tf
    import tf2onnx
    from tf2onnx import tf_loader

    from attnkit.exporters.onnx import _from_function, _frugal_freeze

    keras.utils.set_random_seed(5)
    x_in = keras.Input((None, 16), name="x")
    h = keras.layers.MultiHeadAttention(num_heads=2, key_dim=8)(x_in, x_in)
    model = keras.Model(x_in, keras.layers.Dense(16, activation="gelu")(h))
    fn = tf.function(lambda x: model(x), input_signature=[tf.TensorSpec([None, None, 16], tf.float32, name="x")])
    own = tf_loader.from_function
    theirs = _from_function(tf2onnx, fn, 17)
    with _frugal_freeze():
        assert tf_loader.from_function is not own
        ours = _from_function(tf2onnx, fn, 17)
    assert tf_loader.from_function is own

    def ops(m):
        return collections.Counter(n.op_type for n in m.graph.node)

    def weights(m):
        return sorted(onnx.numpy_helper.to_array(t).tobytes() for t in m.graph.initializer)

    assert ops(ours) == ops(theirs) and ops(ours)["MatMul"] >= 3
    assert weights(ours) == weights(theirs)
    x = np.random.default_rng(8).standard_normal((2, 7, 16)).astype("float32")
    run = [ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"]) for m in (ours, theirs)]
    a, b = (s.run(None, {s.get_inputs()[0].name: x})[0] for s in run)
    np.testing.assert_array_equal(a, b)
    assert np.abs(a).max() > 0.1
