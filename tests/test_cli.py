"""CLI through click's CliRunner: happy path and the battery of bad input (one line, exit != 0)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from click.testing import CliRunner

from attnkit.cli import cli


def run(*args):
    result = CliRunner().invoke(cli, list(map(str, args)), catch_exceptions=False)
    return result.exit_code, result.output


def assert_one_line_error(code, output, *needles):
    assert code != 0, output
    lines = [ln for ln in output.strip().splitlines() if ln.startswith("Error")]
    assert len(lines) == 1, output
    assert "Traceback" not in output
    for needle in needles:
        assert needle in lines[0], lines[0]


def test_help_lists_commands():
    code, out = run("--help")
    assert code == 0 and "export" in out and "verify" in out and "models" in out


def test_models_json():
    code, out = run("models", "--json")
    rows = json.loads(out)
    assert code == 0 and [r["name"] for r in rows][:2] == ["mha", "encoder-tiny"]
    assert all(r["params"] > 0 and r["flops_per_seq"] > 0 for r in rows)


def test_verify_json_and_exit_code(tiny_export, tmp_path):
    code, out = run("verify", tiny_export.out, "--json", tmp_path / "r.json")
    assert code == 0 and "all 6 checks passed" in out
    assert json.loads((tmp_path / "r.json").read_text())["ok"] is True
    code, out = run("verify", tiny_export.out, "--atol", "0", "--rtol", "0")
    assert code == 1 and "FAIL" in out


def _corrupt_keras(tmp_path) -> Path:
    p = tmp_path / "broken.keras"
    with zipfile.ZipFile(p, "w") as z:
        z.writestr("config.json", "{not json")
    return p


BAD = {
    "unknown-preset": (["export", "bert-huge"], ["MODEL", "encoder-tiny"]),
    "missing-file": (["export", "nope/model.keras"], ["does not exist"]),
    "not-keras": (["export", "{txt}"], ["not a Keras file"]),
    "corrupt-keras": (["export", "{corrupt}"], ["corrupt"]),
    "format": (["export", "mha", "--format", "onnx,tflite"], ["--format", "tflite", "savedmodel"]),
    "precision": (["export", "mha", "--precision", "int4"], ["--precision", "bf16"]),
    "opset-high": (["export", "mha", "--opset", "25"], ["--opset", "13-18"]),
    "opset-low": (["export", "mha", "--opset", "7"], ["--opset"]),
    "opset-type": (["export", "mha", "--opset", "x"], ["--opset"]),
    "import": (["export", "mha", "--import", "no_such_module_xyz"], ["--import", "no_such_module_xyz"]),
    "out-exists": (["export", "mha", "--out", "{nonempty}"], ["--out", "--force"]),
    "out-unwritable": (["export", "mha", "--out", "/proc/attnkit/x"], ["--out"]),
    "verify-no-manifest": (["verify", "{empty}"], ["manifest.json"]),
    "verify-backend": (["verify", "{tiny}", "--backends", "tflite"], ["--backends", "onnxruntime"]),
    "atol-conflict": (["verify", "{tiny}", "--atol", "1e-3", "--atol", "1e-2"], ["--atol", "conflicting"]),
    "atol-nan": (["verify", "{tiny}", "--atol", "fp16=abc"], ["--atol"]),
    "json-unwritable": (["verify", "{tiny}", "--json", "/proc/attnkit/r.json"], ["--json"]),
}


@pytest.mark.parametrize("case", list(BAD), ids=list(BAD))
def test_bad_input_is_one_line(case, tmp_path, tiny_export):
    args, needles = BAD[case]
    (tmp_path / "m.txt").write_text("hello")
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("keep me")
    (tmp_path / "empty").mkdir()
    subs = {
        "{txt}": tmp_path / "m.txt",
        "{corrupt}": _corrupt_keras(tmp_path),
        "{nonempty}": tmp_path / "full",
        "{empty}": tmp_path / "empty",
        "{tiny}": tiny_export.out,
    }
    code, out = run(*[subs.get(a, a) for a in args])
    assert_one_line_error(code, out, *needles)
    assert (tmp_path / "full" / "x").read_text() == "keep me"  # nothing existing is lost


def test_d_model_not_divisible_by_heads_is_one_line(tmp_path):
    """A .keras file whose attention config asks for 5 heads on d_model=32."""
    import keras

    from attnkit.models.attention import MultiHeadAttention

    x = keras.Input((None, 32), name="x")
    keras.Model(x, MultiHeadAttention(32, 4, name="att")(x)).save(tmp_path / "ok.keras")
    bad = tmp_path / "bad.keras"
    with zipfile.ZipFile(tmp_path / "ok.keras") as src, zipfile.ZipFile(bad, "w") as dst:
        for item in src.infolist():
            data = src.read(item.filename)
            if item.filename == "config.json":
                data = data.replace(b'"num_heads": 4', b'"num_heads": 5')
            dst.writestr(item, data)
    code, out = run("export", bad, "--out", tmp_path / "o")
    assert_one_line_error(code, out, "d_model", "(32)", "(5)")


def test_tampered_artifact_is_reported(tiny_export, tmp_path):
    import shutil

    out = tmp_path / "t"
    shutil.copytree(tiny_export.out, out)
    with open(out / "model.onnx", "ab") as fh:
        fh.write(b"\0")
    code, text = run("verify", out)
    assert_one_line_error(code, text, "model.onnx", "sha256")


def test_python_m_and_help_do_not_import_heavy_libraries():
    code = (
        "import sys, attnkit, attnkit.cli, attnkit.core.errors, attnkit.core.spec; "
        "heavy = [m for m in ('tensorflow', 'onnxruntime', 'tf2onnx', 'keras', 'onnx') if m in sys.modules]; "
        "print(heavy)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    helped = subprocess.run([sys.executable, "-m", "attnkit", "--help"], capture_output=True, text=True, env=env)
    assert helped.returncode == 0 and "Usage: attnkit" in helped.stdout


def test_verify_in_a_fresh_process(tiny_export):
    """A new interpreter has none of attnkit's layers registered until it loads model.keras."""
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    run = subprocess.run(
        [sys.executable, "-m", "attnkit", "verify", str(tiny_export.out)],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert run.returncode == 0, run.stderr[-1500:]
    assert "all 6 checks passed" in run.stdout


def test_export_flags_reach_the_api(tmp_path):
    """--no-fuse and --per-tensor change the artifacts (guards the CLI -> API plumbing)."""
    code, out = run(
        "export",
        "encoder-tiny",
        "--out",
        tmp_path / "e",
        "--format",
        "onnx",
        "--precision",
        "fp32,int8",
        "--no-fuse",
        "--per-tensor",
    )
    assert code == 0, out
    manifest = json.loads((tmp_path / "e" / "manifest.json").read_text())
    onnx_records = {a["precision"]: a for a in manifest["artifacts"] if a["format"] == "onnx"}
    assert "layernorm_fused" not in onnx_records["fp32"]["extra"]["passes"]
    assert onnx_records["fp32"]["extra"]["ops"]["LayerNormalization"] == 0
    assert onnx_records["int8"]["extra"]["per_channel"] is False  # U8U8's default is per channel


def test_a_missing_custom_class_is_named(tmp_path):
    """A .keras file whose layer is registered in the user's own module, loaded where that module is not imported:
    the error names the class as registered (``package>ClassName``) and the module to --import, in one line.
    Before: Keras's own message about ``Functional``, cut mid-word."""
    import importlib.util

    import keras

    source = tmp_path / "user_layers_7f3.py"
    source.write_text(
        "import keras\n\n"
        "@keras.saving.register_keras_serializable(package='userpkg7f3')\n"
        "class Doubled(keras.layers.Layer):\n"
        "    def call(self, x):\n"
        "        return 2.0 * x\n"
    )
    spec = importlib.util.spec_from_file_location("user_layers_7f3", source)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    ids = keras.Input((None,), dtype="int32", name="token_ids")
    keras.Model(ids, module.Doubled()(keras.layers.Embedding(40, 8)(ids))).save(tmp_path / "user.keras")
    del keras.saving.get_custom_objects()["userpkg7f3>Doubled"]  # as in a process that never imported it
    code, out = run("export", tmp_path / "user.keras", "--out", tmp_path / "o")
    assert_one_line_error(
        code, out, "--import", "`userpkg7f3>Doubled`", "`user_layers_7f3`", "--import user_layers_7f3"
    )
    assert "Functional" not in out and not (tmp_path / "o").exists()


def test_library_errors_name_the_parameter_and_the_cli_the_flag():
    from attnkit.benchmark.run import parse_int_list
    from attnkit.core.errors import AttnkitError

    with pytest.raises(AttnkitError) as e:
        parse_int_list("1,0", "--batch-sizes")
    assert str(e.value).startswith("batch_sizes: `0` is not a positive integer")
    assert e.value.for_cli().startswith("--batch-sizes: `0` is not a positive integer")
    code, output = run("bench", "mha", "--batch-sizes", "0")
    assert code != 0 and "Error: Invalid value for '--batch-sizes'" in output  # click's own check, first
    code, output = run("verify", "/nonexistent-attnkit-dir")
    errors = [ln for ln in output.splitlines() if ln.startswith("Error")]
    assert errors == [errors[0]] and errors[0].startswith("Error: DIR: ")  # the CLI names the argument
