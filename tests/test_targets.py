"""Hardware-true artifacts: --target, the int8 scheme per target, hardware-fit warnings, agreement
per benchmark row, the int8 peak, machine-native defaults. Holds on AVX2-only, AVX-512/VNNI and AMX
machines: what depends on the CPU is either injected or asserted for the CPU the suite runs on."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

import attnkit
from attnkit.cli import cli
from attnkit.core import machine, targets
from attnkit.core.errors import AttnkitError
from attnkit.exporters.manifest import ArtifactRecord

AVX2 = frozenset({"avx2", "fma"})
AVX2_VNNI = AVX2 | {"avx_vnni"}
ZEN4 = AVX2 | {"avx512f", "avx512bw", "avx512_vnni", "avx512_bf16"}
AMX = ZEN4 | {"amx_tile", "amx_bf16", "amx_int8"}
SKYLAKE = AVX2 | {"avx512f", "avx512bw"}
HERE = machine.cpu_features()
HAS_VNNI = bool(HERE & set(targets.VNNI_FEATURES))


def _pretend(monkeypatch, features: frozenset[str]) -> None:
    """Make attnkit see a CPU with ``features`` (what onnxruntime and TensorFlow really use is unchanged)."""
    fake = machine.CpuInfo("Test CPU", "X86_64", frozenset(features))
    monkeypatch.setattr(machine, "cpu", lambda: fake)


@pytest.mark.parametrize(
    "name,cpu_class,scheme",
    [
        ("portable", "portable", "u8u8"),
        ("cpu-avx2", "cpu-avx2", "u8u8"),
        ("cpu-avx512", "cpu-avx512", "u8u8"),  # AVX-512 Core without VNNI still sums U8S8 pairs in 16 bits
        ("cpu-avx512-vnni", "cpu-avx512-vnni", "u8s8"),
        ("cpu-amx", "cpu-amx", "u8s8"),
        ("sm89", "portable", "u8u8"),
    ],
)
def test_every_target_gets_the_scheme_that_is_exact_there(name, cpu_class, scheme):
    t = targets.resolve(name)
    assert (t.cpu_class, t.int8.name) == (cpu_class, scheme)
    # the chosen scheme is exact on every CPU of the class: U8S8 only where VNNI/AMX is guaranteed
    assert not t.int8.exact_on or set(t.int8.exact_on) & t.features
    assert t.trt_target == ("sm89" if name == "sm89" else None)
    assert t.why() and t.int8.name in t.why()


@pytest.mark.parametrize(
    "features,cpu_class,scheme",
    [
        (AVX2, "cpu-avx2", "u8u8"),
        (AVX2_VNNI, "cpu-avx2", "u8s8"),  # AVX-VNNI (Alder Lake): MLAS's AvxVnni U8S8 kernel is exact
        (SKYLAKE, "cpu-avx512", "u8u8"),
        (ZEN4, "cpu-avx512-vnni", "u8s8"),
        (AMX, "cpu-amx", "u8s8"),
    ],
)
def test_host_target_follows_the_machine(features, cpu_class, scheme):
    t = targets.resolve("host", features=features)
    assert (t.cpu_class, t.int8.name) == (cpu_class, scheme)


def _plugin_compiles(monkeypatch, answers: dict[str, str]) -> None:
    """Make attnkit see an OpenVINO plugin that compiles each hint to ``answers[precision]``."""
    monkeypatch.setattr(machine, "openvino_compiles", lambda precision: answers.get(precision, precision))


@pytest.mark.parametrize(
    "features,plugin,bf16,fp16",
    [
        # (CPU, what the plugin reported for the bf16 and fp16 hints there, (ran, native) for bf16, for fp16)
        (AVX2, {"bf16": "fp32", "fp16": "fp32"}, ("fp32", False), ("fp32", False)),  # AVX2-only EPYC, 2026.4
        (SKYLAKE, {"bf16": "bf16", "fp16": "fp32"}, ("bf16", False), ("fp32", False)),  # taken, no bf16 dot products
        (ZEN4, {"bf16": "bf16", "fp16": "bf16"}, ("bf16", True), ("bf16", False)),  # Zen 4 and Zen 5, 2026.4
        (AMX | {"avx512_fp16"}, {"bf16": "bf16", "fp16": "fp16"}, ("bf16", True), ("fp16", True)),  # Sapphire Rapids
    ],
)
def test_openvino_warnings_say_what_the_plugin_does(monkeypatch, features, plugin, bf16, fp16):
    """What OpenVINO computes a hint in is the plugin's answer (injected here; test_openvino asks the real plugin on
    the machine that runs the suite); attnkit words its warning by it: nothing where native, "emulates" where the
    plugin takes the hint without the instructions, "computes it in X" where it compiles another precision."""
    _plugin_compiles(monkeypatch, plugin)
    assert targets.openvino_runs("bf16", features) == bf16
    assert targets.openvino_runs("fp16", features) == fp16
    assert targets.openvino_runs("fp32", features) == ("fp32", True)
    _pretend(monkeypatch, features)
    for precision, (ran, native), req in (
        ("bf16", bf16, targets.OPENVINO_BF16_REQUIREMENT),
        ("fp16", fp16, targets.OPENVINO_FP16_REQUIREMENT),
    ):
        line = targets.mismatch(ArtifactRecord("openvino", "openvino", precision, extra={"requires": req}))
        assert (line is None) == native, line
        if line:
            assert ("emulates it here" in line) == (ran == precision)
            assert (f"computes it in {ran} here" in line) == (ran != precision)
    # an int8 IR whose rest is compiled in bf16 (full PTQ + bf16): warned exactly where bf16 is, and says its rest
    ran, native = bf16
    req = targets.OPENVINO_INT8_BF16_REQUIREMENT
    line = targets.mismatch(ArtifactRecord("openvino", "openvino_int8", "int8", extra={"requires": req}))
    assert (line is None) == native, line
    if line:
        assert line.startswith("openvino_int8: int8 with the rest in bf16 (OpenVINO) needs avx512_bf16 or amx_bf16")
        assert ("emulates it here" in line) == (ran == "bf16") and ("the rest in fp32 here" in line) == (ran == "fp32")


def test_unknown_target_is_refused_with_the_valid_ones():
    with pytest.raises(AttnkitError, match=r"target.*cpu-avx512-vnni.*sm89"):
        targets.resolve("cpu-avx1024")
    r = CliRunner().invoke(cli, ["export", "mha", "--target", "gpu", "--out", "/tmp/attnkit-never"])
    assert r.exit_code == 2 and "--target" in r.output and "Traceback" not in r.output
    r = CliRunner().invoke(cli, ["export", "mha", "--target", "sm89", "--trt-target", "sm86", "--out", "/tmp/x"])
    assert r.exit_code == 2 and "--trt-target" in r.output


def _int8_record(scheme: str, target: str) -> ArtifactRecord:
    req = targets.int8_requirement(targets.INT8_SCHEMES[scheme], target)
    extra = {"int8_scheme": scheme, "target": target, **({"requires": req} if req else {})}
    return ArtifactRecord("onnx", "model.int8.onnx", "int8", extra=extra)


def test_mismatch_names_artifact_need_and_machine(monkeypatch):
    vnni_file = _int8_record("u8s8", "cpu-avx512-vnni")
    _pretend(monkeypatch, AVX2)
    line = targets.mismatch(vnni_file)
    assert line and "model.int8.onnx" in line and "avx512_vnni" in line and "Test CPU (avx2, fma)" in line
    assert "wrong answers" in line and "\n" not in line
    assert targets.affects_answers(vnni_file)
    assert targets.mismatch(_int8_record("u8u8", "portable")) is None  # exact everywhere
    legacy = ArtifactRecord("onnx", "model.int8.onnx", "int8")  # a manifest from before targets: U8S8
    assert targets.mismatch(legacy) and "avx512_vnni" in targets.mismatch(legacy)
    for features in (ZEN4, AMX, AVX2_VNNI):
        _pretend(monkeypatch, features)
        assert targets.mismatch(vnni_file) is None


def test_bf16_warning_follows_onednn_max_cpu_isa(monkeypatch):
    bf16 = ArtifactRecord("savedmodel", "savedmodel_bf16/1", "bf16", extra={"requires": targets.BF16_REQUIREMENT})
    _pretend(monkeypatch, ZEN4)
    assert targets.mismatch(bf16) is None
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")  # TensorFlow's oneDNN held below bf16
    line = targets.mismatch(bf16)
    assert line and "avx512_bf16" in line and "emulated" in line and not targets.affects_answers(bf16)
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX512_CORE_BF16")
    assert targets.mismatch(bf16) is None


def test_trt_plan_for_another_gpu_warns():
    plan = ArtifactRecord("tensorrt", "model.plan", "fp32", extra={"target": "sm89"})
    sms = machine.gpu_sms()
    line = targets.mismatch(plan)
    assert (line is None) == ("sm89" in sms)
    if line:
        assert "model.plan" in line and "sm89" in line


def test_openvino_defaults_keep_only_what_openvino_computes_natively(monkeypatch):
    """run's defaults for OpenVINO: fp16/bf16 hints only where the plugin computes them natively (else another
    precision under this name, or emulated), each left out with a note naming what is missing and how to ask."""
    SPR = AMX | {"avx512_fp16"}  # noqa: N806
    asked = ["fp32", "bf16", "fp16", "int8"]
    _plugin_compiles(monkeypatch, {})
    assert targets.openvino_defaults(asked, SPR) == (asked, [])
    _plugin_compiles(monkeypatch, {"fp16": "bf16"})  # Zen 4/5 with OpenVINO 2026.4
    kept, notes = targets.openvino_defaults(asked, ZEN4)
    assert kept == ["fp32", "bf16", "int8"] and len(notes) == 1
    assert notes[0].startswith("openvino fp16 left out") and "computes it in bf16" in notes[0]
    assert "avx512_fp16" in notes[0]
    _plugin_compiles(monkeypatch, {"bf16": "fp32", "fp16": "fp32"})
    kept, notes = targets.openvino_defaults(["fp32", "fp16", "int8"], AVX2)
    assert kept == ["fp32", "int8"] and "--openvino-precision ...,fp16" in notes[0] and "in fp32" in notes[0]
    _plugin_compiles(monkeypatch, {"fp16": "fp32"})
    kept, notes = targets.openvino_defaults(["fp32", "bf16"], SKYLAKE)  # taken without bf16 dot products
    assert kept == ["fp32"] and "emulates it" in notes[0] and "avx512_bf16 or amx_bf16" in notes[0]


def test_the_plugin_is_asked_what_it_compiles():
    """machine.openvino_compiles reads back what OpenVINO compiled, here: the answer agrees with a compile the
    test makes itself, and fp32 is always taken."""
    ov = pytest.importorskip("openvino", reason="needs the openvino extra (pip install 'attnkit[openvino]')")
    from openvino import opset13 as ops

    x = ops.parameter([2, 8], np.float32, name="x")
    model = ov.Model([ops.matmul(x, ops.constant(np.full((8, 8), 0.5, np.float32)), False, False)], [x])
    for precision, hint in (("fp32", "f32"), ("bf16", "bf16"), ("fp16", "f16")):
        took = ov.Core().compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": hint})
        name = took.get_property("INFERENCE_PRECISION_HINT").get_type_name()
        assert machine.openvino_compiles(precision) == {"f32": "fp32", "bf16": "bf16", "f16": "fp16"}[name]
    assert machine.openvino_compiles("fp32") == "fp32"


def test_run_defaults_narrow_the_openvino_precisions_and_an_explicit_list_does_not(monkeypatch, tmp_path):
    """``run`` without --precision exports OpenVINO IR records only for what OpenVINO computes natively here
    (the fp16 IR record on AVX2 would be a row of the f32 computation labelled fp16); --precision is taken as
    asked. The export is stopped at its call: what run asked of it is the point."""
    pytest.importorskip("openvino", reason="needs the openvino extra (pip install 'attnkit[openvino]')")
    from attnkit.orchestration import export as export_api
    from attnkit.orchestration import run as pipeline

    asked = []

    class Stop(Exception):
        pass

    def export(model, out, **kw):
        asked.append(kw)
        raise Stop

    monkeypatch.setattr(export_api, "export", export)
    _pretend(monkeypatch, AVX2)
    _plugin_compiles(monkeypatch, {"bf16": "fp32", "fp16": "fp32"})  # what OpenVINO 2026.4 does on AVX2
    notes = []
    with pytest.raises(Stop):
        pipeline.run("encoder-tiny", tmp_path / "a", progress=notes.append)
    assert asked[0]["precision"] == "fp32,fp16,int8" and asked[0]["openvino_precision"] == "fp32,int8"
    assert any(n.startswith("openvino fp16 left out") for n in notes)
    with pytest.raises(Stop):
        pipeline.run("encoder-tiny", tmp_path / "b", precision="fp32,fp16")
    assert asked[1]["precision"] == "fp32,fp16" and asked[1]["openvino_precision"] is None
    with pytest.raises(Stop):  # --openvino-precision is taken as given, over the defaults
        pipeline.run("encoder-tiny", tmp_path / "c", openvino_precision="fp32,fp16")
    assert asked[2]["precision"] == "fp32,fp16,int8" and asked[2]["openvino_precision"] == "fp32,fp16"


def test_reproduce_lines_carry_the_openvino_precisions_run_chose():
    """report.md's reproduce lines gave the defaulted --precision explicitly and nothing else, so they exported
    (and benched) the OpenVINO fp16 record run had left out: they now pass --openvino-precision, which both
    commands take, and parse as the CLI's own lines."""
    import shlex

    from attnkit.orchestration.report import RunSettings, _reproduce_section

    settings = RunSettings("encoder-tiny", Path("out"), ["savedmodel", "onnx", "openvino"], "fp32,fp16,int8", "1,8",
                           "128", 1.0, None, None, openvino_precision="fp32,int8")  # fmt: skip
    settings.generate = True
    lines = [ln for ln in _reproduce_section(settings).splitlines() if not ln.startswith("#")]
    parsed = {}
    for line in lines:  # every line is the CLI's own: its command and options parse (no old spelling)
        argv = shlex.split(line)[1:]
        command = cli.get_command(cli.make_context("attnkit", [argv[0]], resilient_parsing=True), argv[0])
        parsed[argv[0]] = command.make_context(argv[0], argv[1:]).params
    assert {"run", "export", "verify", "bench", "bench-generate", "package"} <= set(parsed)
    for name in ("run", "export"):
        assert parsed[name]["openvino_precision"] == ("fp32", "int8") and parsed[name]["precision"] == (
            "fp32", "fp16", "int8")  # fmt: skip
    plain = RunSettings("encoder-tiny", Path("out"), ["savedmodel", "onnx"], "fp32", "1", "128", 1.0, None, None)
    assert "--openvino-precision" not in _reproduce_section(plain)


