"""Generation exports (issue 11): the decode step with a KV cache, exported, verified token by token and
benchmarked. Tiny attnkit decoders saved as .keras stand for users' models (the presets are the same code
at a larger size); every prompt is freshly drawn from a seed."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from test_cli import assert_one_line_error, run

import attnkit
from attnkit.core.errors import AttnkitError, BackendError, ModelError
from attnkit.core.names import DECODE_STEP, GENERATE
from attnkit.exporters.signatures import onnx_signature, savedmodel_signature
from attnkit.generation.loop import Prompts, decode, recompute, sequence_lengths
from attnkit.runtimes.base import Source
from attnkit.runtimes.registry import runner_class

TINY = {
    "vocab_size": 512,
    "max_length": 96,
    "d_model": 64,
    "num_heads": 4,
    "ffn_dim": 128,
    "activation": "gelu",
    "dropout": 0.0,
    "norm_first": False,
    "attention": "classic",
}


def _save(tmp_path_factory, family: str, seed: int):
    import keras

    from attnkit.models import transformer

    keras.utils.set_random_seed(seed)
    if family == "decoder":
        model = transformer.build_decoder_lm({**TINY, "num_layers": 2}, name="tiny_lm")
    else:
        model = transformer.build_seq2seq({**TINY, "encoder_layers": 2, "decoder_layers": 2}, name="tiny_mt")
    path = tmp_path_factory.mktemp("models") / f"tiny_{family}.keras"
    model.save(path)
    return path


def preset_or_tiny(name: str, tmp_path_factory) -> str:
    """A preset, or "decoder": a 2-layer causal LM saved to .keras, for tests whose logic is the same for any
    decoder (the decoder-small preset's export at every precision is test_precision's)."""
    return name if name != "decoder" else str(_save(tmp_path_factory, "decoder", seed=31))


@pytest.fixture(scope="session")
def lm_export(tmp_path_factory):
    """A 2-layer causal LM (.keras) exported with --generate in fp32, fp16 and int8, checked at export."""
    path = _save(tmp_path_factory, "decoder", seed=11)
    out = tmp_path_factory.mktemp("exports") / "tiny_lm"
    return attnkit.export(str(path), out, precision="fp32,fp16,int8", generate=True)


@pytest.fixture(scope="session")
def mt_export(tmp_path_factory):
    path = _save(tmp_path_factory, "seq2seq", seed=12)
    out = tmp_path_factory.mktemp("exports") / "tiny_mt"
    return attnkit.export(str(path), out, precision="fp32,int8", generate=True)


def _independent_greedy(model, prompt_ids, n, source=None):
    """Greedy tokens of one unpadded prompt by full recompute, written here without attnkit's loops."""
    seq = list(prompt_ids)
    out = []
    for _ in range(n):
        ids = np.array([seq], "int32")
        feeds = {"token_ids": ids, "padding_mask": np.ones_like(ids)}
        if source is not None:
            src = np.array([source], "int32")
            feeds = {"encoder_token_ids": src, "encoder_padding_mask": np.ones_like(src),
                     "decoder_token_ids": ids, "decoder_padding_mask": np.ones_like(ids)}  # fmt: skip
        token = int(np.asarray(model(feeds)["logits"])[0, -1].argmax())
        seq.append(token)
        out.append(token)
    return out


def _generate(sm, prompts, n, eos_id=-1):
    """The in-graph generate runner on a batch of prompts."""
    g = sm.gspec
    return sm.generate({g.ids: prompts.ids, g.mask: prompts.mask, **prompts.source_feeds(g)}, n, eos_id)


def test_manifest_records_the_decode_step_and_its_interface(lm_export):
    gen = lm_export.manifest.generation
    roles = {(a.role, a.format, a.precision) for a in gen.artifacts}
    assert {("signatures", "savedmodel", "fp32"), ("decoder_with_past", "onnx", "fp32"),
            ("decoder_with_past", "onnx", "fp16"), ("decoder_with_past", "onnx", "int8")} <= roles  # fmt: skip
    assert gen.spec.num_layers == 2 and gen.spec.depth == 16 and gen.sampler == "greedy"
    root = lm_export.out
    io = {s.name: s for s in onnx_signature(root / "decoder_with_past.onnx")}
    assert io["past_key_values.1.value"].shape == (-1, 4, -1, 16) and io["present.0.key"].mode == "output"
    import onnx

    graph = onnx.load(str(root / "decoder_with_past.onnx"), load_external_data=False).graph
    past = next(i for i in graph.input if i.name == "past_key_values.0.key")
    assert past.type.tensor_type.shape.dim[2].dim_param == "past_sequence"
    generate = {s.name for s in savedmodel_signature(root / "savedmodel/1", "generate")}
    assert generate == {"token_ids", "padding_mask", "max_new_tokens", "eos_id", "output_ids", "sequence_lengths"}
    assert {s.name for s in savedmodel_signature(root / "savedmodel/1", "serving_default")} == {
        "token_ids", "padding_mask", "logits"}  # fmt: skip
    assert not Source(root).manifest.check_integrity(root)


