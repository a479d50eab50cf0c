"""The artifacts ``export`` writes into its staging directory, one function a format: model.keras and the
SavedModels, the ONNX graphs and their lowered precisions, the OpenVINO IRs (int8 chosen by measurement), the
decode-step artifacts, TensorRT plans. :func:`attnkit.orchestration.export.export` validates, stages, checks and
moves into place; nothing here checks agreement or touches the final directory."""

from __future__ import annotations

import shutil
from pathlib import Path

from ..core.names import PLAN_PRECISIONS, ROLE_MODEL, SERVING_DEFAULT, TF_PRECISIONS, artifact_file
from ..exporters.manifest import ArtifactRecord, Manifest

SAVEDMODEL_VERSION = 1


def savedmodel_dir(precision: str) -> str:
    """``savedmodel/1`` for fp32, ``savedmodel_bf16/1`` etc. (each a TF Serving model base path)."""
    base = "savedmodel" if precision == "fp32" else f"savedmodel_{precision}"
    return f"{base}/{SAVEDMODEL_VERSION}"


def write_artifacts(
    stage: Path,
    model: str,
    keras_model,
    spec,
    fmts,
    precisions,
    manifest: Manifest,
    say,
    fuse: bool = True,
    per_channel: bool | None = None,
    target=None,
    decoding=None,
    ov_precisions=None,
    data=None,
    decode_added: tuple[str, ...] = (),
) -> None:
    """Every artifact of an export into ``stage``; ``decode_added``: precisions the OpenVINO decode step gets
    besides ``ov_precisions`` (:func:`attnkit.orchestration.options.openvino_decode_default`)."""
    from ..core.targets import BF16_REQUIREMENT
    from ..exporters.savedmodel import export_savedmodel
    from ..models import is_keras_path
    from ..tracing import trace

    say("saving model.keras (the reference)")
    _copy_imports(stage, manifest)
    if is_keras_path(model):
        shutil.copyfile(model, stage / "model.keras")
    else:
        keras_model.save(stage / "model.keras")
    manifest.artifacts.append(ArtifactRecord.of(stage, "keras", "model.keras", "fp32"))
    if "savedmodel" in fmts:
        for precision in [p for p in precisions if p in TF_PRECISIONS] or ["fp32"]:
            say(f"exporting SavedModel ({precision})")
            rel = savedmodel_dir(precision)
            endpoints = None
            if decoding is not None and precision == "fp32":
                from ..generation.export import savedmodel_endpoints

                say("tracing prefill, decode_step and generate signatures")
                endpoints = savedmodel_endpoints(decoding)
            export_savedmodel(trace(keras_model, spec, precision), stage / rel, endpoints)
            extra = {"requires": BF16_REQUIREMENT} if precision == "bf16" else {}
            manifest.artifacts.append(
                ArtifactRecord.of(stage, "savedmodel", rel, precision, signature=SERVING_DEFAULT, **extra)
            )
    if "onnx" in fmts:
        _write_onnx(stage, keras_model, spec, precisions, manifest, say, fuse, per_channel, target)
    if "openvino" in fmts:
        _write_openvino(
            stage, precisions if ov_precisions is None else ov_precisions, manifest, say, spec, target, data
        )
    if decoding is not None:
        decode_ov = tuple(precisions if ov_precisions is None else ov_precisions) + tuple(decode_added)
        _write_generation(stage, decoding, fmts, precisions, manifest, say, fuse, per_channel, target, spec.opset,
                          decode_ov)  # fmt: skip


def _write_generation(stage, decoding, fmts, precisions, manifest, say, fuse, per_channel, target, opset,
                      ov_precisions) -> None:  # fmt: skip
    from ..core.targets import resolve as resolve_target
    from ..generation.export import section, signatures_record, write_genai, write_onnx

    records = []
    if "savedmodel" in fmts:
        records.append(signatures_record(stage, savedmodel_dir("fp32"), decoding.spec.seq2seq))
    if "onnx" in fmts:
        records += write_onnx(stage, decoding, precisions, target or resolve_target(), per_channel, fuse, opset, say)
        records += write_genai(stage, decoding, records, say)
    if "openvino" in fmts:
        from ..exporters.genai import end_token_id
        from ..generation.export import write_openvino
        from ..models.keras_hub import layer_windows

        records += write_openvino(stage, records, decoding.spec, ov_precisions, say, end_token_id(decoding.model),
                                  layer_windows(decoding.model))  # fmt: skip
    manifest.generation = section(decoding, records)


def _copy_imports(stage: Path, manifest: Manifest) -> None:
    """Copy ``--import`` .py files into ``custom_objects/`` and record them relative to the export, so
    verify and bench re-import them from any working directory (module names are kept as they are)."""
    recorded = []
    for mod in manifest.model.get("imports", []):
        if mod.endswith(".py") and Path(mod).is_file():
            rel = f"custom_objects/{Path(mod).name}"
            (stage / "custom_objects").mkdir(exist_ok=True)
            shutil.copyfile(mod, stage / rel)
            recorded.append(rel)
        else:
            recorded.append(mod)
    manifest.model["imports"] = recorded