def test_native_precisions_leave_out_emulated_bf16(monkeypatch):
    _pretend(monkeypatch, AVX2)
    precisions, notes = targets.native_precisions()
    assert "bf16" not in precisions and {"fp32", "int8"} <= set(precisions)
    assert notes and "bf16" in notes[0] and "--precision" in notes[0]
    _pretend(monkeypatch, AMX)
    assert "bf16" in targets.native_precisions()[0]


@pytest.fixture(scope="module")
def portable_int8(tmp_path_factory):
    out = tmp_path_factory.mktemp("targets") / "tiny.v2"  # a dot in the directory name
    return attnkit.export("encoder-tiny", out, formats="onnx", precision="fp32,int8")


def test_default_int8_export_agrees_on_this_machine_at_unseen_shapes(portable_int8):
    m = portable_int8.manifest
    assert m.target["name"] == "portable" and m.target["int8"]["name"] == "u8u8"
    assert m.machine["features"] == sorted(HERE) and m.machine["cpu"]
    record = m.artifact("onnx", "int8")
    assert record.extra["int8_scheme"] == "u8u8" and "requires" not in record.extra
    assert record.agreement["passed"] and record.agreement["machine"]["cpu"] == m.machine["cpu"]
    report = attnkit.verify(portable_int8.out, backends=["onnxruntime-int8"], shapes=((4, 37), (1, 64)), seed=77)
    assert report.ok and not report.warnings
    worst = report.summary()[("onnxruntime", "int8")]
    assert worst["rel_l2"] <= 3e-2 and worst["cosine"] >= 0.999
    assert worst["rel_l2"] > 1e-4  # really quantised


