"""ONNX -> TensorRT plan, with optimisation profiles, a timing cache and a JSON sidecar.

Written against the API TensorRT 10/11 and TensorRT for RTX share (Builder, OnnxParser,
BuilderConfig, optimisation profiles, ``build_serialized_network``), feature-detected rather than
branched on version strings:
- strongly typed networks (``NetworkDefinitionCreationFlag.STRONGLY_TYPED``: TensorRT >= 9, 11,
  RTX) take their precision from the ONNX tensor types, so an fp16 plan is built from
  ``model.fp16.onnx``; where only the ``BuilderFlag.FP16`` flag exists (older TensorRT) the fp32
  graph is built with that flag.
- ahead-of-time targets (``BuilderConfig.set_compute_capability``, TensorRT-RTX) let a CPU-only
  machine build for a named GPU architecture; full TensorRT builds for the local GPU.
The engine inspector needs a deserialised engine, i.e. a GPU. Without one, the layer list comes
from the builder's verbose log, which names every engine layer and the ONNX nodes fused into it.
"""

from __future__ import annotations

import hashlib
import importlib
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..core.errors import AttnkitError, DependencyError, ExportError
from ..core.names import ROLE_MODEL
from ..core.spec import ExportSpec, ShapeRange

MODULES = (("tensorrt", "tensorrt"), ("tensorrt_rtx_bindings", "tensorrt-rtx"))


@dataclass(frozen=True)
class Flavour:
    """Which TensorRT is importable here and what it can do."""

    name: str  # "tensorrt" | "tensorrt-rtx"
    module: Any = field(repr=False, compare=False)
    version: str = ""
    strongly_typed: bool = False
    fp16_flag: bool = False
    bf16_flag: bool = False
    aot_targets: tuple[str, ...] = ()  # compute capabilities an engine can be built for without that GPU
    timing_cache: bool = False

    def describe(self) -> dict:
        return {
            "flavour": self.name,
            "version": self.version,
            "strongly_typed": self.strongly_typed,
            "fp16_builder_flag": self.fp16_flag,
            "bf16_builder_flag": self.bf16_flag,
            "aot_targets": list(self.aot_targets),
            "timing_cache": self.timing_cache,
        }


def detect() -> Flavour | None:
    """The first importable TensorRT flavour (full TensorRT preferred), or None."""
    for module_name, flavour in MODULES:
        try:
            trt = importlib.import_module(module_name)
        except Exception:  # ImportError, or a wheel whose native libs fail to load
            continue
        cc = getattr(trt, "ComputeCapability", None)
        targets = tuple(n.lower() for n in dir(cc) if n.startswith("SM")) if cc else ()
        return Flavour(
            name=flavour,
            module=trt,
            version=getattr(trt, "__version__", "?"),
            strongly_typed=hasattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED"),
            fp16_flag=hasattr(trt.BuilderFlag, "FP16"),
            bf16_flag=hasattr(trt.BuilderFlag, "BF16"),
            aot_targets=tuple(sorted(targets, key=lambda t: int(t[2:]))),
            timing_cache=hasattr(trt.IBuilderConfig, "create_timing_cache"),
        )
    return None


def require() -> Flavour:
    flavour = detect()
    if flavour is None:
        raise DependencyError("tensorrt (or tensorrt_rtx_bindings)", "tensorrt-rtx", "Building TensorRT engines")
    return flavour


def parse_range(text: str, flag: str, maximum: int | None = None) -> ShapeRange:
    """``"1:8:32"`` -> ShapeRange, with 1 <= min <= opt <= max (<= maximum)."""
    parts = text.split(":")
    try:
        lo, opt, hi = (int(p) for p in parts)
    except ValueError:
        raise AttnkitError(f"`{text}` is not MIN:OPT:MAX with three integers, e.g. 1:8:32.", flag=flag) from None
    if not 1 <= lo <= opt <= hi:
        raise AttnkitError(f"`{text}` needs 1 <= min <= opt <= max.", flag=flag)
    if maximum is not None and hi > maximum:
        raise AttnkitError(f"`{text}`: max {hi} exceeds the model's maximum position {maximum}.", flag=flag)
    return ShapeRange(lo, opt, hi)


