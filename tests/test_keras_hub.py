"""keras-hub CausalLM generation (issue 20): models built from config with random weights (no downloads),
saved to .keras and loaded back as a user would, exported with --generate, and compared token by token with
keras-hub's own ``generate()`` (greedy sampler) on ragged batches — through the SavedModel ``generate``
signature, the ONNX decode loop, onnxruntime-genai and (Llama 3) OpenVINO and OpenVINO GenAI. GPT-2 (learned positions), OPT, and Llama 3 (rotary
positions, grouped-query attention: 4 query heads over 2 key/value heads), and BART (Seq2SeqLM)."""

from __future__ import annotations

import contextlib
import importlib.util
import json
import shutil

import numpy as np
import pytest
from test_cli import assert_one_line_error, run

import attnkit
from attnkit.core.errors import ArtifactError
from attnkit.models.keras_hub import independent_weights

keras_hub = pytest.importorskip("keras_hub", reason="keras-hub is not installed (pip install 'attnkit[keras-hub]')")

VOCAB, MAX_LEN = 384, 96
HAS_OPENVINO_GENAI = importlib.util.find_spec("openvino_genai") is not None
SEEDS = {"gpt2": 21, "opt": 22, "llama3": 23}


def _build(family: str, seed: int):
    import keras

    keras.utils.set_random_seed(seed)
    m = keras_hub.models
    if family == "gpt2":
        backbone = m.GPT2Backbone(vocabulary_size=VOCAB, num_layers=2, num_heads=4, hidden_dim=64,
                                  intermediate_dim=128, max_sequence_length=MAX_LEN)  # fmt: skip
        # with a preprocessor attached, as keras-hub presets come: attnkit works on token ids and sets it aside;
        # its tokenizer's end token becomes onnxruntime-genai's eos_token_id
        vocabulary = {"a": 1, "b": 2, "ab": 3, "<|endoftext|>": VOCAB - 1}
        tokenizer = m.GPT2Tokenizer(vocabulary=vocabulary, merges=["a b"])
        preprocessor = m.GPT2CausalLMPreprocessor(tokenizer=tokenizer, sequence_length=16)
        return m.GPT2CausalLM(backbone=backbone, preprocessor=preprocessor)
    if family == "opt":
        backbone = m.OPTBackbone(vocabulary_size=VOCAB, num_layers=2, num_heads=4, hidden_dim=64,
                                 intermediate_dim=128, max_sequence_length=MAX_LEN)  # fmt: skip
        return m.OPTCausalLM(backbone=backbone, preprocessor=None)
    backbone = m.Llama3Backbone(vocabulary_size=VOCAB, num_layers=2, num_query_heads=4, num_key_value_heads=2,
                                hidden_dim=64, intermediate_dim=128)  # fmt: skip
    return m.Llama3CausalLM(backbone=backbone, preprocessor=None)