def test_export_time_check_is_token_exact_on_ragged_prompts(lm_export):
    report = lm_export.report.generation
    assert report.batch > 1 and len(set(report.prompt_lengths)) > 1 and report.max_new_tokens >= 32
    fp32 = [c for c in report.checks if c.precision == "fp32"]
    assert {c.label for c in fp32} == {
        "keras", "tf-function", "savedmodel", "savedmodel/generate", "onnxruntime", "onnxruntime-genai/generate"}  # fmt: skip
    for c in fp32:
        assert c.passed and c.token_match == 1.0 and c.first_mismatch is None, c
        assert c.task == GENERATE or (c.steps_compared == 32 and c.rel_l2 < 1e-5)
    reduced = {c.label: c for c in report.checks if c.precision != "fp32"}
    assert set(reduced) == {"onnxruntime[fp16]", "onnxruntime[int8]", "onnxruntime-genai/generate[fp16]",
                            "onnxruntime-genai/generate[int8]"}  # fmt: skip
    assert all(0.0 <= c.token_match <= 1.0 for c in reduced.values())
    assert all(c.steps_compared >= 1 for c in reduced.values() if c.task != GENERATE)
    assert lm_export.manifest.generation.agreement["checks"]["onnxruntime"]["passed"] is True


def test_artifacts_match_an_independent_full_recompute(lm_export):
    """SavedModel generate and the ONNX decode loop vs full recompute of each prompt alone (no padding)."""
    source = Source(lm_export.out)
    model = source.keras_model
    g = runner_class("keras", DECODE_STEP)(source).gspec
    prompts = Prompts.random(g, 3, 9, seed=2024)
    assert len(set(prompts.lengths.tolist())) > 1
    expected = np.array(
        [_independent_greedy(model, prompts.ids[b, : prompts.lengths[b]], 32) for b in range(prompts.batch)]
    )
    with runner_class("savedmodel", GENERATE)(source) as sm:
        out = _generate(sm, prompts, 32)
    np.testing.assert_array_equal(out["output_ids"], expected)
    assert out["sequence_lengths"].tolist() == [32, 32, 32]
    with runner_class("onnxruntime", DECODE_STEP)(source) as ort_runner:
        np.testing.assert_array_equal(decode(ort_runner, prompts, 32).tokens, expected)


def test_prompts_padded_on_the_left_give_the_same_tokens(lm_export):
    source = Source(lm_export.out)
    g = runner_class("keras", DECODE_STEP)(source).gspec
    right = Prompts.random(g, 2, 7, seed=7)
    lengths = right.lengths
    left_ids = np.zeros_like(right.ids)
    left_mask = np.zeros_like(right.mask)
    for b, n in enumerate(lengths):
        left_ids[b, -n:], left_mask[b, -n:] = right.ids[b, :n], 1
    with runner_class("onnxruntime", DECODE_STEP)(source) as runner:
        a = decode(runner, right, 12).tokens
        b = decode(runner, Prompts(left_ids, left_mask), 12).tokens
    np.testing.assert_array_equal(a, b)