def profiles_from(
    spec: ExportSpec, batch: tuple[str, ...], seq: tuple[str, ...]
) -> list[tuple[ShapeRange, ShapeRange]]:
    """One (batch, sequence) range pair per profile; a single value is used for every profile."""
    batches = [parse_range(b, "--batch") for b in batch] or [spec.batch]
    seqs = [parse_range(s, "--seq", spec.max_sequence) for s in seq] or [spec.sequence]
    if len(batches) > 1 and len(seqs) > 1 and len(batches) != len(seqs):
        raise AttnkitError(
            f"{len(batches)} --batch ranges but {len(seqs)} --seq ranges; give one of each per "
            "profile, or a single one for all.",
            flag="--seq",
        )
    n = max(len(batches), len(seqs))
    return [(batches[min(i, len(batches) - 1)], seqs[min(i, len(seqs) - 1)]) for i in range(n)]


def resolve_target(flavour: Flavour, target: str | None) -> str:
    """The compute capability to build for: the requested one, or the local GPU."""
    from ..core.machine import gpu_unavailable_reason

    if target:
        target = target.lower()
        if not flavour.aot_targets:
            if target in ("local", "current"):
                return "local"
            raise AttnkitError(
                f"{flavour.name} {flavour.version} builds for the local GPU only; `{target}` is not available.",
                flag="--trt-target",
                hint="Omit --trt-target, or use TensorRT for RTX.",
            )
        if target not in flavour.aot_targets:
            raise AttnkitError(
                f"`{target}` is not a target of {flavour.name} {flavour.version}. Valid: "
                f"{', '.join(flavour.aot_targets)}.",
                flag="--trt-target",
            )
        return target
    reason = gpu_unavailable_reason()
    if reason:
        choices = ", ".join(flavour.aot_targets) or "none (this TensorRT needs a local GPU)"
        raise AttnkitError(
            f"no local GPU to build for ({reason}).",
            flag="--trt-target",
            hint=f"Name a target architecture: {choices}.",
        )
    return "current" if flavour.aot_targets else "local"


class _CaptureLogger:
    """A TensorRT ILogger that keeps every message (the verbose log carries the layer list)."""

    def __new__(cls, trt):
        class Logger(trt.ILogger):
            def __init__(self):
                trt.ILogger.__init__(self)
                self.messages: list[tuple[int, str]] = []

            def log(self, severity, msg):
                self.messages.append((int(severity), msg))

        return Logger()


def _parser_errors(parser) -> list[str]:
    out = []
    for i in range(parser.num_errors):
        e = parser.get_error(i)
        name = e.node_name() if hasattr(e, "node_name") else ""
        op = e.node_operator() if hasattr(e, "node_operator") else ""
        out.append(f"node {e.node()} `{name}` ({op}): {e.desc().strip().splitlines()[0][:200]}")
    return out


_LAYER = re.compile(r"^Layer: (?P<name>.+?)(?: \[profile \d+\])? Host Persistent:")
_META = re.compile(r"^(?:ForeignNode )?(?P<name>\{.+?\}|\S+)(?: \[profile \d+\])? metadata: (?P<meta>.*)$")


def layers_from_log(messages: list[tuple[int, str]]) -> list[dict]:
    """Engine layers and the ONNX nodes fused into each, read from the builder's verbose log."""
    layers: dict[str, dict] = {}
    for _, msg in messages:
        line = msg.strip()
        if m := _LAYER.match(line):
            layers.setdefault(m["name"], {"name": m["name"], "onnx_nodes": []})
        elif m := _META.match(line):
            entry = layers.setdefault(m["name"], {"name": m["name"], "onnx_nodes": []})
            entry["onnx_nodes"] = re.findall(r"\[ONNX Layer: ([^\]]+)\]", m["meta"])
    return list(layers.values())


def _io(network) -> list[dict]:
    tensors = [(network.get_input(i), "input") for i in range(network.num_inputs)]
    tensors += [(network.get_output(i), "output") for i in range(network.num_outputs)]
    return [
        {"name": t.name, "mode": mode, "shape": list(t.shape), "dtype": t.dtype.name.lower()} for t, mode in tensors
    ]


