"""What a decode step streams from memory, for bench-generate's roofline: the weights of the artifact a row ran
(ONNX initializers or IR constants, tables only gathered from left out) and the width of its KV cache, at the
precision the runtime said it computed and cached in."""

from __future__ import annotations

from pathlib import Path

from ..core.names import ROLE_DECODER_WITH_PAST
from ..exporters.openvino import WEIGHT_ONLY
from ..runtimes.registry import format_of


def streamed_weight_bytes(onnx_path: Path) -> int:
    """Bytes of the weights one decode step reads: every initializer except tables only gathered from
    (the token embedding and positional table: a step reads one row of them per token)."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(onnx_path))
    readers: dict[str, set[str]] = {}
    for n in model.graph.node:
        for i in n.input:
            readers.setdefault(i, set()).add(n.op_type)
    total = 0
    for init in model.graph.initializer:
        if readers.get(init.name, set()) <= {"Gather"} and init.name in readers:
            continue
        total += numpy_helper.to_array(init).nbytes
    return total


def streamed_bytes(source, fmt: str, precision: str) -> int | None:
    """Weight bytes a decode step of the ``fmt``/``precision`` artifact streams (fp32 ONNX when nothing closer)."""
    if fmt == "openvino":
        from ..exporters.openvino import IR_XML
        from ..exporters.openvino import streamed_weight_bytes as ir_bytes

        record = source.generation.artifact(ROLE_DECODER_WITH_PAST, "openvino", precision)
        if record is not None:
            return ir_bytes(source.root / record.path / IR_XML)
        precision = "fp32"
    record = source.generation.artifact(ROLE_DECODER_WITH_PAST, "onnx", precision)
    if record is None:
        record = source.manifest.artifact("onnx", "fp32") if precision == "fp32" else None
    return streamed_weight_bytes(source.root / record.path) if record is not None else None


#: bytes of a value in the precision a runtime said it computed or cached in
_WIDTH = {"fp32": 4, "f32": 4, "bf16": 2, "fp16": 2, "f16": 2, "u8": 1, "i8": 1}


def widths(row) -> tuple[float, int]:
    """``(share of the IR's stored weight bytes, bytes of a cached value)`` an OpenVINO row streams, from what its
    runtime said it ran in (``bf16``, ``fp32 (kv-cache u8)``, ``fp16``): the plugin repacks an f32 IR's weights into
    the 16-bit precision it computes in when it compiles, so a bf16 row reads half the IR's bytes; a weight-only IR
    (int8, fp16) is counted at its stored width already, and computes in f32. The cache is held in the precision
    it reports, else in the one it computes in (f16 for a weight-only step). Other runtimes' rows: their artifact's
    weights as stored, an f32 cache."""
    if format_of(row.backend) != "openvino":
        return 1.0, 4
    ran = row.ran_as or row.precision
    head = ran.split()[0]
    if "+" in head:
        compute = head.split("+")[-1]
    else:
        compute = "fp32" if row.precision in WEIGHT_ONLY else head
    # a weight-only step keeps an f16 cache (exporters.openvino.cache_hint) unless its label says otherwise
    implied = "fp16" if row.precision in WEIGHT_ONLY and compute == "fp32" else compute
    kv = ran.split("kv-cache ")[1].rstrip(")") if "kv-cache " in ran else implied
    repacked = row.precision not in WEIGHT_ONLY and compute in ("bf16", "fp16")
    return 0.5 if repacked else 1.0, _WIDTH.get(kv, 4)
