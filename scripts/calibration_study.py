"""Calibrating on the user's data against calibrating on random ids: each static int8 scheme attnkit can write,
calibrated both ways, scored by the task metric on the data's held-out rows (issue 35, "calibrating on the user's
data is never worse than on random ids, measured").

    python scripts/calibration_study.py /tmp/bytelm/exp /tmp/bytelm/heldout.npz
    python scripts/calibration_study.py /tmp/translator/exp /tmp/translator/heldout.npz

DIR is an export with ``model.onnx`` and an OpenVINO fp32 IR (``--format onnx,openvino``). Random ids are what
attnkit calibrates on without ``--data`` (:func:`attnkit.exporters.openvino_nncf.calibration_inputs`: 16 batches
from the model's input domain); the data's calibration rows are its first half (at most 64). Schemes: NNCF PTQ
with and without SmoothQuant, PTQ + bf16 (attention output projections kept float) where the CPU has bf16, and
onnxruntime's static QDQ int8 (U8S8, per channel, MatMul only); onnxruntime's dynamic int8, which takes no
calibration, for reference. Every score is against eager fp32 Keras on the same held-out rows.
A study, not a test: it quantises and runs each scheme once (a few minutes on W-base-sized models).
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np


def ort_static(onnx_path: Path, calibration: list[dict], out: Path) -> Path:
    """onnxruntime's static QDQ int8 calibrated on ``calibration`` (its MinMax calibrator)."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.items = iter(calibration)

        def get_next(self):
            return next(self.items, None)

    quantize_static(str(onnx_path), str(out), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, op_types_to_quantize=["MatMul"])  # fmt: skip
    return out


def ort_dynamic(onnx_path: Path, out: Path) -> Path:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(str(onnx_path), str(out), per_channel=True, weight_type=QuantType.QInt8,
                     op_types_to_quantize=["MatMul"])  # fmt: skip
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("export", type=Path)
    parser.add_argument("data", type=Path)
    args = parser.parse_args()

    import onnxruntime as ort
    import openvino as ov

    from attnkit.core.machine import cpu_features
    from attnkit.core.metrics import keeps, task_metrics
    from attnkit.core.targets import BF16_FEATURES
    from attnkit.exporters import openvino_nncf as calls
    from attnkit.runtimes.base import Source

    source = Source(args.export)
    spec, data = source.spec, source.data(args.data)
    held, labels = data.batches("held_out"), data.held_out_labels()
    model = source.keras_model
    reference = [{k: np.asarray(v) for k, v in model(f).items()} for f in held]
    fp32 = task_metrics(spec, held, reference, reference, labels)
    calibration = {"data": data.batches("calibration"), "random ids": calls.calibration_inputs(spec)}
    core = ov.Core()
    ir = core.read_model(str(args.export / "openvino" / "model.xml"))
    rows = []

    def score(name: str, calibrated_on: str, infer) -> None:
        m = task_metrics(spec, held, reference, [infer(f) for f in held], labels)
        ok, line = keeps(fp32, m)
        rows.append((name, calibrated_on, m, ok, line))
        print(f"{name:28s} {calibrated_on:11s} {line}", flush=True)

    schemes = [("NNCF PTQ", dict(smooth_quant=True)), ("NNCF PTQ, no SmoothQuant", dict(smooth_quant=False))]
    if cpu_features() & set(BF16_FEATURES):
        schemes.append(("NNCF PTQ + bf16", dict(smooth_quant=False, keep_float=calls.attention_outputs(ir),
                                                 precision="bf16")))  # fmt: skip
    for name, kwargs in schemes:
        for on, batches in calibration.items():
            q = calls.ptq(ir, batches, overflow_fix=False, **kwargs)
            compiled = calls.compile_model(core, q, 0, calls.pinned_precision(q))
            score(name, on, lambda f, c=compiled: calls.run(c, f))
    with tempfile.TemporaryDirectory() as tmp:
        onnx_path = args.export / "model.onnx"
        for on, batches in calibration.items():
            path = ort_static(onnx_path, [{k: v for k, v in b.items()} for b in batches], Path(tmp) / f"s-{on}.onnx")
            session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
            names = [o.name for o in session.get_outputs()]
            score("onnxruntime static QDQ", on, lambda f, s=session, n=names: dict(zip(n, s.run(None, f))))
        session = ort.InferenceSession(str(ort_dynamic(onnx_path, Path(tmp) / "d.onnx")),
                                       providers=["CPUExecutionProvider"])  # fmt: skip
        names = [o.name for o in session.get_outputs()]
        score("onnxruntime dynamic", "(none)", lambda f: dict(zip(names, session.run(None, f))))
    print(f"\nfp32 eager on {data.rows - data.calibration} held-out rows: {fp32}")
    for name in dict.fromkeys(r[0] for r in rows):
        by = {on: m.gating(fp32) for n, on, m, _, _ in rows if n == name}
        if {"data", "random ids"} <= set(by):
            metric, on_data, on_random = by["data"][0], by["data"][1], by["random ids"][1]
            extra = {on: (m.top1_agreement, m.perplexity) for n, on, m, _, _ in rows if n == name}
            print(
                f"{name}: {metric} {on_data:.4f} calibrated on the data, {on_random:.4f} on random ids; top-1 = "
                f"fp32 {extra['data'][0]:.4f} / {extra['random ids'][0]:.4f}"
                + (f", perplexity {extra['data'][1]:.4f} / {extra['random ids'][1]:.4f}" if extra["data"][1] else "")
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
