"""OpenVINO as a format and a backend: the IR agrees with Keras when f32 is forced, every row says the
precision OpenVINO really ran in, and a changed IR fails the integrity check."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from conftest import rel_l2

pytest.importorskip("openvino", reason="needs the openvino extra (pip install 'attnkit[openvino]')")

BF16 = {"avx512_bf16", "amx_bf16"}
FP16 = {"avx512_fp16"}  # OpenVINO's CPU plugin computes f16 with AVX512-FP16 only


@pytest.fixture(scope="module")
def ov_export(tmp_path_factory):
    import attnkit

    out = tmp_path_factory.mktemp("ov") / "encoder-tiny"
    return attnkit.export("encoder-tiny", out, formats="onnx,openvino", precision="fp32,bf16,fp16,int8")


def test_ir_loaded_by_openvino_itself_matches_keras(ov_export):
    import openvino as ov

    from attnkit.runtimes.base import Source

    source = Source(ov_export.out)
    feeds = source.spec.sample_feeds(3, 37, seed=2026)
    expected = np.asarray(source.keras_model(feeds, training=False)["hidden_states"])
    compiled = ov.Core().compile_model(
        str(ov_export.out / "openvino" / "model.xml"), "CPU", {"INFERENCE_PRECISION_HINT": "f32"}
    )
    got = compiled(feeds)[compiled.output("hidden_states")]
    assert got.shape == expected.shape and rel_l2(expected, got) <= 1e-5
    records = {(a.format, a.precision) for a in ov_export.manifest.artifacts}
    assert {("openvino", "fp32"), ("openvino", "bf16"), ("openvino", "fp16")} <= records
    assert ov_export.report.ok_where_fit


def test_int8_ir_is_weight_only_and_within_the_int8_tolerance(ov_export):
    """OpenVINO itself loads the int8 IR (f32 compute forced, dynamic activation quantisation off, as the
    runner compiles it): every MatMul weight is stored in 8 bits, and the answer is within int8's tolerance
    of Keras on inputs drawn here."""
    import openvino as ov

    from attnkit.compare import DEFAULT_TOLERANCES
    from attnkit.runtimes.base import Source

    source = Source(ov_export.out)
    record = ov_export.manifest.artifact("openvino", "int8")
    assert record.extra["mode"] == "int8_asym" and record.extra["method"] == "nncf.compress_weights"
    xml = ov_export.out / record.path / "model.xml"
    model = ov.Core().read_model(str(xml))

    def stored(node) -> set[str]:
        """Element types of the weight constants behind a MatMul input (through Convert/Subtract/Multiply)."""
        kind = node.get_type_name()
        if kind == "Constant":
            return {node.get_element_type().get_type_name()} if len(node.get_output_shape(0)) >= 2 else set()
        if kind in ("Convert", "Subtract", "Multiply", "Reshape", "Transpose"):
            return set().union(*(stored(i.get_source_output().get_node()) for i in node.inputs()))
        return set()  # an activation

    matmuls = [op for op in model.get_ops() if op.get_type_name() == "MatMul"]
    weights = [stored(op.input(1).get_source_output().get_node()) for op in matmuls]
    # every weight stored as u8 (NNCF keeps its per-channel scales and zero points in f16/u8); none left in f32
    assert sum(1 for w in weights if w) >= 4 and all("u8" in w and "f32" not in w for w in weights if w), weights
    feeds = source.spec.sample_feeds(3, 29, seed=2027)
    expected = np.asarray(source.keras_model(feeds, training=False)["hidden_states"])
    config = {"INFERENCE_PRECISION_HINT": "f32", "DYNAMIC_QUANTIZATION_GROUP_SIZE": 0}
    compiled = ov.Core().compile_model(str(xml), "CPU", config)
    got = compiled(feeds)[compiled.output("hidden_states")]
    fp32_error = rel_l2(expected, ov.Core().compile_model(str(ov_export.out / "openvino" / "model.xml"), "CPU",
                        {"INFERENCE_PRECISION_HINT": "f32"})(feeds)[0])  # fmt: skip
    assert fp32_error < rel_l2(expected, got) <= DEFAULT_TOLERANCES["int8"].rel_l2  # quantised, and within tolerance


def test_each_row_says_the_precision_openvino_ran(ov_export):
    from attnkit.machine import cpu_features
    from attnkit.runtimes.base import Source
    from attnkit.runtimes.registry import get_runner

    native_bf16 = bool(BF16 & set(cpu_features()))
    with get_runner("openvino")(Source(ov_export.out), "fp32") as fp32:
        assert fp32.ran_as == "fp32"  # forced: OpenVINO's own default would pick bf16 on bf16 CPUs
    with get_runner("openvino")(Source(ov_export.out), "bf16") as bf16:
        assert bf16.ran_as == ("bf16" if native_bf16 else "fp32")  # never a silent relabel
    native_fp16 = bool(FP16 & set(cpu_features()))
    with get_runner("openvino")(Source(ov_export.out), "fp16") as fp16:
        assert fp16.ran_as == ("fp16" if native_fp16 else "fp32")
    with get_runner("openvino")(Source(ov_export.out), "int8") as int8:
        assert int8.ran_as == "int8"  # int8 weights, f32 compute (the property read back says f32)
        assert int8.model.compiled.get_property("INFERENCE_PRECISION_HINT").get_type_name() == "f32"


def test_an_openvino_precision_the_cpu_lacks_is_a_warning(ov_export):
    """bf16/fp16 IR records carry the CPU features that make them native; where they are missing, verify and
    bench warn (not an error: OpenVINO then computes in f32 and the row says so)."""
    from attnkit.machine import cpu_features
    from attnkit.runtimes.base import Source
    from attnkit.runtimes.registry import hardware_warnings

    have = set(cpu_features())
    warnings = hardware_warnings(Source(ov_export.out), [("openvino", "bf16"), ("openvino", "fp16")])
    for precision, native in (("bf16", BF16 & have), ("fp16", FP16 & have)):
        line = warnings.get(("openvino", precision))
        assert (line is None) == bool(native), (precision, line)
        if line:
            assert "OpenVINO runs it in f32 here" in line[0] and not line[1]  # answers unaffected


def test_bench_json_records_the_precision_as_run(ov_export, tmp_path):
    from attnkit.benchmark.harness import StoppingRule
    from attnkit.machine import cpu_features
    from attnkit.workflow import bench

    report = bench(
        str(ov_export.out), backends=["openvino"], precisions=("fp32", "bf16", "fp16"), batch_sizes="2", seq_lens="16",
        rule=StoppingRule(0.0, 3, 0.05), calibrate=False, baseline=False,
    )  # fmt: skip
    rows = {m["precision"]: m for m in report.to_dict()["measurements"]}
    assert rows["fp32"]["ran_as"] == "fp32" and rows["fp32"]["agrees"]
    assert rows["bf16"]["ran_as"] == ("bf16" if BF16 & set(cpu_features()) else "fp32")
    assert rows["fp16"]["ran_as"] == ("fp16" if FP16 & set(cpu_features()) else "fp32") and rows["fp16"]["agrees"]


def test_an_ir_changed_after_export_fails_the_integrity_check(ov_export, tmp_path):
    from attnkit.errors import ArtifactError
    from attnkit.exporters.manifest import Manifest

    copy = tmp_path / "copy"
    shutil.copytree(ov_export.out, copy)
    weights = copy / "openvino" / "model.bin"
    data = bytearray(weights.read_bytes())
    data[len(data) // 2] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(ArtifactError, match="openvino: sha256"):
        Manifest.load(copy).require_integrity(copy)
    assert json.loads((copy / "manifest.json").read_text())  # the manifest itself is untouched


def test_format_openvino_without_openvino_names_the_extra(monkeypatch, tmp_path):
    import sys

    import attnkit
    from attnkit.errors import DependencyError

    monkeypatch.setitem(sys.modules, "openvino", None)  # as if not installed
    with pytest.raises(DependencyError, match=r"attnkit\[openvino\]"):
        attnkit.export("mha", tmp_path / "out", formats="openvino")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("family", ["decoder", "seq2seq"])
def test_openvino_decode_step_is_token_exact(family, tmp_path_factory):
    """The decode step's IR (and the seq2seq encoder's) through the numpy loop: tokens identical to eager full
    recompute on a ragged batch, every step's logits within the fp32 tolerance (the export-time check)."""
    from test_generation import _save

    import attnkit

    path = _save(tmp_path_factory, family, seed=21)
    result = attnkit.export(str(path), tmp_path_factory.mktemp("ovgen") / family, formats="onnx,openvino",
                            precision="fp32,int8" if family == "decoder" else "fp32", generate=True)  # fmt: skip
    roles = {(a.role, a.format) for a in result.manifest.generation.artifacts}
    assert {("decoder_with_past", "openvino"), ("decoder_stateful", "openvino")} <= roles
    assert (("encoder", "openvino") in roles) == (family == "seq2seq")
    report = result.report.generation
    assert len(set(report.prompt_lengths)) > 1 and report.max_new_tokens >= 32
    for backend in ("openvino", "openvino-stateful"):
        check = next(c for c in report.checks if c.label == backend)
        assert check.passed and check.token_match == 1.0 and check.steps_compared == report.max_new_tokens
        assert check.rel_l2 <= 1e-5, backend  # every step's logits, fp32 tolerance (not just tokens)
    _stateful_ir_keeps_the_cache_inside(result.out, result.manifest.generation.spec)
    if family == "decoder":  # int8 steps: one family is enough (the same code path)
        _int8_steps_stream_a_quarter_and_agree(result)