def test_eos_finishes_a_row_in_graph_and_in_the_loop(lm_export):
    source = Source(lm_export.out)
    g = runner_class("keras", DECODE_STEP)(source).gspec
    prompts = Prompts.random(g, 2, 6, seed=99)
    with runner_class("onnxruntime", DECODE_STEP)(source) as runner:
        free = decode(runner, prompts, 10).tokens
        eos = int(free[0, 3])
        stop = int(np.argmax(free[0] == eos))  # the first step row 0 produces it
        looped = decode(runner, prompts, 10, eos_id=eos).tokens
    with runner_class("savedmodel", GENERATE)(source) as sm:
        out = _generate(sm, prompts, 10, eos_id=eos)
    np.testing.assert_array_equal(out["output_ids"], looped)
    assert (looped[0, stop:] == eos).all() and out["sequence_lengths"][0] == stop + 1
    np.testing.assert_array_equal(out["sequence_lengths"], sequence_lengths(looped, eos))  # the numpy twin
    full = recompute(lambda f: np.asarray(source.keras_model(f)["logits"]), g, prompts, 10, eos_id=eos)
    np.testing.assert_array_equal(full.tokens, looped)


def test_seq2seq_encoder_feeds_the_cross_attention_cache(mt_export):
    source = Source(mt_export.out)
    roles = {(a.role, a.precision) for a in mt_export.manifest.generation.artifacts}
    assert {("encoder", "fp32"), ("encoder", "int8"), ("decoder_with_past", "fp32")} <= roles
    assert all(c.passed for c in mt_export.report.generation.checks if c.precision == "fp32")
    g = runner_class("keras", DECODE_STEP)(source).gspec
    prompts = Prompts.random(g, 2, 1, seed=5, source_length=11)  # the decoder prompt: one start token
    prompts.ids[:] = 1
    model = source.keras_model
    expected = [
        _independent_greedy(model, [1], 20, source=prompts.source_ids[b, : prompts.source_mask[b].sum()])
        for b in range(2)
    ]
    with runner_class("onnxruntime", DECODE_STEP)(source) as runner:
        np.testing.assert_array_equal(decode(runner, prompts, 20).tokens, expected)
    with runner_class("savedmodel", GENERATE)(source) as sm:
        np.testing.assert_array_equal(_generate(sm, prompts, 20)["output_ids"], expected)


def test_bad_generation_requests_are_refused(lm_export):
    source = Source(lm_export.out)
    g = runner_class("keras", DECODE_STEP)(source).gspec
    prompts = Prompts.random(g, 2, 8, seed=1)
    with runner_class("onnxruntime", DECODE_STEP)(source) as runner:
        with pytest.raises(AttnkitError, match="max_new_tokens"):
            decode(runner, prompts, 0)
        with pytest.raises(AttnkitError, match="prompt_length"):
            decode(runner, Prompts.random(g, 1, 90, seed=1), 10)  # 90 + 10 > max_length 96
        foreign = {n: np.zeros((2, 8, 3, 32), "float32") for n in g.past_names()}  # another model's cache
        with pytest.raises(BackendError, match="past_key_values.0.key.*another model"):
            runner.decode({g.ids: prompts.ids[:, :1], g.mask: np.ones((2, 4), "int32"), **foreign})
    import tensorflow as tf

    with runner_class("savedmodel", GENERATE)(source) as sm:
        feeds = {g.ids: tf.constant(prompts.ids), g.mask: tf.constant(prompts.mask)}
        with pytest.raises(tf.errors.InvalidArgumentError, match="max_new_tokens must be >= 1"):
            sm.fn(**feeds, max_new_tokens=tf.constant(0), eos_id=tf.constant(-1))
        with pytest.raises(tf.errors.InvalidArgumentError, match="maximum length"):
            sm.fn(**feeds, max_new_tokens=tf.constant(90), eos_id=tf.constant(-1))


def test_export_generate_refuses_a_model_with_no_causal_decoder(tmp_path):
    out = tmp_path / "enc"
    code, output = run("export", "encoder-tiny", "--generate", "--out", out)
    assert_one_line_error(code, output, "MODEL", "no causal decoder")
    assert not out.exists()
    with pytest.raises(ModelError, match="no causal decoder"):
        attnkit.export("mha", tmp_path / "mha", generate=True)


def test_verify_cli_checks_generation_and_writes_it_to_json(lm_export, tmp_path):
    path = tmp_path / "v.json"
    code, output = run("verify", lm_export.out, "--backends", "onnxruntime", "--max-new-tokens", "33", "--json", path)
    assert code == 0, output
    data = json.loads(path.read_text())["generation"]
    assert data["ok"] and data["max_new_tokens"] == 33 and len(data["reference_tokens"][0]) == 33
    assert {(c["backend"], c["precision"]) for c in data["checks"]} == {
        ("onnxruntime", "fp32"), ("onnxruntime", "fp16"), ("onnxruntime", "int8")}  # fmt: skip
    code, output = run("verify", lm_export.out, "--max-new-tokens", "0")
    assert_one_line_error(code, output, "--max-new-tokens")