def test_int8_weights_have_the_type_of_the_scheme(portable_int8):
    import onnx

    model = onnx.load(portable_int8.out / "model.int8.onnx")
    weights = [i for i in model.graph.initializer if i.data_type in (onnx.TensorProto.INT8, onnx.TensorProto.UINT8)]
    assert weights and all(i.data_type == onnx.TensorProto.UINT8 for i in weights if len(i.dims) == 2)


def test_vnni_int8_file_is_right_only_where_vnni_is(tmp_path, monkeypatch):
    """U8S8 made for cpu-avx512-vnni: exact here if this CPU has VNNI/AMX; otherwise the export still
    lands (measured, recorded, warned), and verify warns and fails instead of passing silently."""
    result = attnkit.export(
        "encoder-tiny", tmp_path / "vnni", formats="onnx", precision="int8", target="cpu-avx512-vnni"
    )
    record = result.manifest.artifact("onnx", "int8")
    assert record.extra["int8_scheme"] == "u8s8" and record.extra["requires"]["cpu_any"] == list(targets.VNNI_FEATURES)
    r = CliRunner().invoke(cli, ["verify", str(result.out), "--backends", "onnxruntime-int8"])
    if HAS_VNNI:
        assert r.exit_code == 0 and "Warning" not in r.output, r.output
        assert record.agreement["passed"]
        # and on an AVX2 machine the same file warns (simulated: answers here are still exact)
        _pretend(monkeypatch, AVX2)
        r = CliRunner().invoke(cli, ["verify", str(result.out), "--backends", "onnxruntime-int8"])
        assert r.exit_code == 0 and r.output.count("Warning: model.int8.onnx") == 1
    else:
        assert r.exit_code == 1, r.output
        assert r.output.count("Warning: model.int8.onnx") == 1 and "avx512_vnni" in r.output
        assert record.agreement["passed"] is False  # the truth on this machine, recorded


