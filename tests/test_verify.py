"""verify and compare_outputs: statistics, failures collected, integrity, JSON report."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

import attnkit
from attnkit.checks.agreement import resolve_tolerance
from attnkit.core.compare import DEFAULT_TOLERANCES, Tolerance, compare_outputs
from attnkit.core.errors import ArtifactError, BackendError

TIGHT = Tolerance(atol=1e-3, rtol=0.0, rel_l2=1e-2, min_cosine=0.999)


def test_compare_statistics_on_known_arrays(rng):
    ref = rng.standard_normal((4, 8)).astype("float32") + 3.0
    got = ref.copy()
    got[1, 2] += 0.01
    (a,) = compare_outputs({"y": ref}, {"y": got}, TIGHT)
    assert a.max_abs == pytest.approx(0.01, rel=1e-3)
    assert a.required_atol == pytest.approx(0.01, rel=1e-3)
    assert a.max_rel == pytest.approx(0.01 / abs(ref[1, 2]), rel=1e-3)
    assert a.required_rtol == pytest.approx((0.01 - 1e-3) / abs(ref[1, 2]), rel=1e-3)
    assert not a.passed and "max abs diff 0.01" in a.failures[0]
    (b,) = compare_outputs({"y": ref}, {"y": got}, TIGHT.override(atol=0.02))
    assert b.passed


def test_compare_collects_every_failure(rng):
    ref = {"a": rng.standard_normal((3, 3)), "b": rng.standard_normal((2,)), "c": rng.standard_normal((2, 2))}
    got = {"a": -ref["a"], "b": np.array([np.nan, np.inf]), "c": np.zeros((3, 2))}
    by = {x.output: x for x in compare_outputs(ref, got, TIGHT)}
    assert by["a"].cosine == pytest.approx(-1.0) and len(by["a"].failures) == 3
    assert (by["b"].nan, by["b"].inf) == (1, 1) and not by["b"].passed
    assert "shape" in by["c"].failures[0]
    (missing,) = compare_outputs({"z": np.ones(2)}, {}, TIGHT)
    assert "missing" in missing.failures[0]


def test_int8_tolerance_is_cosine_and_l2_only(rng):
    ref = rng.standard_normal(1000)
    got = ref + rng.standard_normal(1000) * 0.01  # 1 % noise: elementwise-off, direction kept
    (a,) = compare_outputs({"y": ref}, {"y": got}, DEFAULT_TOLERANCES["int8"])
    assert a.passed and a.cosine > 0.999


def test_worst_draw_keeps_a_failing_draw_over_a_larger_passing_error(rng):
    """Per output: the draw that failed (even on another criterion than rel L2) stands for the draws; without
    a failure, the largest rel L2. The rule that sends a shape to more draws is beyond HEADROOM of rel L2."""
    from attnkit.core.compare import HEADROOM, beyond_headroom, worst_draw

    ref = {"y": rng.standard_normal((4, 64)), "z": rng.standard_normal((4, 8))}
    tol = DEFAULT_TOLERANCES["int8"]

    def draw(scale_y, flip_z=False):
        got = {"y": ref["y"] * (1 + scale_y), "z": -ref["z"] if flip_z else ref["z"] * 1.001}
        return compare_outputs(ref, got, tol)

    small, large, failing = draw(0.005), draw(0.025), draw(0.001, flip_z=True)
    y, z = worst_draw([small, large, failing])
    assert y.rel_l2 == pytest.approx(0.025) and y.passed  # the largest error of y: it never failed
    assert not z.passed and z.cosine == pytest.approx(-1.0)  # the failing draw of z, not the largest passing one
    assert all(a.passed for a in worst_draw([small, large]))
    assert beyond_headroom(large[0].rel_l2, tol.rel_l2) and not beyond_headroom(small[0].rel_l2, tol.rel_l2)
    assert HEADROOM * tol.rel_l2 == pytest.approx(0.02)


def test_tolerance_overrides_per_precision():
    assert resolve_tolerance("fp16", {"fp16": 0.5}, None).atol == 0.5
    assert resolve_tolerance("fp32", {"fp16": 0.5}, None).atol == DEFAULT_TOLERANCES["fp32"].atol
    assert resolve_tolerance("bf16", {"*": 0.3}, 0.2).rtol == 0.2


def test_verify_passes_on_fresh_export_with_two_shapes(tiny_export, tmp_path):
    report = attnkit.verify(tiny_export.out, seed=42)
    assert report.ok
    assert {(r.backend, r.precision) for r in report.results} == {
        ("tf-function", "fp32"),
        ("savedmodel", "fp32"),
        ("onnxruntime", "fp32"),
    }
    assert len({(r.batch, r.seq) for r in report.results}) == 2
    for r in report.results:
        for a in r.agreements:
            assert 0 < a.rel_l2 <= 1e-5  # non-zero: the graphs really are different computations
    d = report.to_dict()
    assert d["ok"] and d["results"][0]["outputs"][0]["output"] == "hidden_states"
    json.dumps(d)


def test_verify_detects_a_changed_function(tiny_export, tmp_path):
    """Swap the ONNX for another model's: the manifest hash catches it; a re-hashed swap fails agreement."""
    import onnx
    from onnx import numpy_helper

    out = tmp_path / "t"
    shutil.copytree(tiny_export.out, out)
    model = onnx.load(out / "model.onnx")
    init = next(t for t in model.graph.initializer if tuple(t.dims) == (128, 512))  # an FFN kernel
    arr = numpy_helper.to_array(init) * 1.05
    init.CopyFrom(numpy_helper.from_array(arr, init.name))
    onnx.save(model, out / "model.onnx")
    with pytest.raises(ArtifactError, match=r"model\.onnx: sha256"):
        attnkit.verify(out)
    # Same tampering, manifest updated to match: the numbers themselves must now fail.
    from attnkit.exporters.manifest import Manifest, sha256_path

    m = Manifest.load(out)
    m.artifact("onnx").sha256 = sha256_path(out / "model.onnx")
    m.write(out)
    report = attnkit.verify(out)
    assert not report.ok
    bad = [r for r in report.results if not r.passed]
    assert {r.backend for r in bad} == {"onnxruntime"}