def test_generation_bench_reports_latency_speedup_and_bandwidth(lm_export, tmp_path):
    from attnkit.generation.bench import bench_generation
    from attnkit.generation.report import to_markdown, write_all

    report = bench_generation(
        lm_export.out,
        backends=["onnxruntime", "savedmodel"],
        prompt_lengths=(8,),
        new_tokens=(4, 24),
        repeats=1,
    )
    assert report.bandwidth["gbps"] > 0
    rows = {(r.label, r.new_tokens): r for r in report.rows}
    assert not any(r.backend == "xla" for r in report.rows)  # a pair that cannot exist is no row...
    assert any(n.startswith("xla: ") and "recompile" in n for n in report.notes)  # ...but a note, once
    with pytest.raises(BackendError, match="backends.*xla.*recompile"):
        bench_generation(lm_export.out, backends=["xla"], prompt_lengths=(8,), new_tokens=(4,), repeats=1)
    ort = rows[("onnxruntime", 24)]
    assert ort.agrees and ort.token_match == 1.0 and ort.ttft_ms > 0
    assert ort.itl_ms["p50"] <= ort.itl_ms["p99"] and len(ort.per_position_ms) == 23
    assert ort.tokens_per_s == pytest.approx(24 / ort.total_s)
    assert ort.recompute_s > 0 and ort.speedup_vs_recompute == pytest.approx(ort.recompute_s / ort.total_s)
    assert 0 < ort.pct_of_bandwidth == pytest.approx(100 * ort.achieved_gbps / report.bandwidth["gbps"])
    # probes around the rows: a copy at the start and after each backend, a read of each row's working set;
    # the highest bounds every row, so no share passes 100 %
    probes = report.bandwidth["probes"]
    ran = {r.label for r in report.rows if r.total_s}
    assert [p["when"] for p in probes if p["kind"] == "copy"][0] == "start"
    assert {p["when"][len("after ") :] for p in probes if p["when"].startswith("after ")} == ran
    assert report.bandwidth["gbps"] == max(p["gbps"] for p in probes)
    assert all(r.pct_of_bandwidth <= 100 for r in report.rows if r.pct_of_bandwidth is not None)
    own = [p for p in probes if p.get("for") == "onnxruntime" and p["size"] == ort.bytes_per_step]
    assert own and ort.pct_of_working_set == pytest.approx(100 * ort.achieved_gbps / max(p["gbps"] for p in own))
    assert (
        rows[("savedmodel/generate", 24)].agrees
        and rows[("savedmodel", 24)].agrees
        and rows[("onnxruntime[int8]", 24)].token_match is not None
    )
    assert report.best().agrees
    files = write_all(report, tmp_path)
    assert [f.name for f in files] == ["generation.json", "generation.csv", "generation.png"]
    data = json.loads(files[0].read_text())
    assert data["kind"] == "generation" and len(data["rows"]) == len(report.rows)
    md = to_markdown(data)
    assert "| onnxruntime | 1 | 8 | 24 |" in md and "| onnxruntime[int8] | 1 | 8 | 24 |" in md
    # the generate signature is its own row, named apart from the step loop of the same SavedModel
    assert "| savedmodel/generate | 1 | 8 | 24 |" in md and "| savedmodel | 1 | 8 | 24 |" in md


def test_block_with_precomputed_masks_equals_its_own_masks(rng):
    from attnkit.models.attention import additive_padding_mask, causal_mask
    from attnkit.models.transformer import TransformerDecoderBlock

    block = TransformerDecoderBlock(32, 4, 64, cross_attention=True)
    x = rng.standard_normal((2, 5, 32)).astype("float32")
    memory = rng.standard_normal((2, 7, 32)).astype("float32")
    mask = np.ones((2, 5), "int32")
    mask[1, 3:] = 0
    src_mask = np.ones((2, 7), "int32")
    src_mask[0, 5:] = 0
    plain = block(x, decoder_padding_mask=mask, encoder_output=memory, encoder_padding_mask=src_mask)
    pre = block(
        x,
        encoder_output=memory,
        attention_mask=np.maximum(causal_mask(5), additive_padding_mask(mask)),
        encoder_attention_mask=additive_padding_mask(src_mask),
    )
    np.testing.assert_array_equal(np.asarray(plain), np.asarray(pre))