def test_a_row_near_its_tolerance_must_agree_on_more_input_draws(portable_int8, monkeypatch):
    """A lowered row that agreed on its draw by a thin margin (beyond HEADROOM of its tolerance) is held to
    MORE_DRAWS more; one clear of it is not; a plan of fp32 only draws nothing more. encoder-tiny's U8U8 is
    clear (rel L2 ~0.012 of 0.03), so HEADROOM 0 stands in for a model at the edge."""
    from attnkit.benchmark.harness import StoppingRule
    from attnkit.benchmark.run import MORE_DRAWS, bench
    from attnkit.core import compare

    kw = dict(backends=["onnxruntime"], batch_sizes=(2,), seq_lens=(40,), baseline=False, calibrate=False,
              rule=StoppingRule(warmup_s=0.0, min_iterations=2, min_seconds=0.01), seed=5)  # fmt: skip

    def rows(report):
        return {m.precision: m.agreement for m in report.measurements}

    clear = rows(bench(portable_int8.out, precisions=("fp32", "int8"), **kw))
    assert "draws" not in clear["int8"] and "draws" not in clear["fp32"] and clear["int8"]["passed"]
    monkeypatch.setattr(compare, "HEADROOM", 0.0)  # every agreeing row is now "near"
    near = rows(bench(portable_int8.out, precisions=("fp32", "int8"), **kw))
    assert near["int8"]["draws"] == near["fp32"]["draws"] == 1 + MORE_DRAWS
    assert near["int8"]["rel_l2"] >= clear["int8"]["rel_l2"]  # the same first draw, and the worst of the others
    assert near["int8"]["passed"] == (near["int8"]["rel_l2"] <= compare.DEFAULT_TOLERANCES["int8"].rel_l2)
    fp32_only = rows(bench(portable_int8.out, precisions=("fp32",), **kw))
    assert "draws" not in fp32_only["fp32"]  # no lowered precision planned: no more references drawn