def test_verify_refuses_directory_without_manifest(tmp_path):
    with pytest.raises(ArtifactError, match="no manifest.json"):
        attnkit.verify(tmp_path)


def test_verify_unknown_backend_lists_valid_ones(tiny_export):
    with pytest.raises(BackendError, match="onnxruntime"):
        attnkit.verify(tiny_export.out, backends=["tensorflow-lite"])


def test_verify_xla_backend_on_request(tiny_export):
    report = attnkit.verify(tiny_export.out, backends=["xla"])
    assert [r.backend for r in report.results] == ["xla", "xla"] and report.ok


def test_a_failure_just_beyond_its_tolerance_reads_beyond_it(rng):
    """A rel L2 of 0.03001 against int8's 0.03 printed "0.03 > 0.03" (bench --generate, keras-hub GPT-2)."""
    ref = rng.standard_normal(4096)
    noise = rng.standard_normal(4096)
    got = ref + noise * (0.030012 * np.linalg.norm(ref) / np.linalg.norm(noise))
    (a,) = compare_outputs({"y": ref}, {"y": got}, DEFAULT_TOLERANCES["int8"])
    assert a.failures == ["relative L2 error 0.03001 > 0.03"]
    (b,) = compare_outputs({"y": ref}, {"y": ref * 1.5}, TIGHT)  # far beyond: three digits as before
    assert "relative L2 error 0.5 > 0.01" in b.failures


def test_a_row_is_judged_by_the_precision_it_ran_in(rng):
    """A runner that asked fp16 and says it computed bf16 (OpenVINO's f16 hint on AMD Zen 4/5) is held to bf16's
    tolerance and says so; the same answers from a runner that computed fp16 fail fp16's; a tolerance given on the
    command line stays the asked precision's."""
    from attnkit.checks.agreement import _check, judged_tolerance

    ref = rng.standard_normal((2, 16, 32)).astype("float32")
    noise = rng.standard_normal(ref.shape).astype("float32")
    got = ref + 0.015 * np.linalg.norm(ref) / np.linalg.norm(noise) * noise  # rel L2 0.015: fp16 < it < bf16

    class Runner:
        name, precision = "openvino", "fp16"

        def __init__(self, ran_as):
            self.ran_as = ran_as

        def unavailable_reason(self):
            return None

        def load(self):
            return self

        def infer(self, feeds):
            return {"y": got}

        def close(self):
            pass

    feeds, reference = {(2, 16): {}}, {(2, 16): {"y": ref}}
    (as_bf16,) = _check(Runner("bf16"), feeds, reference, judged_tolerance("fp16", None, None))
    assert as_bf16.passed and as_bf16.ran_as == "bf16"
    (as_fp16,) = _check(Runner("fp16"), feeds, reference, judged_tolerance("fp16", None, None))
    assert not as_fp16.passed and as_fp16.ran_as is None
    (asked,) = _check(Runner("bf16"), feeds, reference, judged_tolerance("fp16", 1e9, None))
    assert not asked.passed  # --atol given: fp16's rel-L2 bound still applies
