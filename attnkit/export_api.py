"""export(MODEL): trace once per format, write every artifact atomically, check agreement."""

from __future__ import annotations

import dataclasses
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .errors import AgreementError, AttnkitError
from .exporters.manifest import ArtifactRecord, Manifest, atomic_directory, check_writable_out
from .tracing import canonical_precision
from .verification import VerifyReport, verify

FORMATS = ("savedmodel", "onnx")
SAVEDMODEL_VERSION = 1


@dataclass
class ExportResult:
    """What ``export`` produced: the directory, its manifest and the export-time agreement check."""

    out: Path
    manifest: Manifest
    report: VerifyReport | None


def parse_formats(formats: str | list[str] | tuple[str, ...]) -> tuple[str, ...]:
    items = [f.strip() for f in (formats.split(",") if isinstance(formats, str) else formats) if f.strip()]
    bad = [f for f in items if f not in FORMATS]
    if bad or not items:
        raise AttnkitError(
            f"unknown format {', '.join(bad) or '(empty)'}. Valid formats: {', '.join(FORMATS)}.",
            flag="--format",
            hint="Give a comma-separated list, e.g. --format savedmodel,onnx.",
        )
    return tuple(dict.fromkeys(items))


def export(
    model: str,
    out: str | Path | None = None,
    *,
    formats: str | tuple[str, ...] = FORMATS,
    precision: str = "fp32",
    opset: int = 17,
    imports: tuple[str, ...] = (),
    seed: int = 0,
    force: bool = False,
    unsafe: bool = False,
    check: bool = True,
    atol: float | dict | None = None,
    rtol: float | dict | None = None,
    progress: Callable[[str], None] | None = None,
) -> ExportResult:
    """Export a preset or ``.keras`` model to SavedModel and/or ONNX with a manifest.

    Args:
        model: preset name or ``.keras`` path.
        out: export directory; default ``artifacts/<name>``.
        formats: subset of ``savedmodel``, ``onnx``.
        precision: policy the SavedModel is traced under (``fp32``, ``bf16``, ``fp16``); the ONNX
            graph is always float32 (lower its precision on the ONNX graph instead).
        opset: ONNX opset.
        imports: modules registering custom layers of a ``.keras`` model.
        seed: weight seed (presets) and base seed of the check's random inputs.
        force: replace an existing non-empty ``out``.
        unsafe: allow unsafe Keras deserialisation.
        check: run :func:`attnkit.verify` on the artifacts before moving them into place.

    Returns:
        ExportResult with the directory, manifest and agreement report.

    Raises:
        AttnkitError: bad input (before any work starts).
        AgreementError: an artifact disagrees with the eager model (the directory is still written).
    """
    from .exporters.onnx import check_opset
    from .models import is_keras_path, resolve

    fmts = parse_formats(formats)
    precision = canonical_precision(precision)
    if "onnx" in fmts:
        check_opset(opset)
    name = Path(model).stem if is_keras_path(model) else model
    out = Path(out) if out else Path("artifacts") / name
    check_writable_out(out, force)
    say = progress or (lambda _msg: None)

    say(f"building {model}")
    keras_model, spec, info = resolve(model, seed=seed, imports=imports, unsafe=unsafe)
    info["unsafe"] = unsafe
    spec = dataclasses.replace(spec, opset=opset)
    manifest = Manifest(model=info, spec=spec)
    with atomic_directory(out, force) as stage:
        _write_artifacts(stage, model, keras_model, spec, fmts, precision, manifest, say)
        manifest.write(stage)
        report = None
        if check:
            say("checking agreement")
            report = verify(stage, atol=atol, rtol=rtol, seed=seed + 1000, progress=say)
            report.root = str(out)
            _record_agreement(manifest, report)
            manifest.write(stage)
    if report is not None and not report.ok:
        error = AgreementError(
            f"artifacts in `{out}` disagree with the eager model beyond tolerance; "
            f"see the table above or run: attnkit verify {out}"
        )
        error.report = report
        raise error
    return ExportResult(out, manifest, report)


def _write_artifacts(stage: Path, model: str, keras_model, spec, fmts, precision, manifest: Manifest, say) -> None:
    from .exporters.onnx import export_onnx
    from .exporters.savedmodel import export_savedmodel
    from .models import is_keras_path
    from .tracing import trace

    say("saving model.keras (the reference)")
    if is_keras_path(model):
        shutil.copyfile(model, stage / "model.keras")
    else:
        keras_model.save(stage / "model.keras")
    manifest.artifacts.append(ArtifactRecord.of(stage, "keras", "model.keras", "fp32"))
    if "savedmodel" in fmts:
        say(f"exporting SavedModel ({precision})")
        rel = f"savedmodel/{SAVEDMODEL_VERSION}"
        export_savedmodel(trace(keras_model, spec, precision), stage / rel)
        manifest.artifacts.append(ArtifactRecord.of(stage, "savedmodel", rel, precision, signature="serving_default"))
    if "onnx" in fmts:
        say(f"exporting ONNX (opset {spec.opset})")
        export_onnx(trace(keras_model, spec, "fp32"), spec, stage / "model.onnx", spec.opset)
        manifest.artifacts.append(ArtifactRecord.of(stage, "onnx", "model.onnx", "fp32", opset=spec.opset))


def _record_agreement(manifest: Manifest, report: VerifyReport) -> None:
    by_backend = {"savedmodel": "savedmodel", "onnxruntime": "onnx", "tf-function": "keras"}
    for (backend, precision), stats in report.summary().items():
        record = manifest.artifact(by_backend.get(backend, ""), precision)
        if record is not None:
            record.agreement = {**stats, "backend": backend}