def test_verify_holds_a_check_near_its_tolerance_to_more_input_draws(portable_int8, monkeypatch):
    """verify (and so the export check) applies the bench's rule: a shape that agreed beyond HEADROOM of its
    rel-L2 tolerance must agree on MORE_DRAWS more draws, and reports the worst; clear ones and fp32-only
    checks draw nothing more. HEADROOM 0 stands in for a model at the edge (encoder-tiny's U8U8 is clear)."""
    from attnkit.core import compare

    kw = dict(shapes=((2, 40), (3, 17)), seed=5)

    def worst(report, precision):
        return {r.shape: max(a.rel_l2 for a in r.agreements) for r in report.results if r.precision == precision}

    clear = attnkit.verify(portable_int8.out, **kw)
    assert clear.ok and all(r.draws == 1 for r in clear.results)
    monkeypatch.setattr(compare, "HEADROOM", 0.0)  # every agreeing check is now "near"
    near = attnkit.verify(portable_int8.out, **kw)
    by = {(r.precision, r.batch, r.seq): r for r in near.results}
    assert {r.draws for r in near.results} == {1 + compare.MORE_DRAWS}
    for (precision, b, s), r in by.items():  # the same first draw, and the worst of the others
        first = worst(clear, precision)[f"{b}x{s}"]
        assert max(a.rel_l2 for a in r.agreements) >= first and r.shape == f"{b}x{s} (worst of 3 draws)"
        assert r.to_dict()["draws"] == 3
    assert near.summary()[("onnxruntime", "int8")]["draws"] == 3
    fp32_only = attnkit.verify(portable_int8.out, backends=["onnxruntime-fp32"], **kw)
    assert {r.precision for r in fp32_only.results} == {"fp32"} and all(r.draws == 1 for r in fp32_only.results)


