"""Serving layouts: Triton repository (schema-parsed, cross-checked), TF Serving, requests, attnkit run."""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner
from google.protobuf import text_format
from test_generation import preset_or_tiny
from tritonclient.grpc import model_config_pb2 as mc

import attnkit
from attnkit.cli import cli
from attnkit.core.errors import ArtifactError, AttnkitError
from attnkit.exporters.signatures import onnx_signature, savedmodel_signature
from attnkit.exporters.triton import check_config, check_model_name
from attnkit.orchestration.package import (
    check_kserve_request,
    check_tfserving_request,
    kserve_request,
    package,
    tfserving_request,
)


@pytest.fixture(scope="module", params=["mha", "encoder-tiny", "decoder"])
def packaged(request, tmp_path_factory):
    root = tmp_path_factory.mktemp("pkg")
    out = attnkit.export(preset_or_tiny(request.param, tmp_path_factory), root / "export", precision="fp32,int8",
                         check=False).out  # fmt: skip
    result = package(out, triton=root / "triton", tfserving=root / "tfs", version=3)
    return out, root, result


def test_repository_layout_and_configs(packaged):
    out, root, result = packaged
    spec = attnkit.exporters.manifest.Manifest.load(out).spec
    names = {m["name"] for m in result.triton}
    base = spec.name
    assert names == {f"{base}_onnx", f"{base}_onnx_int8", f"{base}_savedmodel"}
    assert (root / "triton" / f"{base}_onnx" / "3" / "model.onnx").is_file()
    assert (root / "triton" / f"{base}_savedmodel" / "3" / "model.savedmodel" / "saved_model.pb").is_file()
    for m in result.triton:
        cfg = text_format.Parse((Path(m["path"]) / "config.pbtxt").read_text(), mc.ModelConfig())  # Triton's schema
        assert cfg.name == m["name"] and cfg.max_batch_size == spec.batch.max
        assert [i.name for i in cfg.input] == spec.input_names
        assert [o.name for o in cfg.output] == spec.output_names
        assert cfg.instance_group[0].kind == mc.ModelInstanceGroup.KIND_CPU
        assert list(cfg.dynamic_batching.preferred_batch_size) == [spec.batch.opt, spec.batch.max]
        for i in cfg.input:  # batch axis is Triton's; the sequence axis is -1
            assert list(i.dims)[0] == -1
    assert (root / "tfs" / base / "3" / "saved_model.pb").is_file()


def test_configs_match_the_artifact_signature_independently(packaged):
    """Re-read each config with Triton's schema and compare with the artifact as loaded by its own library."""
    import tensorflow as tf

    out, root, result = packaged
    for m in result.triton:
        cfg = text_format.Parse((Path(m["path"]) / "config.pbtxt").read_text(), mc.ModelConfig())
        if m["platform"] == "onnxruntime_onnx":
            import onnxruntime as ort

            s = ort.InferenceSession(str(Path(m["path"]) / "3" / "model.onnx"))
            real = {i.name: (i.type, i.shape) for i in s.get_inputs() + s.get_outputs()}
            for io in list(cfg.input) + list(cfg.output):
                ort_type = {"TYPE_FP32": "tensor(float)", "TYPE_INT32": "tensor(int32)"}[mc.DataType.Name(io.data_type)]
                assert real[io.name][0] == ort_type
                assert len(real[io.name][1]) == len(io.dims) + 1
        else:
            sig = tf.saved_model.load(str(Path(m["path"]) / "3" / "model.savedmodel")).signatures["serving_default"]
            assert set(sig.structured_input_signature[1]) == {i.name for i in cfg.input}
            assert set(sig.structured_outputs) == {o.name for o in cfg.output}


def test_cross_check_catches_a_wrong_dtype_or_name(packaged):
    out, root, result = packaged
    m = next(m for m in result.triton if m["platform"] == "onnxruntime_onnx")
    text = (Path(m["path"]) / "config.pbtxt").read_text()
    sig = onnx_signature(out / "model.onnx")
    assert check_config(text, sig) == []
    first = sig[0]
    wrong_type = (
        text.replace("TYPE_INT32", "TYPE_FP16", 1)
        if first.dtype == "int32"
        else text.replace("TYPE_FP32", "TYPE_INT64", 1)
    )
    assert any("data_type" in p for p in check_config(wrong_type, sig))
    wrong_name = text.replace(f'name: "{first.name}"', 'name: "renamed"', 1)
    problems = check_config(wrong_name, sig)
    assert any("renamed" in p for p in problems) and any("missing" in p for p in problems)
    wrong_dims = re.sub(r"dims: -1", "dims: 7", text, count=1)
    assert any("dims" in p for p in check_config(wrong_dims, sig))


