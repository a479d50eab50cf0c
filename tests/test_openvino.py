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


@pytest.fixture(scope="module")
def ov_export(tmp_path_factory):
    import attnkit

    out = tmp_path_factory.mktemp("ov") / "encoder-tiny"
    return attnkit.export("encoder-tiny", out, formats="onnx,openvino", precision="fp32,bf16")


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
    assert {("openvino", "fp32"), ("openvino", "bf16")} <= records
    assert ov_export.report.ok_where_fit


def test_each_row_says_the_precision_openvino_ran(ov_export):
    from attnkit.machine import cpu_features
    from attnkit.runtimes.base import Source
    from attnkit.runtimes.registry import get_runner

    native_bf16 = bool(BF16 & set(cpu_features()))
    with get_runner("openvino")(Source(ov_export.out), "fp32") as fp32:
        assert fp32.ran_as == "fp32"  # forced: OpenVINO's own default would pick bf16 on bf16 CPUs
    with get_runner("openvino")(Source(ov_export.out), "bf16") as bf16:
        assert bf16.ran_as == ("bf16" if native_bf16 else "fp32")  # never a silent relabel


def test_bench_json_records_the_precision_as_run(ov_export, tmp_path):
    from attnkit.benchmark.harness import StoppingRule
    from attnkit.machine import cpu_features
    from attnkit.workflow import bench

    report = bench(
        str(ov_export.out), backends=["openvino"], precisions=("fp32", "bf16"), batch_sizes="2", seq_lens="16",
        rule=StoppingRule(0.0, 3, 0.05), calibrate=False, baseline=False,
    )  # fmt: skip
    rows = {m["precision"]: m for m in report.to_dict()["measurements"]}
    assert rows["fp32"]["ran_as"] == "fp32" and rows["fp32"]["agrees"]
    assert rows["bf16"]["ran_as"] == ("bf16" if BF16 & set(cpu_features()) else "fp32")


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
                            generate=True)  # fmt: skip
    roles = {(a.role, a.format) for a in result.manifest.generation.artifacts}
    assert {("decoder_with_past", "openvino"), ("decoder_stateful", "openvino")} <= roles
    assert (("encoder", "openvino") in roles) == (family == "seq2seq")
    report = result.report.generation
    assert len(set(report.prompt_lengths)) > 1 and report.max_new_tokens >= 32
    for backend in ("openvino", "openvino-stateful"):
        check = next(c for c in report.checks if c.backend == backend)
        assert check.passed and check.token_match == 1.0 and check.steps_compared == report.max_new_tokens
        assert check.rel_l2 <= 1e-5, backend  # every step's logits, fp32 tolerance (not just tokens)
    _stateful_ir_keeps_the_cache_inside(result.out, result.manifest.generation.spec)


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
