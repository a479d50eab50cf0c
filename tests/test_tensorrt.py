"""TensorRT: plans built on this CPU-only machine with TensorRT-RTX; running them needs a GPU."""

from __future__ import annotations

import json

import onnx
import pytest
from click.testing import CliRunner
from onnx import TensorProto, helper
from test_generation import preset_or_tiny

import attnkit
from attnkit.cli import cli
from attnkit.core.errors import AttnkitError, ExportError
from attnkit.core.spec import ExportSpec, TensorSpec
from attnkit.exporters.manifest import sha256_path
from attnkit.exporters.tensorrt import build_plan, detect, parse_range

pytestmark = pytest.mark.tensorrt
if detect() is None:
    pytest.skip("no TensorRT Python package (pip install 'attnkit[tensorrt-rtx]')", allow_module_level=True)

#: sequence ranges within every model's positions (the tiny decoder has 96: a longer profile is refused)
PROFILES = {"batch": ("1:8:32", "32:64:96"), "seq": ("16:64:96", "8:16:32")}


def target():
    flavour = detect()
    return "sm89" if "sm89" in flavour.aot_targets else None


@pytest.fixture(scope="module", params=["mha", "encoder-tiny", "decoder"])
def plans(request, tmp_path_factory):
    out = tmp_path_factory.mktemp("trt") / request.param
    return attnkit.export(
        preset_or_tiny(request.param, tmp_path_factory),
        out,
        formats="onnx,tensorrt",
        precision="fp32,fp16",
        trt_target=target(),
        batch=PROFILES["batch"],
        seq=PROFILES["seq"],
    )


@pytest.mark.parametrize("precision,name", [("fp32", "model.plan"), ("fp16", "model.fp16.plan")])
def test_plans_build_with_two_profiles(plans, precision, name):
    record = plans.manifest.artifact("tensorrt", precision)
    assert record.path == name and record.bytes > 0
    assert record.sha256 == sha256_path(plans.out / name)
    sidecar = json.loads((plans.out / f"{name}.json").read_text())
    assert sidecar["sha256"] == record.sha256 and sidecar["plan_bytes"] == record.bytes
    assert sidecar["flavour"] == detect().name and sidecar["precision"] == precision
    assert sidecar["target"] == (target() or "current")
    assert [p["batch"] for p in sidecar["profiles"]] == [[1, 8, 32], [32, 64, 96]]
    assert [p["sequence"] for p in sidecar["profiles"]] == [[16, 64, 96], [8, 16, 32]]
    first = next(iter(sidecar["profiles"][0]["shapes"].values()))
    assert first["min"][:2] == [1, 16] and first["max"][:2] == [32, 96]
    layers = sidecar["engine_layers"]
    assert layers["count"] > 0 and any(layer["onnx_nodes"] for layer in layers["layers"])
    assert {t["name"] for t in sidecar["io"]} == set(plans.manifest.spec.input_names + plans.manifest.spec.output_names)
    if target():
        assert "sm89" in sidecar["runs_on"] and "only" in sidecar["runs_on"]


def test_fp16_plan_is_built_from_the_fp16_graph(plans):
    sidecar = json.loads((plans.out / "model.fp16.plan.json").read_text())
    assert sidecar["onnx"] == "model.fp16.onnx"
    if detect().strongly_typed:
        assert sidecar["build_path"].startswith("strongly typed")


def test_verify_lists_plans_as_skipped_without_gpu(plans):
    from attnkit.core.machine import gpu_unavailable_reason

    reason = gpu_unavailable_reason()
    if reason is None:
        pytest.skip("a GPU is present: the plans really run (see test_plan_agrees_on_gpu)")
    trt = [r for r in plans.report.results if r.backend == "tensorrt"]
    assert trt and all(r.skipped == reason and not r.failed for r in trt)
    assert plans.report.ok


def test_only_skipped_checks_say_nothing_ran_and_plans_warn(plans, tmp_path):
    """verify --backends tensorrt without a GPU: one line saying nothing ran and why (not "0 failed");
    a plan for another architecture warns; adding a plan that exists needs --force; a corrupt sidecar
    is one line."""
    import shutil

    from attnkit.core.machine import gpu_sms, gpu_unavailable_reason
    from attnkit.exporters.manifest import sha256_path

    reason = gpu_unavailable_reason()
    r = CliRunner().invoke(cli, ["verify", str(plans.out), "--backends", "tensorrt"])
    if reason:
        errors = [line for line in r.output.splitlines() if line.startswith("Error")]
        assert r.exit_code == 2 and len(errors) == 1 and "nothing was checked" in errors[0] and reason in errors[0]
    if target() and target() not in gpu_sms():
        assert r.output.count("Warning: model.plan: TensorRT plan for sm89") == 1
    before = sha256_path(plans.out)
    r = CliRunner().invoke(cli, ["export", str(plans.out), "--format", "tensorrt", "--precision", "fp32"])
    assert r.exit_code == 2 and "--force" in r.output and "model.plan" in r.output
    assert sha256_path(plans.out) == before
    shutil.copy(plans.out / "model.plan", tmp_path / "model.plan")
    (tmp_path / "model.plan.json").write_text("{not json")
    r = CliRunner().invoke(cli, ["inspect", str(tmp_path / "model.plan")])
    assert r.exit_code == 2 and "not a valid plan sidecar" in r.output and "Traceback" not in r.output