def test_warmup_sample_matches_the_input_spec(packaged):
    out, root, result = packaged
    spec = attnkit.exporters.manifest.Manifest.load(out).spec
    for m in result.triton:
        cfg = text_format.Parse((Path(m["path"]) / "config.pbtxt").read_text(), mc.ModelConfig())
        (warm,) = cfg.model_warmup
        assert set(warm.inputs) == set(spec.input_names) and warm.batch_size == 1
        for t in spec.inputs:
            w = warm.inputs[t.name]
            assert mc.DataType.Name(w.data_type) == {"float32": "TYPE_FP32", "int32": "TYPE_INT32"}[t.dtype]
            assert list(w.dims) == [spec.sequence.opt if d is None else d for d in t.shape[1:]]


def test_request_examples_are_checked_against_the_signature(packaged):
    out, root, result = packaged
    spec = attnkit.exporters.manifest.Manifest.load(out).spec
    body = json.loads(Path(result.requests["triton"]).read_text())
    sig = onnx_signature(out / "model.onnx")
    assert check_kserve_request(body, sig) == [] and [i["name"] for i in body["inputs"]] == spec.input_names
    body["inputs"][0]["name"] = "nope"
    assert any("nope" in p for p in check_kserve_request(body, sig))
    bad_type = kserve_request(spec)
    bad_type["inputs"][0]["datatype"] = "FP64"
    assert any("datatype" in p for p in check_kserve_request(bad_type, sig))
    tf_sig = savedmodel_signature(out / "savedmodel" / "1")
    tfs = json.loads(Path(result.requests["tfserving"]).read_text())
    assert check_tfserving_request(tfs, tf_sig) == [] and tfs["signature_name"] == "serving_default"
    wrong = tfserving_request(spec)
    wrong["inputs"][spec.input_names[0]] = [[[1.5]]]
    assert check_tfserving_request(wrong, tf_sig)


@pytest.mark.parametrize("name", ["a/b", "../x", "", "-lead", "sp ace"])
def test_invalid_model_names(name):
    with pytest.raises(AttnkitError, match="name"):
        check_model_name(name)


def test_package_bad_input(tiny_export, tmp_path):
    other = tmp_path / "not_a_repo"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    r = CliRunner().invoke(cli, ["package", str(tiny_export.out), "--triton", str(other)])
    assert r.exit_code != 0 and "--triton" in r.output and "--force" in r.output
    assert (other / "notes.txt").read_text() == "mine" and len(list(other.iterdir())) == 1
    r = CliRunner().invoke(cli, ["package", str(tiny_export.out), "--triton", str(tmp_path / "r"), "--version", "0"])
    assert r.exit_code != 0 and "--version" in r.output
    r = CliRunner().invoke(cli, ["package", str(tiny_export.out), "--triton", str(tmp_path / "r"), "--name", "a/b"])
    assert r.exit_code != 0 and "--name" in r.output and "Traceback" not in r.output
    bad = tmp_path / "bad"
    shutil.copytree(tiny_export.out, bad)
    with open(bad / "model.onnx", "ab") as fh:
        fh.write(b"\0")
    with pytest.raises(ArtifactError, match="sha256"):
        package(bad, triton=tmp_path / "r2")
    assert not (tmp_path / "r2").exists()


def test_tfserving_version_is_not_overwritten(tiny_export, tmp_path):
    package(tiny_export.out, tfserving=tmp_path / "tfs", version=1)
    with pytest.raises(AttnkitError, match="version"):
        package(tiny_export.out, tfserving=tmp_path / "tfs", version=1)
    package(tiny_export.out, tfserving=tmp_path / "tfs", version=2)
    assert sorted(p.name for p in (tmp_path / "tfs" / "encoder-tiny").iterdir()) == ["1", "2"]