def _write_onnx(
    stage: Path,
    keras_model,
    spec,
    precisions,
    manifest: Manifest,
    say,
    fuse: bool,
    per_channel: bool | None,
    target=None,
):
    from ..core.targets import resolve as resolve_target
    from ..exporters.onnx import convert
    from ..exporters.passes import apply_passes, op_counts
    from ..exporters.precision import onnx_file, write_lowered
    from ..tracing import trace

    target = target or resolve_target()

    say(f"exporting ONNX (opset {spec.opset})")
    fp32 = convert(trace(keras_model, spec, "fp32"), spec, spec.opset)
    if "bf16" in precisions:
        from ..exporters.precision import BF16_REASON

        manifest.notes.append(f"bf16: SavedModel only; no model.bf16.onnx because {BF16_REASON}.")
    passes = {"tf2onnx": op_counts(fp32)}
    if fuse:
        fp32, counts = apply_passes(fp32)
        passes.update(counts)
    for precision, rel, extra in write_lowered(
        fp32, precisions, stage, onnx_file, spec.opset, per_channel, target, say
    ):
        if precision == "fp32":
            extra["passes"] = passes
        manifest.artifacts.append(ArtifactRecord.of(stage, "onnx", rel, precision, **extra))


def _write_openvino(stage: Path, precisions, manifest: Manifest, say, spec=None, target=None, data=None) -> None:
    """OpenVINO IR of model.onnx, recorded for fp32 and, when asked, bf16 and fp16 (one IR; precision is
    OpenVINO's compile-time hint, see :mod:`attnkit.exporters.openvino`), each reduced one with the CPU
    features that make it native; int8 as :mod:`attnkit.exporters.openvino_int8` chooses it for the target."""
    from ..benchmark.harness import StoppingRule, measure
    from ..core.machine import cpu_features
    from ..core.targets import OPENVINO_BF16_REQUIREMENT, OPENVINO_FP16_REQUIREMENT
    from ..exporters.openvino import IR_XML, require, write_ir
    from ..exporters.openvino_int8 import choose, random_calibration_note
    from ..exporters.precision import onnx_file

    def int8_timer(call) -> float:
        """Median ms of one int8 candidate: >= 5 calls and 1 s, up to 2 s while noisy."""
        return measure(call, StoppingRule(warmup_s=0.2, min_iterations=5, min_seconds=1.0, extend=2.0)).p50

    say("converting model.onnx to OpenVINO IR")
    rel = write_ir(stage, stage / onnx_file("fp32"))
    manifest.artifacts.append(ArtifactRecord.of(stage, "openvino", rel, "fp32", inference_precision="f32"))
    for precision, hint, requires in (
        ("bf16", "bf16", OPENVINO_BF16_REQUIREMENT),
        ("fp16", "f16", OPENVINO_FP16_REQUIREMENT),
    ):
        if precision in precisions:
            manifest.artifacts.append(
                ArtifactRecord.of(stage, "openvino", rel, precision, inference_precision=hint, requires=requires)
            )
    if "int8" in precisions:
        say("making the OpenVINO int8 IR (NNCF)")
        choice = choose(stage / rel / IR_XML, spec or manifest.spec, cpu_features(), target, timer=int8_timer, say=say,
                        data=data)  # fmt: skip
        say(f"OpenVINO int8 scheme: {choice.name} ({choice.reason})")
        if data is None and random_calibration_note(choice.name):
            say(random_calibration_note(choice.name))
        rel8 = f"{rel}_int8"
        (stage / rel8).mkdir(parents=True, exist_ok=True)
        require().save_model(choice.model, str(stage / rel8 / IR_XML), compress_to_fp16=False)
        manifest.artifacts.append(ArtifactRecord.of(stage, "openvino", rel8, "int8", **choice.record()))


def tensorrt_plan(fmts, trt_target) -> dict | None:
    """Feature detection and target resolution before any work; None when no plan is wanted."""
    if "tensorrt" not in fmts:
        return None
    from ..exporters.tensorrt import require, resolve_target

    flavour = require()
    return {"flavour": flavour, "target": resolve_target(flavour, trt_target)}


def plan_name(precision: str) -> str:
    return artifact_file("model", precision, "plan")


def write_tensorrt(root: Path, spec, precisions, manifest: Manifest, say, trt: dict, cache: Path | None) -> None:
    from ..exporters.precision import onnx_file
    from ..exporters.tensorrt import write_plan

    for precision in [p for p in precisions if p in PLAN_PRECISIONS] or ["fp32"]:
        onnx_path = root / onnx_file(precision)
        if not onnx_path.is_file():
            continue
        name = plan_name(precision)
        record = write_plan(root, onnx_path, name, spec, precision, trt, cache, say, role=ROLE_MODEL)
        manifest.artifacts = [a for a in manifest.artifacts if not (a.format == "tensorrt" and a.path == name)]
        manifest.artifacts.append(record)
