"""Triton model repository: one model per artifact, ``config.pbtxt`` built with Triton's own schema.

Configs are ``tritonclient.grpc.model_config_pb2.ModelConfig`` messages serialised with protobuf's
text format (the schema does the formatting), then parsed back and cross-checked against the
artifact's real signature (names, data types, dims) before anything is written.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from pathlib import Path

from ..core.errors import ArtifactError, AttnkitError
from ..core.names import TRITON_DTYPES
from ..core.spec import ExportSpec
from .signatures import IOSpec

PLATFORMS = {"onnx": "onnxruntime_onnx", "savedmodel": "tensorflow_savedmodel", "tensorrt": "tensorrt_plan"}
#: formats Triton serves through a named backend instead of a platform: OpenVINO's backend reads
#: ``<version>/model.xml`` and ``model.bin``
BACKENDS = {"openvino": "openvino"}
FILENAMES = {"onnx": "model.onnx", "savedmodel": "model.savedmodel", "tensorrt": "model.plan", "openvino": None}
SUFFIX = {"onnx": "onnx", "savedmodel": "savedmodel", "tensorrt": "trt", "openvino": "openvino"}
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


def _model_config():
    """Triton's own config schema (tritonclient's ModelConfig), or an error naming the pip extra."""
    try:
        from tritonclient.grpc import model_config_pb2
    except ImportError:
        from ..core.errors import DependencyError

        raise DependencyError("tritonclient", "triton", "Writing Triton configs") from None
    return model_config_pb2


def check_model_name(name: str, flag: str = "--name") -> str:
    """Triton model names are directory names: letters, digits, ``_ . -``; no path separators."""
    if not _NAME.match(name) or name in (".", ".."):
        raise AttnkitError(
            f"`{name}` is not a valid Triton model name; use letters, digits, '_', '.', '-' "
            "and start with a letter or digit.",
            flag=flag,
        )
    return name


def model_name(base: str, record) -> str:
    suffix = SUFFIX[record.format] + ("" if record.precision == "fp32" else f"_{record.precision}")
    return check_model_name(f"{base}_{suffix}")


def _limits(spec: ExportSpec, record) -> tuple[int, list[str]]:
    """max_batch_size and the TensorRT profiles Triton may use (those serving batch 1..max)."""
    if record.format != "tensorrt":
        return spec.batch.max, []
    profiles = [(i, p["batch"]) for i, p in enumerate(record.extra.get("profiles", []))]
    usable = [(i, b) for i, b in profiles if b[0] == 1]
    if not usable:
        raise ArtifactError(
            f"{record.path}: no optimisation profile starts at batch 1, which Triton's batching needs.",
            flag="--batch",
            hint="Rebuild the plan with a profile like --batch 1:8:32.",
        )
    return min(b[2] for _, b in usable), [str(i) for i, _ in usable]


def _new_config(mc, name: str, record, max_batch: int):
    """A config naming the platform, or for OpenVINO the backend and its parameters. Triton's OpenVINO backend
    reads ``HINT_BF16`` (YES) and ``PERFORMANCE_HINT``; it has no parameter that forces f32, so an fp32 IR it
    serves on a CPU with native bf16 computes in OpenVINO's default precision there (bf16)."""
    if record.format not in BACKENDS:
        return mc.ModelConfig(name=name, platform=PLATFORMS[record.format], max_batch_size=max_batch)
    cfg = mc.ModelConfig(name=name, backend=BACKENDS[record.format], max_batch_size=max_batch)
    cfg.parameters["PERFORMANCE_HINT"].string_value = "LATENCY"
    if record.precision == "bf16" or (record.extra or {}).get("inference_precision") == "bf16":  # + PTQ_BF16 int8
        cfg.parameters["HINT_BF16"].string_value = "YES"
    return cfg


def place(src: Path, version_dir: Path, fmt: str) -> None:
    """The artifact under its version directory as Triton's backend looks for it (OpenVINO: its files)."""
    if FILENAMES[fmt] is None:
        for f in src.iterdir():
            _link_or_copy(f, version_dir / f.name)
    else:
        _link_or_copy(src, version_dir / FILENAMES[fmt])


def build_config(name: str, record, spec: ExportSpec, sig: list[IOSpec], warmup: bool = True, batching: bool = True):
    """The ModelConfig message of one artifact.

    ``batching=False`` (a decode step: requests carry caches of different lengths, which Triton cannot
    stack): ``max_batch_size`` 0, the batch axis in ``dims``, no dynamic batching and no warm-up.
    """
    mc = _model_config()

    if not batching:
        cfg = _new_config(mc, name, record, 0)
        order = {n: i for i, n in enumerate(spec.input_names + spec.output_names)}
        for io in sorted(sig, key=lambda io: order.get(io.name, len(order))):
            entry = (cfg.input if io.mode == "input" else cfg.output).add()
            entry.name, entry.data_type = io.name, mc.DataType.Value(TRITON_DTYPES[io.dtype])
            entry.dims.extend(io.shape)
        cfg.instance_group.add(count=1, kind=mc.ModelInstanceGroup.KIND_CPU)
        return cfg
    max_batch, profiles = _limits(spec, record)
    cfg = _new_config(mc, name, record, max_batch)
    # Signatures read from a SavedModel come from a protobuf map: order them as the spec does.
    order = {n: i for i, n in enumerate(spec.input_names + spec.output_names)}
    sig = sorted(sig, key=lambda io: order.get(io.name, len(order)))
    for io in sig:
        entry = (cfg.input if io.mode == "input" else cfg.output).add()
        entry.name, entry.data_type = io.name, mc.DataType.Value(TRITON_DTYPES[io.dtype])
        entry.dims.extend(io.shape[1:])  # the batch axis is Triton's, via max_batch_size
    preferred = sorted({b for b in (spec.batch.opt, max_batch) if 1 < b <= max_batch})
    cfg.dynamic_batching.preferred_batch_size.extend(preferred)
    cfg.dynamic_batching.max_queue_delay_microseconds = 100
    group = cfg.instance_group.add(
        count=1, kind=mc.ModelInstanceGroup.KIND_GPU if record.format == "tensorrt" else mc.ModelInstanceGroup.KIND_CPU
    )
    group.profile.extend(profiles)
    if warmup:
        sample = cfg.model_warmup.add(name="sample_request", batch_size=1)
        seq = min(spec.sequence.opt, spec.max_sequence or spec.sequence.opt)
        for io in sig:
            if io.mode != "input":
                continue
            w = sample.inputs[io.name]
            w.data_type = mc.DataType.Value(TRITON_DTYPES[io.dtype])
            w.dims.extend(seq if d == -1 else d for d in io.shape[1:])
            if io.dtype.startswith("float"):
                w.random_data = True
            else:
                w.zero_data = (
                    True  # ids 0 and an all-zero mask are valid inputs; random ints could leave the vocabulary
                )
    return cfg