def test_run_writes_every_file_its_report_links(tmp_path):
    out = tmp_path / "run"
    r = CliRunner().invoke(
        cli,
        [
            "run",
            "encoder-tiny",
            "--out",
            str(out),
            "--precision",
            "fp32,int8",
            "--batch-sizes",
            "2",
            "--seq-lens",
            "16",
            "--min-seconds",
            "0.05",
        ],
    )
    assert r.exit_code == 0, r.output
    report = (out / "report.md").read_text()
    links = re.findall(r"\]\(([^)]+)\)", report)
    assert {"bench/throughput.png", "attention.png", "model.onnx", "triton/"} <= set(links)
    for link in links:
        assert (out / link).exists(), link
    assert "| speedup |" in report and "## Environment" in report and "attnkit run encoder-tiny" in report
    assert "tritonserver --model-repository=" in report and "tensorflow_model_server" in report
    assert (out / "triton" / "encoder-tiny_onnx_int8" / "config.pbtxt").is_file()
    pick = json.loads((out / "manifest.json").read_text())["pick"]  # the deployment pick, where it was measured
    assert pick["latency"]["batch"] == 2 and pick["machine"]["class"] and "Deploy for latency" in report
    results = json.loads((out / "bench" / "results.json").read_text())
    assert pick["throughput"] == results["pick"]["throughput"]


def test_run_notes_attention_it_cannot_capture_and_does_not_fail(tmp_path, monkeypatch):
    """A model whose attention weights cannot be read (a layer that runs flash attention, or sits inside a
    layer that takes no return_attention_scores and has no ``_masked_softmax``) gets a note in place of the
    heatmap, and run exits 0: nothing of the user's failed. Another error in that stage still fails it."""
    from attnkit.checks import attention_maps

    def cannot(model, spec, feeds, layer_index=0):
        raise AttnkitError(
            "attention layer `transformer_layer_0/self_attention` runs flash attention, which computes no weights "
            "to draw.", flag="--layer", hint="Call keras.config.disable_flash_attention() before loading the model."
        )  # fmt: skip

    monkeypatch.setattr(attention_maps, "capture", cannot)
    args = ["--precision", "fp32", "--batch-sizes", "1", "--seq-lens", "8", "--min-seconds", "0.02"]
    r = CliRunner().invoke(cli, ["run", "mha", "--out", str(tmp_path / "a"), *args])
    assert r.exit_code == 0, r.output
    report = (tmp_path / "a" / "report.md").read_text()
    assert "## Attention\n\nnot drawn: attention layer `transformer_layer_0/self_attention` runs flash" in report
    assert "attention.png" not in report and "## Failures" not in report and "--layer" not in report
    assert not (tmp_path / "a" / "attention.png").exists()

    def broken(model, spec, feeds, layer_index=0):
        raise ValueError("a bug")

    monkeypatch.setattr(attention_maps, "capture", broken)
    r = CliRunner().invoke(cli, ["run", "mha", "--out", str(tmp_path / "b"), *args])
    assert r.exit_code != 0 and "attention heatmaps: ValueError: a bug" in (tmp_path / "b" / "report.md").read_text()


def test_export_format_triton(tmp_path):
    out = attnkit.export("mha", tmp_path / "t", formats="onnx,triton", check=False).out
    cfg = (out / "triton" / "mha_onnx" / "config.pbtxt").read_text()
    assert 'platform: "onnxruntime_onnx"' in cfg and (out / "triton" / "mha_onnx" / "1" / "model.onnx").is_file()
    assert attnkit.verify(out).ok  # the repository inside DIR does not disturb the manifest check


def test_package_pick_lays_out_exactly_the_recorded_pick(tiny_export, tmp_path):
    from attnkit.benchmark.harness import StoppingRule
    from attnkit.exporters.manifest import Manifest
    from attnkit.orchestration.resolve import bench
    from attnkit.orchestration.run import _record_pick

    root = tmp_path / "exp"
    shutil.copytree(tiny_export.out, root)
    with pytest.raises(AttnkitError, match="pick: the export has no deployment pick"):
        package(root, triton=tmp_path / "none", pick="latency")
    report = bench(str(root), backends=["onnxruntime", "savedmodel"], batch_sizes="1,2", seq_lens="16",
                   rule=StoppingRule(0.0, 3, 0.05), calibrate=False)  # fmt: skip
    _record_pick(root, report)
    assert Manifest.load(root).pick["threads"] == (os.cpu_count() or 1)  # bench measured on every core
    choice = Manifest.load(root).pick["throughput"]
    result = package(root, triton=tmp_path / "repo", pick="throughput")
    assert len(result.triton) == 1
    fmt = {"onnxruntime": "onnx", "savedmodel": "savedmodel"}[choice["backend"]]
    assert result.triton[0]["artifact"] == Manifest.load(root).artifact(fmt, choice["precision"]).path