def test_package_serves_the_decode_step_and_the_generate_signature(lm_export, tmp_path):
    import onnxruntime as ort
    import tensorflow as tf
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2

    from attnkit.orchestration.package import package

    result = package(lm_export.out, triton=tmp_path / "repo", tfserving=tmp_path / "tfs")
    names = {m["name"] for m in result.triton}
    assert {"tiny_decoder_decoder_with_past_onnx", "tiny_decoder_decoder_with_past_onnx_int8"} <= names
    model_dir = tmp_path / "repo" / "tiny_decoder_decoder_with_past_onnx"
    cfg = text_format.Parse((model_dir / "config.pbtxt").read_text(), model_config_pb2.ModelConfig())
    assert cfg.max_batch_size == 0 and not cfg.HasField("dynamic_batching")
    assert list(next(i for i in cfg.input if i.name == "past_key_values.0.key").dims) == [-1, 4, -1, 16]
    # The KServe v2 request example (a prefill: empty past) answers on the packaged file like eager Keras.
    body = json.loads(Path(result.requests["triton_decoder_with_past"]).read_text())
    dtypes = {"INT32": "int32", "FP32": "float32"}
    feeds = {i["name"]: np.array(i["data"], dtypes[i["datatype"]]).reshape(i["shape"]) for i in body["inputs"]}
    session = ort.InferenceSession(str(model_dir / "1" / "model.onnx"), providers=["CPUExecutionProvider"])
    logits = session.run(["logits"], feeds)[0]
    source = Source(lm_export.out)
    with runner_class("keras", DECODE_STEP)(source) as eager:
        g = eager.gspec
        expected = eager.prefill({g.ids: feeds[g.ids], g.mask: feeds[g.mask]})["logits"]
    assert np.linalg.norm(logits - expected) / np.linalg.norm(expected) < 1e-5
    # TF Serving: the generate request example on the laid-out SavedModel returns the loop's tokens.
    request = json.loads(Path(result.requests["tfserving_generate"]).read_text())
    assert request["signature_name"] == "generate" and request["inputs"]["max_new_tokens"] == 16
    loaded = tf.saved_model.load(str(tmp_path / "tfs" / "tiny_decoder" / "1"))
    inputs = {k: tf.constant(v, tf.int32) for k, v in request["inputs"].items()}
    out = loaded.signatures["generate"](**inputs)
    prompts = Prompts(
        np.array(request["inputs"]["token_ids"], "int32"), np.array(request["inputs"]["padding_mask"], "int32")
    )
    with runner_class("onnxruntime", DECODE_STEP)(source) as runner:
        np.testing.assert_array_equal(out["output_ids"].numpy(), decode(runner, prompts, 16).tokens)


def test_tensorrt_plans_of_the_decode_step_have_prefill_and_decode_profiles(tmp_path):
    from attnkit.exporters.tensorrt import detect

    if detect() is None:
        pytest.skip("no TensorRT Python package (tensorrt or TensorRT-RTX) to build plans with")
    import keras

    from attnkit.models import transformer

    keras.utils.set_random_seed(4)
    path = tmp_path / "one_layer.keras"
    transformer.build_decoder_lm({**TINY, "num_layers": 1}, name="one").save(path)
    result = attnkit.export(
        str(path), tmp_path / "out", formats="onnx,tensorrt", trt_target="sm89", generate=True,
        batch=("1:2:4",), seq=("1:16:64",), check=False,
    )  # fmt: skip
    plans = [a for a in result.manifest.generation.artifacts if a.format == "tensorrt"]
    assert [(a.role, a.path, a.extra["profiles"]) for a in plans] == [
        ("decoder_with_past", "decoder_with_past.plan", ["prefill", "decode"])
    ]
    sidecar = json.loads((tmp_path / "out" / "decoder_with_past.plan.json").read_text())
    prefill, decode = (p["shapes"] for p in sidecar["profiles"])
    assert prefill["past_key_values.0.key"]["max"] == [4, 4, 0, 16] and prefill["token_ids"]["max"] == [4, 64]
    assert decode["token_ids"]["max"] == [4, 1] and decode["past_key_values.0.value"]["max"] == [4, 4, 63, 16]
    assert decode["padding_mask"]["max"] == [4, 64]  # past + the new token
    assert {io["name"] for io in sidecar["io"]} >= {"present.0.key", "past_key_values.0.value", "logits"}
    assert not Source(tmp_path / "out").manifest.check_integrity(tmp_path / "out")