def check_config(text: str, sig: list[IOSpec]) -> list[str]:
    """Parse a config.pbtxt with Triton's schema and compare it with an artifact's signature."""
    from google.protobuf import text_format

    mc = _model_config()

    try:
        cfg = text_format.Parse(text, mc.ModelConfig())
    except text_format.ParseError as e:
        return [f"not a valid Triton config: {e}"]
    problems = []
    batched = cfg.max_batch_size > 0
    for mode, entries in (("input", cfg.input), ("output", cfg.output)):
        want = {io.name: io for io in sig if io.mode == mode}
        got = {e.name: e for e in entries}
        problems += [f"{mode} `{n}` is in the config but not in the artifact" for n in set(got) - set(want)]
        problems += [f"{mode} `{n}` of the artifact is missing from the config" for n in set(want) - set(got)]
        for n in set(got) & set(want):
            dtype = mc.DataType.Name(got[n].data_type)
            if dtype != TRITON_DTYPES.get(want[n].dtype):
                problems.append(f"{mode} `{n}`: data_type {dtype} but the artifact has {want[n].dtype}")
            dims = list(want[n].shape[1:] if batched else want[n].shape)
            if list(got[n].dims) != dims:
                problems.append(f"{mode} `{n}`: dims {list(got[n].dims)} but the artifact has {dims}")
    for w in cfg.model_warmup:
        for n, inp in w.inputs.items():
            if n not in {io.name for io in sig if io.mode == "input"}:
                problems.append(f"warm-up input `{n}` is not an input of the artifact")
            elif mc.DataType.Name(inp.data_type) != TRITON_DTYPES[next(io.dtype for io in sig if io.name == n)]:
                problems.append(f"warm-up input `{n}` has the wrong data type")
    return problems


def _link_or_copy(src: Path, dst: Path) -> None:
    """Hard links where the filesystem allows (no second copy of the weights), copies elsewhere."""

    def link(s, d):
        try:
            os.link(s, d)
        except OSError:
            shutil.copy2(s, d)

    if src.is_dir():
        shutil.copytree(src, dst, copy_function=link)
    else:
        link(src, dst)


def is_triton_repo(path: Path) -> bool:
    """Empty, or every entry is a model directory with a config.pbtxt (attnkit's own request
    examples, ``request_*.json`` at the root, are allowed: Triton ignores files there)."""
    entries = [p for p in path.iterdir() if not p.name.startswith(".")]
    return all(
        (p.is_dir() and (p / "config.pbtxt").is_file()) or (p.is_file() and p.name.startswith("request_"))
        for p in entries
    )


def write_model(repo: Path, name: str, root: Path, record, config_text: str, version: int, force: bool = False) -> Path:
    """Add ``version`` of one model to the repository, keeping every other version.

    A new model directory is staged whole beside the others and renamed into place. For an existing
    model, the new version directory is staged inside it and renamed into place, then config.pbtxt is
    replaced atomically; an existing ``version`` is refused unless ``force`` (then swapped, not
    deleted first). A failure leaves the model as it was.
    """
    from ..core.errors import AttnkitError
    from .manifest import readable_dir, write_text_atomic

    target = repo / name
    if not target.exists():
        stage = Path(tempfile.mkdtemp(prefix=f".{name}.tmp-", dir=repo))
        try:
            (stage / str(version)).mkdir()
            place(root / record.path, stage / str(version), record.format)
            (stage / "config.pbtxt").write_text(config_text)
            readable_dir(stage)
            os.replace(stage, target)
        except BaseException:
            shutil.rmtree(stage, ignore_errors=True)
            raise
        return target
    existing = target / str(version)
    if existing.exists() and not force:
        raise AttnkitError(
            f"`{existing}` exists.",
            flag="--version",
            hint="Pass --version N for a new version, or --force to replace it.",
        )
    stage = Path(tempfile.mkdtemp(prefix=f".{version}.tmp-", dir=target))
    try:
        place(root / record.path, stage, record.format)
        readable_dir(stage)
        if existing.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{version}.old-", dir=target))
            os.replace(existing, old / "x")
            os.replace(stage, existing)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(stage, existing)
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
    write_text_atomic(target / "config.pbtxt", config_text, flag="--triton")
    return target