def test_kserve_inference_service_serves_the_repository_with_the_measured_cpus(tiny_export, tmp_path):
    """package --kserve: KServe's Triton runtime (modelFormat triton, protocol v2) over the repository's storage
    URI, with requests equal to limits: the CPUs a recorded pick was measured with, and memory that covers the
    repository twice."""
    import yaml

    from attnkit.exporters.manifest import Manifest

    root = tmp_path / "exp"
    shutil.copytree(tiny_export.out, root)
    manifest = Manifest.load(root)
    manifest.pick = {"latency": None, "throughput": None, "threads": 3, "machine": {"cpu": "X", "class": "cpu-avx2"}}
    manifest.write(root)
    result = package(root, triton=tmp_path / "repo", kserve="pvc://models/encoder", name="Encoder_Tiny")
    doc = yaml.safe_load(Path(result.kserve).read_text())
    assert Path(result.kserve).parent == tmp_path / "repo"  # a file at the top: Triton loads no model from it
    assert doc["kind"] == "InferenceService" and doc["metadata"]["name"] == "encoder-tiny"
    model = doc["spec"]["predictor"]["model"]
    assert model["modelFormat"] == {"name": "triton"} and model["protocolVersion"] == "v2"
    assert model["storageUri"] == "pvc://models/encoder"
    assert model["resources"]["requests"] == model["resources"]["limits"]
    assert model["resources"]["limits"]["cpu"] == "3" and {"name": "OMP_NUM_THREADS", "value": "3"} in model["env"]
    repo_bytes = sum(p.stat().st_size for p in (tmp_path / "repo").rglob("*") if p.is_file())
    assert int(model["resources"]["limits"]["memory"].removesuffix("Mi")) * (1 << 20) >= 2 * repo_bytes
    assert "cpu-avx2" in doc["metadata"]["annotations"]["attnkit/measured-on"]


def test_bench_cell_measures_one_cell_of_the_grid(tiny_export, tmp_path):
    """bench --cell K (a --plan pod's share): only the K-th (batch, sequence), batch-major."""
    r = CliRunner().invoke(cli, ["bench", str(tiny_export.out), "--backends", "onnxruntime", "--no-baseline",
                                 "--batch-sizes", "1,2", "--seq-lens", "8,16", "--cell", "2", "--warmup", "0",
                                 "--min-iterations", "3", "--min-seconds", "0.05", "--out", str(tmp_path / "c")])  # fmt: skip
    assert r.exit_code == 0, r.output
    rows = json.loads((tmp_path / "c" / "results.json").read_text())["measurements"]
    assert {(m["batch"], m["seq"]) for m in rows} == {(2, 8)}


def test_plan_and_kserve_bad_input_is_one_line(tiny_export, tmp_path):
    from test_cli import assert_one_line_error, run

    code, out = run("package", tiny_export.out, "--triton", tmp_path / "r", "--kserve", "ftp://host/x")
    assert_one_line_error(code, out, "--kserve", "s3://")
    assert not (tmp_path / "r").exists()  # refused before anything was written
    code, out = run("package", tiny_export.out, "--tfserving", tmp_path / "t", "--kserve", "s3://b/r")
    assert_one_line_error(code, out, "--kserve", "--triton")
    code, out = run("package", tiny_export.out, "--triton", tmp_path / "r", "--kserve", "s3://b/r", "--name", "9x")
    assert_one_line_error(code, out, "--name")
    (tmp_path / "job.yaml").write_text("mine")
    code, out = run("bench", "encoder-tiny", "--plan", tmp_path / "job.yaml")
    assert_one_line_error(code, out, "--plan", "exists")
    assert (tmp_path / "job.yaml").read_text() == "mine"
    code, out = run("bench", "encoder-tiny", "--plan", tmp_path / "j2.yaml", "--out", tmp_path / "o")
    assert_one_line_error(code, out, "--out")
    code, out = run("bench", tiny_export.out, "--batch-sizes", "1", "--seq-lens", "8", "--cell", "1")
    assert_one_line_error(code, out, "--cell", "0..0")