def build_plan(
    onnx_path: Path,
    spec: ExportSpec,
    precision: str,
    profiles,
    target: str,
    cache_path: Path | None = None,
    flavour: Flavour | None = None,
    explicit: list[dict] | None = None,
) -> tuple[bytes, dict]:
    """Parse ``onnx_path``, build a serialized engine, return (plan bytes, sidecar dict).

    ``explicit``: profiles given as ``{"name": ..., "shapes": {input: {"min", "opt", "max"}}}`` instead of
    (batch, sequence) ranges over the spec (a decode step's axes are not all the sequence's).

    Raises:
        ExportError: the parser rejected nodes (each listed), or the build failed.
    """
    flavour = flavour or require()
    trt = flavour.module
    logger = _CaptureLogger(trt)
    logger.min_severity = trt.Logger.VERBOSE
    builder = trt.Builder(logger)
    flags = 0
    strongly_typed = flavour.strongly_typed
    if strongly_typed:
        flags |= 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = _parser_errors(parser) or [m for s, m in logger.messages if s <= 1][:5]
        raise ExportError(
            f"TensorRT could not parse {onnx_path.name}: {'; '.join(errors)}.",
            flag="--format",
            hint="Remove tensorrt from --format, or export with an opset TensorRT supports.",
        )
    config = builder.create_builder_config()
    build_path = "strongly typed (precision from the ONNX tensor types)"
    if not strongly_typed and precision == "fp16":
        config.set_flag(trt.BuilderFlag.FP16)
        build_path = "BuilderFlag.FP16 on the fp32 graph"
    if target not in ("local", "current"):
        config.num_compute_capabilities = 1
        config.set_compute_capability(getattr(trt.ComputeCapability, target.upper()), 0)
    elif flavour.aot_targets:
        config.num_compute_capabilities = 1
        config.set_compute_capability(trt.ComputeCapability.CURRENT, 0)
    if hasattr(trt, "ProfilingVerbosity"):
        config.profiling_verbosity = trt.ProfilingVerbosity.DETAILED
    recorded = _add_profiles(builder, config, spec, profiles, explicit)
    cache = _load_cache(config, cache_path) if flavour.timing_cache else {"path": None, "reused": False}
    start = time.perf_counter()
    plan = builder.build_serialized_network(network, config)
    seconds = time.perf_counter() - start
    if plan is None:
        errors = [m for s, m in logger.messages if s <= 1][:5]
        raise ExportError(f"TensorRT failed to build {onnx_path.name}: {'; '.join(errors) or 'no error logged'}.")
    data = bytes(plan)
    if flavour.timing_cache and cache_path is not None:
        cache.update(_save_cache(config, cache_path))
    engine_layers = _engine_layers(data, flavour, target, logger.messages)
    runs_on = (
        f"NVIDIA GPUs of compute capability {target[2:-1]}.{target[-1]} ({target}) only"
        if target.startswith("sm")
        else "the GPU it was built on (or GPUs of the same compute capability)"
    )
    sidecar = {
        **flavour.describe(),
        "build_path": build_path,
        "target": target,
        "runs_on": runs_on,
        "precision": precision,
        "onnx": onnx_path.name,
        "profiles": recorded,
        "io": _io(network),
        "build_seconds": round(seconds, 3),
        "plan_bytes": len(data),
        "sha256": hashlib.sha256(data).hexdigest(),
        "network_layers": network.num_layers,
        "cache": cache,
        "engine_layers": engine_layers,
    }
    return data, sidecar


def _add_profiles(builder, config, spec: ExportSpec, profiles, explicit: list[dict] | None) -> list[dict]:
    """One optimisation profile per ``explicit`` entry, else per (batch, sequence) range pair over the spec's
    inputs; the profiles as recorded in the sidecar."""
    recorded = []
    for item in explicit or []:
        profile = builder.create_optimization_profile()
        for name, dims in item["shapes"].items():
            profile.set_shape(name, dims["min"], dims["opt"], dims["max"])
        config.add_optimization_profile(profile)
        recorded.append(item)
    for batch, seq in profiles if explicit is None else []:
        profile = builder.create_optimization_profile()
        shapes = {}
        for t in spec.inputs:
            dims = [
                [d if d is not None else getattr(batch if a == "batch" else seq, k) for d, a in zip(t.shape, t.axes)]
                for k in ("min", "opt", "max")
            ]
            profile.set_shape(t.name, *dims)
            shapes[t.name] = {"min": dims[0], "opt": dims[1], "max": dims[2]}
        config.add_optimization_profile(profile)
        recorded.append({"batch": batch.as_list(), "sequence": seq.as_list(), "shapes": shapes})
    return recorded


def _engine_layers(data: bytes, flavour, target: str, messages) -> dict:
    """The engine's layers: from the engine inspector where a GPU can deserialise the plan (precision included),
    else from the builder's verbose log."""
    from ..core.machine import gpu_unavailable_reason

    engine_layers = {
        "source": "builder verbose log (the engine inspector needs a GPU)",
        "layers": layers_from_log(messages),
        "per_layer_precision": "not reported by the builder log",
    }
    if gpu_unavailable_reason() is None and target in ("local", "current"):
        inspected = inspect_engine(data, flavour)  # per-layer detail, precision included
        if inspected is not None:
            engine_layers = {
                "source": "engine inspector",
                "layers": inspected,
                "per_layer_precision": "in each layer's entry",
            }
    engine_layers["count"] = len(engine_layers["layers"])
    return engine_layers