def test_bench_int8_on_dotted_dir_carries_agreement_per_row(portable_int8, tmp_path):
    out = tmp_path / "results.v2"
    r = CliRunner().invoke(
        cli,
        [
            "bench", str(portable_int8.out), "--backends", "onnxruntime", "--precision", "fp32,int8",
            "--batch-sizes", "2", "--seq-lens", "24", "--warmup", "0.05", "--min-iterations", "3",
            "--min-seconds", "0.05", "--out", str(out),
        ],
    )  # fmt: skip
    assert r.exit_code == 0, r.output
    data = json.loads((out / "results.json").read_text())
    rows = {(m["backend"], m["precision"]): m for m in data["measurements"]}
    assert set(rows) == {("keras", "fp32"), ("onnxruntime", "fp32"), ("onnxruntime", "int8")}
    for m in rows.values():
        assert m["agreement"]["passed"] is True and m["agrees"] is True and m["status"] == "ok"
    assert 1e-4 < rows[("onnxruntime", "int8")]["agreement"]["rel_l2"] <= 3e-2
    assert rows[("onnxruntime", "fp32")]["agreement"]["rel_l2"] <= 1e-5
    int8_peak = data["calibration"]["int8"]  # the export's scheme measured, beside OpenVINO's int8 kernel
    assert int8_peak["by_library"]["onnxruntime"] > 0 and int8_peak["gflops"] >= int8_peak["by_library"]["onnxruntime"]
    assert rows[("onnxruntime", "int8")]["pct_of_peak"] > 0
    assert data["best"]["backend"] == "onnxruntime"
    csv_head = (out / "results.csv").read_text().splitlines()[0]
    assert "agrees" in csv_head and "rel_l2" in csv_head