@pytest.mark.gpu
def test_plan_agrees_on_gpu(plans):
    report = attnkit.verify(plans.out, backends=["tensorrt"])
    assert report.ok and all(r.skipped is None for r in report.results)


def test_second_build_reuses_the_timing_cache(tmp_path):
    out = attnkit.export("encoder-tiny", tmp_path / "c", formats="onnx", check=False).out
    attnkit.export(str(out), formats="tensorrt", trt_target=target())
    first = json.loads((out / "model.plan.json").read_text())["cache"]
    assert first["reused"] is False and first["bytes_after"] > 0
    attnkit.export(str(out), formats="tensorrt", trt_target=target(), force=True)  # a rebuild needs --force
    second = json.loads((out / "model.plan.json").read_text())["cache"]
    assert second["reused"] is True and second["bytes_before"] == first["bytes_after"]
    assert attnkit.verify(out).ok  # manifest and artifacts still consistent after the in-place rebuild


@pytest.mark.parametrize("text", ["8:1:32", "0:1:2", "1:2", "a:b:c"])
def test_invalid_profile(text):
    with pytest.raises(AttnkitError, match="batch"):
        parse_range(text, "--batch")


def test_profile_longer_than_the_model(tmp_path):
    code = CliRunner().invoke(
        cli,
        [
            "export",
            "encoder-tiny",
            "--out",
            str(tmp_path / "x"),
            "--format",
            "tensorrt",
            "--trt-target",
            "sm89",
            "--seq",
            "16:128:4096",
        ],
    )
    assert code.exit_code != 0 and "--seq" in code.output and "512" in code.output and "Traceback" not in code.output
    assert not (tmp_path / "x").exists()


def test_unsupported_target_lists_valid_ones(tmp_path):
    code = CliRunner().invoke(
        cli, ["export", "mha", "--out", str(tmp_path / "x"), "--format", "tensorrt", "--trt-target", "sm90"]
    )
    assert code.exit_code != 0 and "--trt-target" in code.output and "Traceback" not in code.output
    if detect().aot_targets:
        assert "sm89" in code.output


def test_unsupported_op_lists_the_failing_node(tmp_path):
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", "sequence", 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", "sequence", 4])
    node = helper.make_node("MysteryOp", ["x"], ["y"], name="the_bad_node", domain="com.example")
    model = helper.make_model(
        helper.make_graph([node], "g", [x], [y]),
        opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.example", 1)],
    )
    onnx.save(model, tmp_path / "bad.onnx")
    spec = ExportSpec(
        "bad",
        (TensorSpec("x", "float32", (None, None, 4), ("batch", "sequence", None)),),
        (TensorSpec("y", "float32", (None, None, 4), ("batch", "sequence", None)),),
    )
    from attnkit.core.spec import ShapeRange

    with pytest.raises(ExportError, match="the_bad_node.*MysteryOp"):
        build_plan(
            tmp_path / "bad.onnx", spec, "fp32", [(ShapeRange(1, 2, 4), ShapeRange(1, 2, 4))], target() or "current"
        )


def test_inspect_prints_the_plan_and_catches_tampering(plans, tmp_path):
    result = CliRunner().invoke(cli, ["inspect", str(plans.out / "model.plan")])
    assert result.exit_code == 0 and "optimisation profiles" in result.output and "engine layers" in result.output
    import shutil

    shutil.copy(plans.out / "model.plan", tmp_path / "model.plan")
    shutil.copy(plans.out / "model.plan.json", tmp_path / "model.plan.json")
    with open(tmp_path / "model.plan", "ab") as fh:
        fh.write(b"x")
    result = CliRunner().invoke(cli, ["inspect", str(tmp_path / "model.plan")])
    assert result.exit_code != 0 and "sha256" in result.output and "Traceback" not in result.output


def test_env_reports_every_backend_truthfully():
    result = CliRunner().invoke(cli, ["env", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    rows = {(b["backend"], b["precision"]): b for b in data["backends"]}
    assert rows[("onnxruntime", "int8")]["available"] is True
    from attnkit.core.machine import gpu_unavailable_reason

    if gpu_unavailable_reason():
        for name in ("tensorrt", "onnxruntime-cuda", "onnxruntime-trt"):
            assert rows[(name, "fp32")]["available"] is False and "GPU" in rows[(name, "fp32")]["reason"]
    assert data["tensorrt"]["flavour"] == detect().name and data["tensorrt"]["version"] == detect().version
    assert "avx512f=" in data["machine"]["speed flags"]
