"""Defects found by trying attnkit as a new user would (issue 18), each pinned by a test that can fail."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from click.testing import CliRunner

from attnkit.cli import cli
from attnkit.errors import AttnkitError


def run(*args):
    result = CliRunner().invoke(cli, list(map(str, args)))
    return result.exit_code, result.output


def test_model_keras_loads_after_import_attnkit_alone(tiny_export, tmp_path):
    """The README calls model.keras the float32 Keras model: `import attnkit` is all a user should need."""
    script = (
        "import attnkit, keras, numpy as np\n"
        f"m = keras.models.load_model({str(tiny_export.out / 'model.keras')!r})\n"
        "print('loaded', type(m).__name__, len(m.layers))\n"
    )
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "loaded" in out.stdout


def test_verify_generate_on_an_export_without_generation_is_refused(tiny_export):
    code, output = run("verify", tiny_export.out, "--generate")
    assert code != 0 and "Traceback" not in output
    errors = [ln for ln in output.splitlines() if ln.startswith("Error")]
    assert len(errors) == 1 and "no generation export" in errors[0] and "--generate" in errors[0], output


def test_serve_triton_refuses_a_directory_it_would_serve_nothing_from(tiny_export, tmp_path, monkeypatch):
    import tempfile

    from attnkit.serving.triton import check_repository

    (tmp_path / "empty").mkdir()
    with pytest.raises(AttnkitError, match="repository: .*no model configuration"):
        check_repository(tmp_path / "empty")
    with pytest.raises(AttnkitError, match="repository: .*export directory.*attnkit package"):
        check_repository(tiny_export.out)
    # a temporary directory of its own: another test worker's files in /tmp are not this command's
    private = tmp_path / "tmpdir"
    private.mkdir()
    monkeypatch.setenv("TMPDIR", str(private))
    monkeypatch.setattr(tempfile, "tempdir", str(private))
    code, output = run("serve", "triton", tmp_path / "empty")
    assert code != 0 and "no model configuration" in output
    assert list(private.iterdir()) == []  # nothing left in TMPDIR


def test_results_writer_leaves_nothing_when_it_fails(tmp_path):
    from attnkit.exporters.manifest import write_outputs

    def broken(path):
        path.write_text("half")
        raise OSError(28, "No space left on device")

    out = tmp_path / "new" / "bench"
    with pytest.raises(AttnkitError, match="out: .*nothing was left"):
        write_outputs(out, {"results.json": lambda p: p.write_text("{}"), "results.csv": broken})
    assert not out.exists()  # a directory the call created is gone again
    keep = tmp_path / "old"
    keep.mkdir()
    (keep / "results.json").write_text("old")
    with pytest.raises(AttnkitError):
        write_outputs(keep, {"results.json": lambda p: p.write_text("new"), "results.csv": broken})
    assert (keep / "results.json").read_text() == "old" and sorted(p.name for p in keep.iterdir()) == ["results.json"]


def test_sampler_is_one_seam_for_numpy_and_tensorflow():
    import numpy as np
    import tensorflow as tf

    from attnkit.sampling import GreedySampler

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


def test_library_errors_name_the_parameter_and_the_cli_the_flag():
    from attnkit.benchmark.run import parse_int_list

    with pytest.raises(AttnkitError) as e:
        parse_int_list("1,0", "--batch-sizes")
    assert str(e.value).startswith("batch_sizes: `0` is not a positive integer")
    assert e.value.for_cli().startswith("--batch-sizes: `0` is not a positive integer")
    code, output = run("bench", "mha", "--batch-sizes", "0")
    assert code != 0 and "Error: Invalid value for '--batch-sizes'" in output  # click's own check, first
    code, output = run("verify", "/nonexistent-attnkit-dir")
    errors = [ln for ln in output.splitlines() if ln.startswith("Error")]
    assert errors == [errors[0]] and errors[0].startswith("Error: DIR: ")  # the CLI names the argument