def test_a_row_that_disagrees_is_marked_and_never_the_headline(tmp_path):
    from attnkit.benchmark import report as render
    from attnkit.benchmark.run import BenchReport, Measurement
    from attnkit.benchmark.stats import Latency

    rng = np.random.default_rng(5)

    def row(backend, precision, ms, passed):
        m = Measurement(backend, precision, 8, 128, latency=Latency.from_ns(list((ms + rng.random(20)) * 1e6)))
        m.agreement = {"passed": passed, "rel_l2": 0.0 if passed else 0.24, "cosine": 1.0, "max_abs": 0.0,
                       "tolerance": precision, "failures": [] if passed else ["y: relative L2 error 0.24 > 0.03"]}  # fmt: skip
        return m

    rows = [
        row("keras", "fp32", 100.0, True),
        row("onnxruntime", "fp32", 50.0, True),
        row("onnxruntime", "int8", 10.0, False),
    ]
    for m in rows:
        m.speedup = 100.0 / m.latency.mean
    env = {"cores": 2, "cpu_flags": {}, "versions": {}}
    config = {"batch_sizes": [8], "seq_lens": [128]}
    report = BenchReport("m", config, env, {}, rows)
    assert report.best() is rows[1]
    data = report.to_dict()
    assert data["best"]["precision"] == "fp32" and data["measurements"][2]["status"] == "disagrees"
    assert any("int8" in w and "does not count" in w for w in data["warnings"])
    md = render.to_markdown(data)
    assert "**NO**" in md and "1 row(s) failed agreement" in md and "Best: onnxruntime [fp32]" in md
    assert "disagrees" in render.to_csv(report)
    render.plot_throughput(report, tmp_path / "t.png")
    assert (tmp_path / "t.png").stat().st_size > 1000


def test_int8_peak_uses_the_model_kernel():
    from attnkit.benchmark.roofline import _onnxruntime_int8_matmul

    for scheme in ("u8u8", "u8s8"):
        peak = _onnxruntime_int8_matmul(scheme, n=512, seconds=0.2)
        assert peak["gflops"] > 1 and scheme in peak["kernel"] and peak["calls"] >= 3


def test_env_reports_class_and_scheme():
    r = CliRunner().invoke(cli, ["env", "--json"])
    assert r.exit_code == 0
    data = json.loads(r.output)
    cls = data["machine"]["cpu class (export --target host)"]
    assert cls.split(";")[0] == targets.host_class(HERE)
    assert ("u8s8" in cls) == HAS_VNNI
    # OpenVINO int8 for --target host: measured at export where the CPU computes int8, else weight-only and why
    said = data["machine"]["OpenVINO int8 (export --target host)"]
    assert said.startswith("measured at export") == HAS_VNNI and ("no VNNI/AMX" in said) != HAS_VNNI


@pytest.mark.skipif(not HAS_VNNI, reason="needs a CPU with avx512_vnni, avx_vnni or amx_int8 (U8S8 exact there)")
def test_host_target_on_a_vnni_machine_exports_u8s8_that_agrees(tmp_path):
    result = attnkit.export("mha", tmp_path / "h", formats="onnx", precision="int8", target="host")
    assert result.manifest.artifact("onnx", "int8").extra["int8_scheme"] == "u8s8" and result.report.ok