def test_probes_that_disagree_beyond_the_noise_are_a_warning():
    from attnkit.generation.bench import PROBE_NOISE_PCT, GenerationBenchReport, GenerationRow, _bound

    def report_with(*gbps):
        report = GenerationBenchReport("d", "m", 0, {}, {})
        row = GenerationRow("onnxruntime", "fp32", DECODE_STEP, 1, 8, 8, achieved_gbps=30.0, bytes_per_step=10)
        report.rows.append(row)
        probes = [{"kind": "copy", "gbps": g, "threads": 2, "when": f"p{i}"} for i, g in enumerate(gbps)]
        probes.append({"kind": "read", "gbps": 50.0, "threads": 2, "when": "ws", "for": "onnxruntime", "size": 10})
        _bound(report, probes)
        return report, row

    steady, row = report_with(40.0, 40.0 * (1 + PROBE_NOISE_PCT / 200))
    assert not steady.notes and steady.bandwidth["gbps"] == 50.0 and row.pct_of_bandwidth == pytest.approx(60.0)
    busy, row = report_with(30.0, 60.0)
    assert len(busy.notes) == 1 and "100 %" in busy.notes[0] and "changed during the run" in busy.notes[0]
    assert busy.bandwidth["gbps"] == 60.0 and row.pct_of_bandwidth == pytest.approx(50.0)


def test_narrow_generation_table_keeps_the_settings_its_rows_differ_in():
    """In an 80-column log the table drops low-priority columns, but never the batch (or prompt) its rows
    differ in: two rows of one backend at batch 1 and 4 would otherwise be told apart by nothing."""
    from rich.console import Console

    from attnkit.generation.bench import GenerationBenchReport, GenerationRow
    from attnkit.generation.report import bench_table

    def rendered(batches):
        report = GenerationBenchReport("d", "m", 0, {}, {"gbps": 40.0, "threads": 2})
        for b in batches:
            report.rows.append(GenerationRow("openvino-stateful", "fp32", DECODE_STEP, b, 32, 128, ttft_ms=13.6,
                                             itl_ms={"p50": 3.78}, tokens_per_s=257.0 * b, agrees=True,
                                             agreement="tokens identical"))  # fmt: skip
        console = Console(width=80, record=True)
        console.print(bench_table(report, 80))
        return console.export_text()

    assert "batch" in rendered([1, 4]) and "batch" not in rendered([1, 1])


def test_weight_only_q8_q4_decode_steps_are_matmulnbits_and_reported(tmp_path_factory):
    """q8/q4: onnxruntime's MatMulNBits on every weight MatMul of the step, bits/block/accuracy recorded;
    q8's logits within its tolerance at export; both decode with their token match reported."""
    import onnx

    path = _save(tmp_path_factory, "decoder", seed=13)
    result = attnkit.export(str(path), tmp_path_factory.mktemp("q") / "lm", formats="onnx", precision="fp32,q8,q4",
                            generate=True)  # fmt: skip
    records = {(a.role, a.precision): a for a in result.manifest.generation.artifacts if a.format == "onnx"}
    for precision, bits in (("q8", 8), ("q4", 4)):
        record = records[("decoder_with_past", precision)]
        assert (record.extra["bits"], record.extra["block_size"], record.extra["accuracy_level"]) == (bits, 32, 4)
        graph = onnx.load(str(result.out / record.path)).graph
        nbits = [n for n in graph.node if n.op_type == "MatMulNBits"]
        assert len(nbits) >= 2 * 6 and all(a.i == bits for n in nbits for a in n.attribute if a.name == "bits")
        assert (result.out / record.path).stat().st_size < (result.out / "decoder_with_past.onnx").stat().st_size
    q8 = [r for r in result.report.results if (r.backend, r.precision) == ("onnxruntime", "q8")]
    assert q8 and all(r.passed and r.agreements[0].rel_l2 < 3e-2 for r in q8)
    checks = {c.label: c for c in result.report.generation.checks}
    for label in ("onnxruntime[q8]", "onnxruntime[q4]", "onnxruntime-genai/generate[q4]"):
        assert checks[label].steps_compared >= 1 or checks[label].task == GENERATE
        assert 0.0 < checks[label].token_match <= 1.0