def _load_cache(config, path: Path | None) -> dict:
    blob = path.read_bytes() if path is not None and path.is_file() else b""
    cache = config.create_timing_cache(blob)
    config.set_timing_cache(cache, False)
    return {"path": str(path) if path else None, "reused": bool(blob), "bytes_before": len(blob)}


def _save_cache(config, path: Path) -> dict:
    from .manifest import write_bytes_atomic

    blob = bytes(config.get_timing_cache().serialize())
    write_bytes_atomic(path, blob)
    return {"bytes_after": len(blob)}


def inspect_engine(plan: bytes, flavour: Flavour | None = None) -> list[dict] | None:
    """Layer list from the engine inspector; None where the engine cannot be deserialised (no GPU)."""
    import json

    flavour = flavour or require()
    trt = flavour.module
    logger = _CaptureLogger(trt)
    engine = trt.Runtime(logger).deserialize_cuda_engine(plan)
    if engine is None:
        return None
    info = json.loads(engine.create_engine_inspector().get_engine_information(trt.LayerInformationFormat.JSON))
    return info.get("Layers", [])


def read_sidecar(plan: str | Path) -> dict:
    """The sidecar of a plan attnkit wrote, after checking the plan's sha256 against it.

    Raises:
        ArtifactError: no plan or sidecar, an unreadable sidecar, or a plan that does not match it.
    """
    import json

    from ..core.errors import ArtifactError

    plan = Path(plan)
    sidecar_path = plan.with_name(plan.name + ".json")
    if not plan.is_file() or not sidecar_path.is_file():
        raise ArtifactError(
            f"`{plan}` is not a plan written by attnkit (needs the plan and {sidecar_path.name}).",
            flag="PLAN",
            hint="Build one with: attnkit export MODEL --format tensorrt",
        )
    try:
        sidecar = json.loads(sidecar_path.read_text())
        if not isinstance(sidecar, dict):
            raise ValueError("not a JSON object")
    except (ValueError, UnicodeDecodeError) as e:
        raise ArtifactError(
            f"`{sidecar_path}` is not a valid plan sidecar ({type(e).__name__}: {str(e)[:80]}).",
            flag="PLAN",
            hint="Rebuild the plan: attnkit export DIR --format tensorrt --force",
        ) from None
    digest = hashlib.sha256(plan.read_bytes()).hexdigest()
    if digest != sidecar.get("sha256"):
        raise ArtifactError(
            f"`{plan}` has sha256 {digest[:12]}… but its sidecar records {str(sidecar.get('sha256', ''))[:12]}….",
            flag="PLAN",
            hint="Rebuild the plan: attnkit export DIR --format tensorrt --force",
        )
    return sidecar


def write_plan(
    root: Path, onnx_path: Path, name: str, spec: ExportSpec, precision: str, trt: dict, cache: Path | None, say,
    role: str = ROLE_MODEL, explicit: list[dict] | None = None,
):  # fmt: skip
    """The one plan writer (forward and generation graphs): build ``name`` from ``onnx_path``, write the plan
    and its sidecar atomically, and return the manifest record (what TensorRT built, for which target)."""
    import json

    from .manifest import ArtifactRecord, write_bytes_atomic, write_text_atomic

    flavour = trt["flavour"]
    say(f"building {name} with {flavour.name} {flavour.version} for {trt['target']}")
    plan, sidecar = build_plan(
        onnx_path, spec, precision, trt.get("profiles", []) if explicit is None else [], trt["target"],
        cache or root / "trt_timing.cache", flavour, explicit=explicit,
    )  # fmt: skip
    write_bytes_atomic(root / name, plan)
    write_text_atomic(root / f"{name}.json", json.dumps(sidecar, indent=2))
    keys = ("flavour", "version", "target", "runs_on", "build_path", "cache", "build_seconds")
    info = {k: sidecar[k] for k in keys if k in sidecar}
    info["profiles"] = [p["name"] for p in explicit] if explicit is not None else sidecar.get("profiles")
    return ArtifactRecord.of(
        root, "tensorrt", name, precision, role=role, sidecar=f"{name}.json",
        engine_layers=sidecar["engine_layers"]["count"], **info,
    )  # fmt: skip