def _int8_steps_stream_a_quarter_and_agree(result):
    """Weight-only int8 steps: logits within int8's tolerance up to the first different token, and a step
    streams about a quarter of the fp32 step's weight bytes (plus per-channel scales)."""
    from attnkit.exporters.openvino import streamed_weight_bytes

    report = result.report.generation
    for backend in ("openvino[int8]", "openvino-stateful[int8]"):
        check = next(c for c in report.checks if c.label == backend)
        assert check.passed and check.token_match is not None and check.rel_l2 > 1e-5, backend
    section = result.manifest.generation
    sizes = [
        streamed_weight_bytes(result.out / section.artifact("decoder_stateful", "openvino", p).path / "model.xml")
        for p in ("fp32", "int8")
    ]
    assert 3.0 < sizes[0] / sizes[1] <= 4.0, sizes


def _stateful_ir_keeps_the_cache_inside(out, g):
    """OpenVINO itself reads the stateful IR: no past/present among its inputs/outputs, one state per cache
    tensor, and under attnkit's runner that state is held in f32 (OpenVINO's own default is u8)."""
    import openvino as ov

    from attnkit.runtimes.base import Source
    from attnkit.runtimes.registry import runner_class

    model = ov.Core().read_model(str(out / "openvino_decoder_stateful" / "model.xml"))
    names = {n for port in [*model.inputs, *model.outputs] for n in port.get_names()}
    assert not names & set(g.past_names() + g.present_names())
    assert "beam_idx" in names and "logits" in names
    with runner_class("openvino-stateful", "decode_step")(Source(out), "fp32") as runner:
        assert len(runner.step.request.query_state()) == 2 * g.num_layers
        assert runner.step.compiled.get_property("KV_CACHE_PRECISION").get_type_name() == "f32"
        assert runner.ran_as == "fp32"


def test_bench_refuses_the_stateful_step_for_the_forward_pass(ov_export):
    """openvino-stateful only decodes: bench (the forward pass) refuses it in one line naming --backends, why,
    and the backends that do run the forward pass (openvino among them; no generation-only one)."""
    from test_cli import assert_one_line_error, run

    code, out = run("bench", str(ov_export.out), "--backends", "openvino-stateful")
    assert_one_line_error(code, out, "--backends", "not a forward backend", "the forward pass: openvino")
    valid = out.split("Valid:")[1]
    assert "openvino," in valid and "openvino-stateful" not in valid and "onnxruntime-genai" not in valid