def test_static_batching_takes_what_has_arrived_when_idle():
    """The static server of bench-arrivals on a fake clock: a generate call of 1 s; requests at 0, 0.1, 0.2 and
    5 s. The first is served alone, the two that arrived meanwhile together, the last after waiting for it."""
    from attnkit.generation.arrivals import serve_static

    now = [0.0]
    calls = []

    class Runner:
        def generate(self, feeds, n, eos):
            ids, mask = feeds["ids"], feeds["mask"]
            calls.append(mask.sum(axis=1).tolist())
            now[0] += 1.0
            return {"output_ids": np.repeat(ids[:, :1], n, axis=1)}

    class Spec:  # the generation spec's input names are all the server reads of it
        ids, mask = "ids", "mask"

    def sleep(s):
        now[0] += s

    prompts = [np.arange(1, k + 1, dtype="int32") for k in (3, 2, 4, 1)]
    served, batches = serve_static(Runner(), Spec(), prompts, [0.0, 0.1, 0.2, 5.0], 2, 8, lambda: now[0], sleep)
    assert batches == 3 and calls == [[3], [2, 4], [1]]  # right-padded rows, each its own length
    assert [done for _, done, _ in served] == [1.0, 2.0, 2.0, 6.0]
    assert [tokens for _, _, tokens in served] == [[1, 1]] * 4


def test_verify_generate_on_an_export_without_generation_is_refused(tiny_export):
    code, output = run("verify", tiny_export.out, "--generate")
    assert code != 0 and "Traceback" not in output
    errors = [ln for ln in output.splitlines() if ln.startswith("Error")]
    assert len(errors) == 1 and "no generation export" in errors[0] and "--generate" in errors[0], output


def test_sampler_is_one_seam_for_numpy_and_tensorflow():
    import numpy as np
    import tensorflow as tf

    from attnkit.core.sampling import GreedySampler

    rng = np.random.default_rng(3)
    logits = rng.normal(size=(4, 50)).astype("float32")
    done = np.array([False, True, False, False])
    eos = int(logits[2].argmax())  # row 2 chooses eos this step: it becomes done
    token, now_done = GreedySampler().next_token(logits, done, eos)
    tf_token, tf_done = GreedySampler().next_token(tf.constant(logits), tf.constant(done), eos)
    np.testing.assert_array_equal(token, tf_token.numpy())
    np.testing.assert_array_equal(now_done, tf_done.numpy())
    expected = np.where(done, eos, logits.argmax(-1))  # the rule, written out: finished rows continue with eos
    np.testing.assert_array_equal(token, expected)
    np.testing.assert_array_equal(now_done, done | (expected == eos))
    assert token[1] == eos and now_done[2] and token.dtype == np.int32


def test_a_row_streams_the_bytes_of_what_its_runtime_ran():
    """The roofline's bytes follow what the runtime said it computed and cached in: OpenVINO repacks f32 weights
    into bf16 when it computes in bf16 (half the IR's bytes), a u8 cache is one byte a value; a row whose bf16
    hint ran as f32, or another runtime's row, streams what it holds."""
    from attnkit.generation.bench import GenerationRow
    from attnkit.generation.traffic import widths

    def row(backend, precision, ran_as=None):
        return GenerationRow(backend, precision, "decode_step", 1, 32, 128, ran_as=ran_as)

    assert widths(row("openvino-stateful", "bf16", "bf16")) == (0.5, 2)
    assert widths(row("openvino-genai", "bf16", "fp32")) == (1.0, 4)
    assert widths(row("openvino-stateful", "fp32", "fp32 (kv-cache u8)")) == (1.0, 1)
    assert widths(row("openvino-stateful", "int8", "int8")) == (1.0, 2)  # int8 weights as stored, f16 cache
    assert widths(row("openvino-genai", "fp16", "fp16")) == (1.0, 2)  # f16 weights as stored and f16 cache, f32 compute
    assert widths(row("openvino-stateful", "fp16", "fp16 (kv-cache f32)")) == (1.0, 4)  # a plugin that kept f32 says so
    assert widths(row("openvino-stateful", "fp16", "fp16+bf16")) == (1.0, 2)
    assert widths(row("onnxruntime", "fp16")) == (1.0, 4)