def _ragged(batch: int, longest: int, seed: int):
    rng = np.random.default_rng(seed)
    lengths = np.array([longest] + list(rng.integers(longest // 2, longest, size=batch - 1)))
    mask = (np.arange(longest)[None, :] < lengths[:, None]).astype("int32")
    ids = np.where(mask == 1, rng.integers(1, VOCAB, size=(batch, longest)), 0).astype("int32")
    return ids, mask, lengths


def _keras_hub_greedy(path, ids, mask, lengths, n):
    """keras-hub's own generate() on the reloaded .keras, padded to the last new token (keras-hub's way)."""
    import keras

    model = keras.saving.load_model(path)
    model.preprocessor = None  # token ids in and out
    model.compile(sampler="greedy")
    width = int(lengths.max()) + n
    pad = ((0, 0), (0, width - ids.shape[1]))
    out = model.generate({"token_ids": np.pad(ids, pad), "padding_mask": np.pad(mask, pad)}, stop_token_ids=None)
    tokens = np.asarray(out["token_ids"])
    return np.stack([tokens[b, k : k + n] for b, k in enumerate(lengths)])


# OPT is GPT-2's shape (learned positions, MHA): checked with --runslow, so the suite stays near 10 minutes
OPT = pytest.param("opt", marks=pytest.mark.slow(reason="OPT, a third keras-hub family shaped like GPT-2"))


@pytest.fixture(scope="module", params=["gpt2", OPT, "llama3"])
def hub_export(request, tmp_path_factory):
    family = request.param
    path = tmp_path_factory.mktemp("hub") / f"{family}.keras"
    model = _build(family, seed=SEEDS[family])
    # keras-hub's cloned initializers give Llama equal key and value kernels: a rewrite that swapped them would agree
    independent_weights(model, SEEDS[family])
    model.save(path)
    out = tmp_path_factory.mktemp("hub_exports") / family
    # Llama 3 (GQA, rotary, positions by slot) also goes through OpenVINO: one export, checked once
    formats = "savedmodel,onnx,openvino" if family == "llama3" and HAS_OPENVINO_GENAI else "savedmodel,onnx"
    return family, str(path), attnkit.export(str(path), out, formats=formats, generate=True)


def test_export_check_is_token_exact_against_keras_hub_generate(hub_export):
    """The export-time check: keras-hub's generate() (keras/generate), SavedModel, ONNX and
    onnxruntime-genai all give the full-recompute reference's tokens on a ragged batch, 32 new tokens."""
    family, _, result = hub_export
    report = result.report.generation
    assert report.batch > 1 and len(set(report.prompt_lengths)) > 1 and report.max_new_tokens >= 32
    checks = {c.label: c for c in report.checks}
    required = {"keras/generate", "keras", "savedmodel", "savedmodel/generate", "onnxruntime",
                "onnxruntime-genai/generate"}  # fmt: skip
    assert required <= set(checks), sorted(checks)
    for label in required:
        c = checks[label]
        assert c.passed and c.token_match == 1.0 and c.first_mismatch is None, (family, c)
    assert checks["onnxruntime"].rel_l2 < 1e-5 and checks["onnxruntime"].steps_compared == 32


def test_saved_artifacts_equal_keras_hub_generate_on_new_prompts(hub_export):
    """As a user checks it: the reloaded .keras's generate() vs the SavedModel's generate signature and
    onnxruntime-genai's Generator on prompts drawn here (other lengths and seed than the export's check)."""
    import onnxruntime_genai as og
    import tensorflow as tf

    family, path, result = hub_export
    ids, mask, lengths = _ragged(batch=3, longest=11, seed=7)
    n = 33
    expected = _keras_hub_greedy(path, ids, mask, lengths, n)

    sig = tf.saved_model.load(str(result.out / "savedmodel/1")).signatures["generate"]
    got = sig(token_ids=tf.constant(ids), padding_mask=tf.constant(mask), max_new_tokens=tf.constant(n),
              eos_id=tf.constant(-1))["output_ids"].numpy()  # fmt: skip
    np.testing.assert_array_equal(got, expected, err_msg=f"{family}: SavedModel generate")

    model = og.Model(str(result.out))
    for b, k in enumerate(lengths):
        params = og.GeneratorParams(model)
        params.set_search_options(max_length=int(k) + n, do_sample=False)
        gen = og.Generator(model, params)
        gen.append_tokens(ids[b : b + 1, :k])
        while not gen.is_done():
            gen.generate_next_token()
        tokens = np.asarray(gen.get_sequence(0))[k:]
        eos = json.loads((result.out / "genai_config.json").read_text())["model"]["eos_token_id"]
        stop = int(np.argmax(expected[b] == eos)) + 1 if (expected[b] == eos).any() else n  # genai stops on eos
        np.testing.assert_array_equal(tokens[:stop], expected[b, :stop], err_msg=f"{family}: genai row {b}")


@pytest.mark.parametrize("kv_heads", [4, 2, 1])
def test_keras_attention_op_is_traced_as_matmuls_with_the_same_answers(kv_heads):
    """keras.ops.dot_product_attention as the step traces it (MatMuls over (batch, heads, sequence, depth),
    keys and values repeated for grouped queries) gives Keras's own answers, masked or not; with one
    key/value head, where Keras's TensorFlow op cannot broadcast, it gives the answers of the heads repeated
    by hand. Gemma's attention layer takes keras-hub's fused-op path only while the step is traced."""
    import keras

    from attnkit.models.keras_hub_trace import _attention_as_matmuls, keras_attention_op

    rng = np.random.default_rng(kv_heads)
    q = rng.standard_normal((2, 3, 4, 8)).astype("float32")
    k, v = (rng.standard_normal((2, 5, kv_heads, 8)).astype("float32") for _ in range(2))
    mask = rng.random((2, 1, 3, 5)) < 0.7
    mask[..., 0] = True  # every query attends somewhere
    original = keras.ops.dot_product_attention
    for m in (None, mask):
        got = np.asarray(_attention_as_matmuls(original, q, k, v, mask=m, scale=0.3))
        kk, vv = (np.repeat(t, 4 // kv_heads, axis=2) for t in (k, v)) if kv_heads == 1 else (k, v)
        want = np.asarray(original(q, kk, vv, mask=m, scale=0.3))
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)

    backbone = keras_hub.models.GemmaBackbone(vocabulary_size=VOCAB, num_layers=1, num_query_heads=4,
                                              num_key_value_heads=kv_heads, hidden_dim=32, intermediate_dim=64,
                                              head_dim=8)  # fmt: skip
    layer = backbone.transformer_layers[0].attention
    assert layer._use_fused_attention_op() is False  # keras-hub's TensorFlow path: its own 5-D einsum
    with keras_attention_op(backbone):
        assert layer._use_fused_attention_op() is True and keras.ops.dot_product_attention is not original
    assert layer._use_fused_attention_op() is False and keras.ops.dot_product_attention is original


def test_step_graph_is_per_layer_past_present_with_kv_heads(hub_export):
    """The ONNX step keeps keras-hub's key/value head count (GQA: 2 for Llama 3's 4 query heads) and takes
    no padding mask (slot positions)."""
    from attnkit.exporters.signatures import onnx_signature

    family, _, result = hub_export
    g = result.manifest.generation.spec
    assert g.positions == "slot" and g.num_layers == 2 and g.depth == 16
    eos = json.loads((result.out / "genai_config.json").read_text())["model"]["eos_token_id"]
    assert eos == (VOCAB - 1 if family == "gpt2" else 0)  # the attached tokenizer's end token, else 0
    assert g.num_heads == (2 if family == "llama3" else 4)
    io = {s.name: s for s in onnx_signature(result.out / "decoder_with_past.onnx")}
    assert io["past_key_values.1.key"].shape == (-1, g.num_heads, -1, 16)
    assert "padding_mask" not in io and io["present.0.value"].mode == "output"
    # keras-hub's slice_update of the new keys/values is lowered to Slice + Concat (slice_update_as_concat): no
    # ScatterND, whose index grids made gpt2-small's step 771 nodes (608 without them)
    import onnx

    ops = [
        n.op_type for n in onnx.load(str(result.out / "decoder_with_past.onnx"), load_external_data=False).graph.node
    ]
    assert "ScatterND" not in ops, sorted(set(ops))
    # the rotary cosines once a step, not once per layer's queries and keys (once_per_step)
    assert ops.count("Cos") == (1 if family == "llama3" else 0), ops.count("Cos")


def test_genai_config_that_no_longer_matches_is_refused(hub_export, tmp_path):
    from attnkit.exporters import genai

    _, _, result = hub_export
    copy = tmp_path / "copy"
    shutil.copytree(result.out, copy)
    config = json.loads((copy / "genai_config.json").read_text())
    config["model"]["decoder"]["num_hidden_layers"] = 3
    (copy / "genai_config.json").write_text(json.dumps(config))
    with pytest.raises(ArtifactError, match="num_hidden_layers"):
        genai.check(copy, result.manifest.generation.spec, "decoder_with_past.onnx")
    code, out = run("verify", str(copy), "--generate")  # the manifest's hash catches it first, in one line
    assert_one_line_error(code, out, "genai_config.json")


def test_too_many_tokens_is_a_one_line_error(hub_export):
    family, _, result = hub_export
    if family != "gpt2":
        pytest.skip("checked once, on GPT-2")
    code, out = run("verify", str(result.out), "--generate", "--max-prompt-length", "64", "--max-new-tokens", "40")
    assert_one_line_error(code, out, "--max-prompt-length")


def test_data_texts_go_through_the_models_own_tokenizer(hub_export, tmp_path):
    """--data texts.txt: GPT-2 (saved with its preprocessor) tokenises them as its preprocessor does (start token,
    then BPE ids), and verify checks every runner on them; Llama 3 saved without one refuses texts in one line."""
    import keras

    from attnkit.runtimes.base import Source

    family, path, result = hub_export
    texts = ["abab", "aab", "babba", "ab", "bbbb", "abba"]
    (tmp_path / "t.txt").write_text("\n".join(texts) + "\n")
    if family != "gpt2":
        code, out = run("verify", str(result.out), "--data", str(tmp_path / "t.txt"))
        assert_one_line_error(code, out, "carries no tokenizer")
        return
    data = Source(result.out).data(tmp_path / "t.txt")
    preprocessor = keras.saving.load_model(path).preprocessor
    want = preprocessor.generate_preprocess(texts)  # keras-hub's own: start token, ids, padded to its length
    for i in range(len(texts)):
        n = int(data.arrays["padding_mask"][i].sum())
        assert n == int(np.asarray(want["padding_mask"][i]).sum()) > 1
        np.testing.assert_array_equal(data.arrays["token_ids"][i, :n], np.asarray(want["token_ids"][i])[:n])
    assert data.texts["tokenizer"] == "GPT2Tokenizer" and data.texts["start_token"] == VOCAB - 1
    code, out = run("verify", str(result.out), "--data", str(tmp_path / "t.txt"), "--backends", "onnxruntime",
                    "--json", str(tmp_path / "r.json"))  # fmt: skip
    assert code == 0, out
    record = json.loads((tmp_path / "r.json").read_text())["data"]
    assert record["texts"]["texts"] == len(texts) and record["held_out_rows"] == len(texts) - 3
    assert {c["backend"] for c in record["checks"]} == {"onnxruntime"} and all(c["passed"] for c in record["checks"])


@pytest.fixture(scope="module")
def bart_export(tmp_path_factory):
    import keras

    keras.utils.set_random_seed(24)
    backbone = keras_hub.models.BartBackbone(vocabulary_size=VOCAB, num_layers=1, num_heads=4, hidden_dim=64,
                                             intermediate_dim=128, max_sequence_length=MAX_LEN)  # fmt: skip
    path = tmp_path_factory.mktemp("hub") / "bart.keras"
    model = keras_hub.models.BartSeq2SeqLM(backbone=backbone, preprocessor=None)
    independent_weights(model, 24)
    model.save(path)
    return str(path), attnkit.export(str(path), tmp_path_factory.mktemp("hub_exports") / "bart", generate=True)


def test_bart_seq2seq_is_token_exact_against_keras_hub_generate(bart_export):
    """BartSeq2SeqLM: encoder.onnx / the encode signature give the cross-attention cache; the step reuses it
    beside the growing self-attention cache; tokens equal keras-hub's generate() and full recompute."""
    import keras
    import tensorflow as tf

    path, result = bart_export
    g = result.manifest.generation.spec
    assert g.seq2seq and g.positions == "slot" and g.ids == "decoder_token_ids"
    assert (result.out / "encoder.onnx").is_file() and not (result.out / "genai_config.json").exists()
    checks = {c.label: c for c in result.report.generation.checks}
    for label in ("keras/generate", "keras", "savedmodel", "savedmodel/generate", "onnxruntime"):
        assert checks[label].passed and checks[label].token_match == 1.0, checks[label]
    code, out = run("verify", result.out, "--generate", "--backends", "onnxruntime-genai")  # decoder-only
    assert_one_line_error(code, out, "--backends", "decoder-only")
    # the reloaded .keras's own generate() vs the SavedModel's generate signature, on prompts drawn here
    ids, mask, lengths = _ragged(batch=3, longest=6, seed=8)
    src, src_mask, _ = _ragged(batch=3, longest=12, seed=9)
    n = 32
    model = keras.saving.load_model(path)
    model.compile(sampler="greedy")
    pad = ((0, 0), (0, int(lengths.max()) + n - ids.shape[1]))
    out = model.generate({"encoder_token_ids": src, "encoder_padding_mask": src_mask,
                          "decoder_token_ids": np.pad(ids, pad), "decoder_padding_mask": np.pad(mask, pad)},
                         stop_token_ids=None)  # fmt: skip
    expected = np.stack([np.asarray(out["decoder_token_ids"])[b, k : k + n] for b, k in enumerate(lengths)])
    sig = tf.saved_model.load(str(result.out / "savedmodel/1")).signatures["generate"]
    got = sig(decoder_token_ids=tf.constant(ids), decoder_padding_mask=tf.constant(mask),
              encoder_token_ids=tf.constant(src), encoder_padding_mask=tf.constant(src_mask),
              max_new_tokens=tf.constant(n), eos_id=tf.constant(-1))["output_ids"].numpy()  # fmt: skip
    np.testing.assert_array_equal(got, expected)


def test_openvino_stateful_and_genai_on_keras_hub_llama3(hub_export):
    """keras-hub Llama 3 (GQA, rotary, positions by cache slot) through OpenVINO: the step IR, the stateful
    decoder, and OpenVINO GenAI's LLMPipeline on its layout (an attention_mask it may set and the graph
    ignores) — every token of a ragged batch equal to eager full recompute, the step logits within fp32's;
    continuous batching (paged attention) on the positions made an input, every token too."""
    family, _, result = hub_export
    if family != "llama3":
        pytest.skip("checked once, on Llama 3")
    if not HAS_OPENVINO_GENAI:
        pytest.skip("needs the openvino extra (pip install 'attnkit[openvino]')")
    report = result.report.generation
    assert report.batch > 1 and len(set(report.prompt_lengths)) > 1 and report.max_new_tokens >= 32
    checks = {c.label: c for c in report.checks}
    for label in ("openvino", "openvino-stateful", "openvino-genai/generate"):
        c = checks[label]
        assert c.passed and c.token_match == 1.0 and c.first_mismatch is None, (label, c)
    assert checks["openvino-stateful"].rel_l2 < 1e-5
    # keras-hub's explicit softmax attention became one ScaledDotProductAttention per layer in the step IR, and
    # OpenVINO's CPU plugin compiled each, with the cache read and appended inside the node (its own
    # ScaledDotProductAttentionWithKVCache), into the stateful decoder: asked of the compiled model
    import openvino as ov

    from attnkit.exporters.openvino_attention import fuse_attention

    generation = result.manifest.generation
    stateful = generation.artifact("decoder_stateful", "openvino")
    layers = generation.spec.num_layers
    assert stateful.extra["fused_attention"] == layers == stateful.extra["softmax"]
    core = ov.Core()
    xml = str(result.out / stateful.path / "model.xml")
    assert fuse_attention(core.read_model(xml), {}).softmax == 0  # no Softmax left in the written IR
    compiled = core.compile_model(xml, "CPU", {"INFERENCE_PRECISION_HINT": "f32", "PERF_COUNT": True})
    request = compiled.create_infer_request()
    ids = np.random.default_rng(3).integers(1, 100, (1, 3))
    request.infer({"token_ids": ids.astype(compiled.input("token_ids").get_element_type().to_dtype()),
                   "beam_idx": np.zeros(1, np.int32), "position_ids": np.arange(3)[None]})  # fmt: skip
    kinds = [info.node_type for info in request.profiling_info]
    assert kinds.count("ScaledDotProductAttentionWithKVCache") == layers, sorted(set(kinds))
    # keras-hub's stacked rotate-half, rewritten as transformers writes it: one RoPE node per query and key
    assert stateful.extra["rotary_rewritten"] == 2 * layers
    assert kinds.count("RoPE") == 2 * layers, sorted(set(kinds))
    # each rotated before its Transpose to attention's layout, which the RoPE node then absorbs: only the values'
    # and the output's Transposes are left a layer (the peers' IR has those two too), none on a RoPE's output
    assert stateful.extra["rotary_transposed"] == 2 * layers
    runtime = compiled.get_runtime_model()
    layer_type = {op.get_friendly_name(): op.get_rt_info()["layerType"].astype(str) for op in runtime.get_ops()}
    after_rope = [op for op in runtime.get_ops() if layer_type[op.get_friendly_name()] == "Transpose"
                  and layer_type[op.input_value(0).get_node().get_friendly_name()] == "RoPE"]  # fmt: skip
    assert not after_rope and kinds.count("Transpose") <= 2 * layers, kinds.count("Transpose")
    # and its RMS norms (two a layer and the final one), reassociated as OpenVINO's RMSFusion matches them
    assert stateful.extra["rms_rewritten"] == 2 * layers + 1 == kinds.count("RMS"), sorted(set(kinds))
    # its positions by cache slot became a position_ids input of the stateful IR (the causal mask still reads the
    # cache's length), so OpenVINO's paged-attention rewrite takes it: one PagedAttention a layer, and GenAI's
    # continuous batching (each row of the ragged batch one request) gave every token of the eager decode
    from openvino._offline_transformations import paged_attention_transformation

    assert {n for port in compiled.inputs for n in port.get_names()} >= {"token_ids", "beam_idx", "position_ids"}
    extra = generation.artifact("decoder_genai", "openvino").extra
    assert extra["paged_attention"] is True and "paged_attention_refused" not in extra
    cb = checks["openvino-genai-cb/generate"]
    assert cb.passed and cb.token_match == 1.0 and cb.first_mismatch is None, cb
    genai_dir = result.out / generation.artifact("decoder_genai", "openvino").path
    paged = core.read_model(str(genai_dir / "openvino_model.xml"))
    paged_attention_transformation(paged)
    assert [op.get_type_name() for op in paged.get_ops()].count("PagedAttentionExtension") == layers


def test_openvino_attention_fusion_is_proven_or_refused(hub_export, tmp_path, monkeypatch):
    """Each family's traced attention (GPT-2: Keras's MultiHeadAttention, scores as tf2onnx's (k q^T)^T; Llama 3:
    keras-hub's GQA with rotary) becomes one ScaledDotProductAttention per layer, every cache a concat in
    (batch, heads, sequence, depth), and the fused step gives the unfused step's outputs. A rewrite that got the
    attention wrong (here: its scale doubled) is caught by that comparison, and the step IR is left as it was."""
    if not HAS_OPENVINO_GENAI:
        pytest.skip("needs the openvino extra (pip install 'attnkit[openvino]')")
    import openvino as ov

    from attnkit.exporters import openvino_attention as fusion

    family, _, result = hub_export
    g = result.manifest.generation.spec
    pairs = g.past_from_present()
    xml = tmp_path / "model.xml"
    ov.save_model(ov.convert_model(str(result.out / "decoder_with_past.onnx")), str(xml), compress_to_fp16=False)
    core = ov.Core()
    model = core.read_model(str(xml))
    done = fusion.fuse_attention(model, pairs)
    assert done.attention == done.softmax == g.num_layers and done.caches == 2 * g.num_layers, (family, done)
    llama = family == "llama3"  # GPT-2: no rotary, LayerNorm
    assert (done.rotary, done.rms) == ((2 * g.num_layers, 2 * g.num_layers + 1) if llama else (0, 0)), (family, done)
    assert done.rotary_transposed == done.rotary, (family, done)
    kinds = [op.get_type_name() for op in model.get_ops()]
    assert kinds.count("ScaledDotProductAttention") == g.num_layers and "Softmax" not in kinds
    assert fusion.agrees(core.read_model(str(xml)), model, pairs, g.ids, None) is None
    # the bytes a step streams leave out the token table, only gathered from (GPT-2 also reads its shape)
    from attnkit.exporters.openvino import streamed_weight_bytes

    weights = sum(op.get_byte_size() for op in core.read_model(str(xml)).get_ops()
                  if op.get_type_name() == "Constant" and op.get_output_partial_shape(0).rank.get_length() >= 2)  # fmt: skip
    assert weights - streamed_weight_bytes(xml) >= VOCAB * 64 * 4, family

    right = fusion._scores
    doubled = lambda m: m and (m[0], 2 * m[1], *m[2:])  # noqa: E731 (a wrong scale: the proof must refuse it)
    monkeypatch.setattr(fusion, "_scores", lambda out, bias_allowed=True: doubled(right(out, bias_allowed)))
    before = xml.read_bytes()
    record = fusion.fuse_ir(xml, pairs, g.ids, None)
    assert record["fused_attention"] == 0 and "logits differs" in record["fusion_refused"], record
    assert xml.read_bytes() == before and not list(tmp_path.glob("*.fused.*"))


def test_attention_maps_are_read_inside_keras_hub_backbones(hub_export, tmp_path):
    """A keras-hub backbone calls its attention layers inside its own call (GPT-2: Keras's cached
    MultiHeadAttention; Llama 3: keras-hub's own layer, 4 query heads over 2 key/value heads). The maps are
    read there for one call: layers numbered in call order, weights that zero padded and future keys, and on
    GPT-2 equal to softmax(q·kᵀ/√d) recomputed here from layer 0's own projections; the model's answers and
    the layer are as before."""
    import keras

    from attnkit.checks.attention_maps import capture
    from attnkit.models import resolve
    from attnkit.models.attention import attention_layers

    family, path, _ = hub_export
    model, spec, _ = resolve(path, seed=0)
    layers = attention_layers(model)
    assert [layer.path for layer in layers] == [f"transformer_layer_{i}/self_attention" for i in range(2)]
    rng = np.random.default_rng(31)
    seq, valid = 10, 7
    mask = (np.arange(seq)[None, :] < valid).astype("int32")
    feeds = {"token_ids": rng.integers(1, VOCAB, size=(1, seq)).astype("int32"), "padding_mask": mask}
    before = np.asarray(model(feeds))
    maps = [capture(model, spec, feeds, i) for i in (0, -1)]
    assert [m.layer for m in maps] == [layer.path for layer in layers] and maps[1].layer_index == 1
    for m in maps:
        w = m.weights
        assert w.shape == (4, seq, seq) and m.valid_length == valid
        np.testing.assert_allclose(w.sum(-1), 1.0, atol=1e-5)
        assert np.triu(w, k=1).max() < 1e-6 and np.abs(w[:, :, valid:]).max() < 1e-6  # future, padded keys
    assert np.abs(maps[0].weights - maps[1].weights).max() > 1e-3  # two layers, two maps
    np.testing.assert_array_equal(np.asarray(model(feeds)), before)
    assert all(not {"_masked_softmax", "_compute_attention"} & set(vars(layer)) for layer in layers)
    if family == "gpt2":
        backbone = model.get_layer("gpt2_backbone")
        x = keras.Model(backbone.inputs, backbone.get_layer("embeddings_dropout").output)(feeds)
        block = backbone.get_layer("transformer_layer_0")
        h = block._self_attention_layer_norm(x)
        attention = block._self_attention_layer
        q, k = (np.asarray(dense(h), dtype="float64") for dense in (attention._query_dense, attention._key_dense))
        logits = np.einsum("bqnh,bknh->bnqk", q, k)[0] / np.sqrt(q.shape[-1])
        logits[:, ~(np.tril(np.ones((seq, seq), bool)) & (mask[0] == 1)[None, :])] = -np.inf
        expected = np.exp(logits - logits.max(-1, keepdims=True))
        np.testing.assert_allclose(maps[0].weights, expected / expected.sum(-1, keepdims=True), atol=2e-6)
    code, out = run("attention", path, "--out", tmp_path / "h.png", "--layer", "-1", "--seq", "12")
    assert code == 0 and "4 heads of transformer_layer_1/self_attention" in out, out
    assert (tmp_path / "h.png").read_bytes()[:4] == b"\x89PNG"
    # bench's memory guard counts the heads of these layers too (Llama's are `num_query_heads`)
    from types import SimpleNamespace

    from attnkit.benchmark.run import _check_memory
    from attnkit.core.errors import AttnkitError

    with pytest.raises(AttnkitError, match=r"\(4 heads\)"):
        _check_memory(SimpleNamespace(keras_model=model), [(1024, 65536)])


def test_locate_maps_layers_inside_a_keras_hub_backbone(hub_export, tmp_path):
    """verify --locate on a keras-hub model: it stopped on a layer without a path (the Softmax Keras builds in
    MultiHeadAttention) and matched no layer of the backbone (its scope is in the ONNX names, not in the layer
    paths). Clean: nothing diverges and the backbone's layers have counterparts; with one FFN weight scaled,
    that layer is the first divergence."""
    from test_precision import _perturb

    from attnkit.checks.locate import locate
    from attnkit.core.compare import DEFAULT_TOLERANCES
    from attnkit.exporters.manifest import Manifest, sha256_path

    family, _, result = hub_export
    if family != "gpt2":
        pytest.skip("checked once, on GPT-2")
    clean = locate(result.out, "fp32", DEFAULT_TOLERANCES["fp32"])
    inside = [e for e in clean.curve if e.layer.startswith("transformer_layer_") and e.onnx_tensor is not None]
    assert clean.first is None and len(inside) >= 8 and all(e.rel_l2 < 1e-5 for e in inside)
    out = tmp_path / "p"
    shutil.copytree(result.out, out)
    _perturb(out / "model.onnx", "transformer_layer_1_1/feedforward_intermediate_dense")
    manifest = Manifest.load(out)
    manifest.artifact("onnx").sha256 = sha256_path(out / "model.onnx")
    manifest.write(out)
    report = locate(out, "fp32", DEFAULT_TOLERANCES["fp32"])
    assert report.first is not None and report.first.layer == "transformer_layer_1/feedforward_intermediate_dense"


@pytest.mark.slow(reason="a fourth keras-hub family, exported through OpenVINO")
def test_gemma_multi_query_decodes_with_fused_attention(tmp_path):
    """keras-hub Gemma (multi-query: 4 query heads over 1 key/value head; attention through Keras's op while
    the step is traced; its forward graph holds an eagerly computed constant): exported with OpenVINO, every
    layer's attention fused, and every backend's tokens equal to eager full recompute."""
    if not HAS_OPENVINO_GENAI:
        pytest.skip("needs the openvino extra (pip install 'attnkit[openvino]')")
    import keras

    keras.utils.set_random_seed(24)
    backbone = keras_hub.models.GemmaBackbone(vocabulary_size=VOCAB, num_layers=2, num_query_heads=4,
                                              num_key_value_heads=1, hidden_dim=64, intermediate_dim=128,
                                              head_dim=16)  # fmt: skip
    path = tmp_path / "gemma.keras"
    model = keras_hub.models.GemmaCausalLM(backbone=backbone, preprocessor=None)
    independent_weights(model, 24)
    model.save(path)
    result = attnkit.export(str(path), tmp_path / "out", formats="onnx,openvino", generate=True)
    checks = {c.label: c for c in result.report.generation.checks}
    for label in ("onnxruntime", "openvino", "openvino-stateful", "openvino-genai/generate"):
        assert checks[label].passed and checks[label].token_match == 1.0, (label, checks[label])
    stateful = result.manifest.generation.artifact("decoder_stateful", "openvino")
    assert stateful.extra["fused_attention"] == stateful.extra["softmax"] == 2
    # its RMS norms square as x * x and scale by a folded 1 + scale: rewritten too (two a layer, the final one)
    assert stateful.extra["rms_rewritten"] == 5 and stateful.extra["rotary_rewritten"] == 4, stateful.extra


@pytest.mark.slow(reason="Gemma 3: a keras-hub family with per-layer caches and sliding-window layers")
def test_gemma3_per_layer_cache_and_sliding_window_decode_with_fused_attention(tmp_path):
    """keras-hub Gemma 3 (its cache one (key, value) pair a layer; five sliding-window layers to one global,
    q/k norms, multi-query): exported with --generate, prompts and new tokens longer than its window of 16, so
    the sliding mask cuts in; every backend's tokens equal eager full recompute and keras-hub's own generate()
    (which takes a text prompt only with zero images), GenAI's paged attention included (each local layer's
    window given to it, the global layer none), and every layer's attention fused for OpenVINO."""
    if not HAS_OPENVINO_GENAI:
        pytest.skip("needs the openvino extra (pip install 'attnkit[openvino]')")
    import keras

    from attnkit.models.keras_hub import CachedCallDecoding

    keras.utils.set_random_seed(25)
    backbone = keras_hub.models.Gemma3Backbone(vocabulary_size=VOCAB, image_size=896, num_layers=6,
                                               num_query_heads=4, num_key_value_heads=1, hidden_dim=64,
                                               intermediate_dim=128, head_dim=16, use_post_ffw_norm=True,
                                               use_post_attention_norm=True, use_sliding_window_attention=True,
                                               sliding_window_size=16)  # fmt: skip
    model = keras_hub.models.Gemma3CausalLM(backbone=backbone, preprocessor=None)
    independent_weights(model, 25)
    decoding = CachedCallDecoding(model)
    assert decoding.per_layer and (decoding.spec.num_layers, decoding.spec.num_heads, decoding.spec.depth) == (6, 1, 16)
    path = tmp_path / "gemma3.keras"
    model.save(path)
    result = attnkit.export(str(path), tmp_path / "out", formats="onnx,openvino", generate=True)
    generation = result.report.generation
    assert max(generation.prompt_lengths) + generation.max_new_tokens > 16  # past the window
    checks = {c.label: c for c in generation.checks}
    for label in ("keras/generate", "onnxruntime", "openvino", "openvino-stateful", "openvino-genai/generate",
                  "openvino-genai-cb/generate"):  # fmt: skip
        assert checks[label].passed and checks[label].token_match == 1.0, (label, checks[label])
    assert result.manifest.generation.artifact("decoder_genai", "openvino").extra["paged_attention"] is True
    stateful = result.manifest.generation.artifact("decoder_stateful", "openvino")
    assert stateful.extra["fused_attention"] == stateful.extra["softmax"] == 6
    assert stateful.extra["rotary_rewritten"] == 12, stateful.extra


def test_sliding_window_mask_by_position_is_keras_hubs_mask():
    """The sliding-window mask computed from positions (query_len x L) is keras-hub's own band (L x L, sliced)
    element for element: inside and past the window, one and several query rows, a padded key; keras-hub's
    method is back afterwards."""
    from attnkit.models.keras_hub_trace import sliding_window_by_position

    backbone = keras_hub.models.Gemma3Backbone(vocabulary_size=VOCAB, image_size=896, num_layers=1,
                                               num_query_heads=2, num_key_value_heads=1, hidden_dim=32,
                                               intermediate_dim=64, head_dim=16, use_sliding_window_attention=True,
                                               sliding_window_size=6)  # fmt: skip
    model = keras_hub.models.Gemma3CausalLM(backbone=backbone, preprocessor=None)
    (layer,) = [x for x in model._flatten_layers() if hasattr(type(x), "_mask_sliding_window")]
    rng = np.random.default_rng(12)
    cases = [(1, 4), (1, 5), (1, 6), (1, 23), (3, 23), (7, 7), (2, 40)]  # (new, key_len): window 6
    for new, key_len in cases:
        mask = rng.random((2, new, key_len)) > 0.1
        theirs = np.asarray(layer._mask_sliding_window(mask, cache_update_index=key_len - new))
        with sliding_window_by_position(model):
            ours = np.asarray(layer._mask_sliding_window(mask, cache_update_index=key_len - new))
        np.testing.assert_array_equal(ours, theirs, err_msg=f"{new} new of {key_len}")
        if key_len > 6:
            assert not ours[:, -1, 0].any()  # the first key is outside the last query's window
    assert "_mask_sliding_window" not in vars(layer)


def test_causal_mask_windows_and_rotary_are_computed_once_a_step(monkeypatch):
    """keras-hub recomputes the causal mask in every decoder block and the rotary cosines for every layer's
    queries and keys; traced through :func:`once_per_step`, a step computes each once (one causal mask, one
    sliding-window mask per window, one cosine per rotary config: Gemma 3's local and global layers differ),
    with logits equal to the step traced the way keras-hub computes it, and keras-hub's functions back after."""
    import tensorflow as tf
    from keras_hub.src.layers.modeling import transformer_layer_utils
    from keras_hub.src.models.gemma3 import gemma3_decoder_block

    from attnkit.models import keras_hub_trace
    from attnkit.models.keras_hub import CachedCallDecoding

    backbone = keras_hub.models.Gemma3Backbone(vocabulary_size=VOCAB, image_size=896, num_layers=7,
                                               num_query_heads=2, num_key_value_heads=1, hidden_dim=32,
                                               intermediate_dim=64, head_dim=16, use_sliding_window_attention=True,
                                               sliding_window_size=6)  # fmt: skip
    model = keras_hub.models.Gemma3CausalLM(backbone=backbone, preprocessor=None)
    independent_weights(model, 26)
    decoding = CachedCallDecoding(model)
    g = decoding.spec
    rng = np.random.default_rng(26)
    ids = rng.integers(1, VOCAB, (2, 3)).astype("int32")
    past = [tuple(rng.standard_normal((2, g.num_heads, 9, g.depth)).astype("float32") for _ in "kv")
            for _ in range(g.num_layers)]  # fmt: skip
    specs = (tf.TensorSpec((None, None), tf.int32),
             [(tf.TensorSpec((None, g.num_heads, None, g.depth)),) * 2 for _ in range(g.num_layers)])  # fmt: skip

    def traced():
        step = tf.function(lambda ids, past: decoding.step(ids, past=past)[0]).get_concrete_function(*specs)
        kinds = [op.type for op in step.graph.get_operations()]
        return step(tf.constant(ids), [tuple(tf.constant(t) for t in pair) for pair in past]).numpy(), kinds

    ours, kinds = traced()
    assert kinds.count("Cos") == kinds.count("Sin") == 2, kinds.count("Cos")  # local and global rotary configs
    assert kinds.count("GreaterEqual") == 1  # the causal mask's i >= j
    assert kinds.count("Abs") == 1  # the one window's |slot - k|
    monkeypatch.setattr(keras_hub_trace, "once_per_step", lambda model, index: contextlib.nullcontext())
    theirs, every_layer = traced()
    assert every_layer.count("Cos") == 2 * g.num_layers and every_layer.count("GreaterEqual") == g.num_layers
    np.testing.assert_array_equal(ours, theirs)
    original = transformer_layer_utils.compute_causal_mask
    assert gemma3_decoder_block.compute_causal_mask is original
    assert not any("_compute_cos_sin_embedding" in vars(x) or "_mask_sliding_window" in vars(x)
                   for x in model._flatten_layers())  # fmt: skip


@pytest.mark.parametrize(
    "equation, x_shape, kernel_shape, lowered",
    [
        ("btd,dnh->btnh", (2, 3, 8), (8, 4, 5), True),  # keras-hub's query/key/value projections
        ("btnh,nhd->btd", (2, 3, 4, 5), (4, 5, 8), True),  # and the output projection
        ("btd,ndh->btnh", (2, 3, 8), (4, 8, 5), True),  # Gemma's (heads first in the kernel)
        ("btd,df->btf", (2, 3, 8), (8, 6), True),
        ("bi,j->bij", (2, 3), (4,), False),  # not a projection (rotary frequencies): keras's einsum
        ("btd,bd->bt", (2, 3, 8), (2, 8), False),
        ("d,dnh->nh", (8,), (8, 4, 5), False),  # nothing left of the input to keep: keras's einsum
    ],
)
def test_dense_einsums_are_traced_as_one_matmul(equation, x_shape, kernel_shape, lowered):
    """An einsum that projects its input's trailing axes (EinsumDense's) is traced as a MatMul by the kernel as a
    matrix, within fp32 rounding of numpy's einsum, at a batch and sequence length the trace did not know; any
    other einsum is left to Keras; keras.ops.einsum is Keras's own afterwards."""
    import keras
    import tensorflow as tf

    from attnkit.models.keras_hub_trace import _projection, dense_einsums_as_matmuls

    original = keras.ops.einsum
    rng = np.random.default_rng(27)
    x = rng.standard_normal(x_shape).astype("float32")
    kernel = rng.standard_normal(kernel_shape).astype("float32")
    batch_and_length = tf.TensorSpec([None, None] + list(x_shape[2:]))
    spec = [batch_and_length if len(x_shape) > 1 else tf.TensorSpec(x_shape), tf.TensorSpec(kernel_shape)]

    def project(x, kernel):
        with dense_einsums_as_matmuls():
            return keras.ops.einsum(equation, x, kernel)

    traced = tf.function(project, input_signature=spec).get_concrete_function()
    kinds = {op.type for op in traced.graph.get_operations()}
    assert ("Einsum" not in kinds and "BatchMatMulV2" in kinds) if lowered else "BatchMatMulV2" not in kinds, kinds
    np.testing.assert_allclose(traced(x, kernel).numpy(), np.einsum(equation, x, kernel), rtol=1e-5, atol=1e-5)
    assert keras.ops.einsum is original
    # operands of two dtypes are Keras's to cast: passed on
    assert _projection(equation, (tf.zeros(x_shape, tf.float16), tf.zeros(kernel_shape))) is None
