"""Every OpenVINO precision and int8 candidate beside onnxruntime's, on this machine, in one run.

    python scripts/measure_openvino_int8.py encoder-base --batch 8 --seq 128

With ``--search``, also the export's own int8 search (``attnkit.exporters.openvino_int8.choose``) forced on
this machine, as ``--target host`` runs it on a VNNI/AMX CPU: each candidate and what it would write.

The evidence an AVX-512/VNNI or AMX session needs to choose OpenVINO's int8 per target (issue 19: full
post-training quantisation vs weight-only, OpenVINO's dynamic activation quantisation on or off) and to
check the deployment pick against every configuration of OpenVINO and onnxruntime on the same file. For
the preset: export ONNX + OpenVINO IR (fp32, int8 for ``--target host``) once; then for each candidate,
the worst relative L2 / cosine against eager fp32 Keras on fresh inputs at two shapes, whether it is
within its precision's tolerance, the precision OpenVINO reports it ran in, and its median latency as a
multiple of onnxruntime fp32 at --batch x --seq. NNCF's calibration draws from the model's own input
domain (``spec.sample_feeds``: token ids in the vocabulary, ragged padding masks). Prints a markdown
table with the machine's CPU features (what BENCHMARKS.md quotes).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path


def median_ms(call, seconds: float) -> float:
    call()
    times, start = [], time.perf_counter()
    while len(times) < 5 or time.perf_counter() - start < seconds:
        t0 = time.perf_counter()
        call()
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("preset")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seq", type=int, default=128)
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--calibration", type=int, default=32, help="NNCF calibration samples")
    ap.add_argument("--search", action="store_true", help="also run the export's int8 search, forced")
    args = ap.parse_args()

    import nncf
    import onnxruntime as ort
    import openvino as ov
    from nncf.quantization.advanced_parameters import AdvancedQuantizationParameters, OverflowFix

    import attnkit
    from attnkit.core.compare import DEFAULT_TOLERANCES, compare_outputs
    from attnkit.core.machine import cpu
    from attnkit.core.targets import host_class
    from attnkit.runtimes.base import Source
    from attnkit.runtimes.openvino import RAN_AS
    from attnkit.runtimes.registry import get_runner

    info = cpu()
    core = ov.Core()
    print(f"CPU: {info.brand}; class {host_class(info.features)}; features: {', '.join(sorted(info.features))}")
    print(f"OpenVINO {ov.__version__} (capabilities {', '.join(core.get_property('CPU', 'OPTIMIZATION_CAPABILITIES'))});"
          f" NNCF {nncf.__version__}; onnxruntime {ort.__version__}")  # fmt: skip
    print(f"accuracy at 2x45 and {args.batch}x{args.seq}; speed at {args.batch}x{args.seq}\n")
    with tempfile.TemporaryDirectory() as tmp:
        out = attnkit.export(args.preset, Path(tmp) / "e", formats="onnx,openvino", precision="fp32,int8",
                             target="host", check=False).out  # fmt: skip
        source = Source(out)
        spec = source.spec
        shapes = [(2, 45), (args.batch, args.seq)]
        feeds = {s: spec.sample_feeds(*s, seed=300 + i) for i, s in enumerate(shapes)}
        with get_runner("keras")(source) as keras:
            ref = {s: keras.infer(f) for s, f in feeds.items()}
        timed = feeds[shapes[-1]]

        def report(label: str, ran_as: str, tolerance: str, infer) -> float:
            worst_l2, worst_cos, ok = 0.0, 1.0, True
            for s, f in feeds.items():
                for a in compare_outputs(ref[s], infer(f), DEFAULT_TOLERANCES[tolerance]):
                    worst_l2, worst_cos, ok = max(worst_l2, a.rel_l2), min(worst_cos, a.cosine), ok and a.passed
            ms = median_ms(lambda: infer(timed), args.seconds)
            print(f"| {label} | {ran_as} | {worst_l2:.3g} | {worst_cos:.5f} | {'yes' if ok else 'NO'} | {ms:.1f} | "
                  f"{base_ms / ms:.2f} |", flush=True)  # fmt: skip
            return ms

        def onnxruntime(path: Path):
            session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
            names = [o.name for o in session.get_outputs()]
            wanted = {i.name for i in session.get_inputs()}
            return lambda f: dict(zip(names, session.run(names, {k: v for k, v in f.items() if k in wanted})))

        def openvino(model, config: dict):
            compiled = core.compile_model(model, "CPU", {"PERFORMANCE_HINT": "LATENCY", **config})
            request = compiled.create_infer_request()
            outputs = [(o, o.any_name) for o in compiled.outputs]
            took = compiled.get_property("INFERENCE_PRECISION_HINT").get_type_name()
            dq = compiled.get_property("DYNAMIC_QUANTIZATION_GROUP_SIZE")

            def infer(f):
                result = request.infer(f)
                return {name: result[port].copy() for port, name in outputs}

            return infer, f"{RAN_AS.get(took, took)}, dynamic quant. {dq}"

        ov8 = source.manifest.artifact("openvino", "int8")
        xml8, scheme = str(out / ov8.path / "model.xml"), ov8.extra.get("scheme", "weight-only")
        print(f"the export's OpenVINO int8 (--target host): {scheme}\n")
        print("| candidate | ran as | rel L2 (worst) | cosine (worst) | within tolerance | ms | x onnxruntime fp32 |")
        print("|---|---|---:|---:|---|---:|---:|")
        base = onnxruntime(out / "model.onnx")
        base_ms = median_ms(lambda: base(timed), args.seconds)
        report("onnxruntime fp32", "fp32", "fp32", base)
        int8 = source.manifest.artifact("onnx", "int8")
        report(f"onnxruntime int8 ({int8.extra.get('int8_scheme')}, --target host)", "int8", "int8",
               onnxruntime(out / int8.path))  # fmt: skip
        xml = str(out / "openvino" / "model.xml")
        for label, model, config, tolerance in [
            ("OpenVINO defaults", xml, {}, "bf16"),
            ("OpenVINO f32", xml, {"INFERENCE_PRECISION_HINT": "f32"}, "fp32"),
            ("OpenVINO bf16", xml, {"INFERENCE_PRECISION_HINT": "bf16"}, "bf16"),
            ("OpenVINO f16", xml, {"INFERENCE_PRECISION_HINT": "f16"}, "fp16"),
            *[
                (
                    f"OpenVINO {scheme} int8, dynamic quant. {g}",
                    xml8,
                    {"INFERENCE_PRECISION_HINT": "f32", "DYNAMIC_QUANTIZATION_GROUP_SIZE": g},
                    "int8",
                )  # fmt: skip
                for g in (0, 32, 128)
            ],
            (f"OpenVINO {scheme} int8 + bf16", xml8, {"INFERENCE_PRECISION_HINT": "bf16"}, "int8"),
            (
                f"OpenVINO {scheme} int8 + bf16, dynamic quant. 32",
                xml8,
                {"INFERENCE_PRECISION_HINT": "bf16", "DYNAMIC_QUANTIZATION_GROUP_SIZE": 32},
                "int8",
            ),
        ]:
            infer, ran_as = openvino(model, config)
            report(label, ran_as, tolerance, infer)

        calibration = [spec.sample_feeds(args.batch, args.seq, seed=1000 + i) for i in range(args.calibration)]
        for label, advanced in [
            ("NNCF PTQ (transformer)", AdvancedQuantizationParameters()),
            ("NNCF PTQ + overflow fix", AdvancedQuantizationParameters(overflow_fix=OverflowFix.ENABLE)),
        ]:
            try:
                quantised = nncf.quantize(core.read_model(xml), nncf.Dataset(calibration), subset_size=len(calibration),
                                          model_type=nncf.ModelType.TRANSFORMER, advanced_parameters=advanced)  # fmt: skip
            except Exception as e:  # one candidate failing must not lose the others
                print(f"| {label} | - | - | - | error: {type(e).__name__}: {str(e).splitlines()[0][:80]} | - | - |")
                continue
            for hint in ("f32", "bf16"):  # int8 MatMuls; the rest in f32 (attnkit's runner) or bf16 (AMX's default)
                infer, ran_as = openvino(quantised, {"INFERENCE_PRECISION_HINT": hint})
                report(f"{label}, rest {hint}", ran_as, "int8", infer)

        if args.search:
            from attnkit.benchmark.harness import StoppingRule, measure
            from attnkit.exporters.openvino_int8 import choose

            choice = choose(xml, spec, info.features, force=True,
                            timer=lambda call: measure(call, StoppingRule(0.2, 5, 1.0, 2.0)).p50)  # fmt: skip
            print(f"\nexport's int8 search (forced), timed at {spec.batch.opt}x{spec.sequence.opt}: writes "
                  f"**{choice.name}** ({choice.reason})\n")  # fmt: skip
            print("| candidate | rel L2 (worst) | within | ms | x fp32 IR | ran as |\n|---|---:|---|---:|---:|---|")
            for c in choice.candidates:
                print(f"| {c.name} | {c.rel_l2 if c.rel_l2 is None else f'{c.rel_l2:.3g}'} | {c.within} | "
                      f"{c.ms if c.ms is None else f'{c.ms:.1f}'} | "
                      f"{c.speedup if c.speedup is None else f'{c.speedup:.2f}'} | {c.error or c.ran_as} |")  # fmt: skip


if __name__ == "__main__":
    main()
