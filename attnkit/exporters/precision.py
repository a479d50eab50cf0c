"""Precision lowering on the fp32 ONNX graph (never by exporting a mixed-policy TF graph).

- fp16: onnxconverter-common's ``convert_float_to_float16`` with ``keep_io_types`` (fp32 inputs and
  outputs) and an explicit block list, so LayerNorm, Softmax, reductions and the ops of a
  decomposed LayerNorm stay fp32 islands.
- int8: onnxruntime's ``quantize_dynamic`` with the scheme the export target calls for (U8U8, U8S8,
  U8S8 reduce-range: see :mod:`attnkit.core.targets`), per-tensor or per-channel weight scales,
  restricted to MatMuls with a constant weight: the projections and the FFN. The two
  activation x activation MatMuls of attention (q kᵀ and weights·v), LayerNorm and Softmax stay
  float: quantising attention scores dynamically costs accuracy for little speed at these sizes.
- q8 / q4: weight-only block quantisation by onnxruntime's ``MatMulNBitsQuantizer`` (symmetric, blocks
  of ``BLOCK_SIZE`` along K, ``ACCURACY_LEVEL`` 4 = int8 compute of the float activations): every MatMul
  with a constant weight becomes ``MatMulNBits``. The decode step reads every weight once per token, so
  halving (q8 vs fp16) or quartering its bytes is what speeds it up on a CPU; the manifest records bits,
  block size and accuracy level.
- bf16: not produced. No runtime installed here runs a bf16 ONNX graph (onnxruntime's CPU provider
  has no bf16 MatMul kernel), so nothing could verify it; bf16 on this machine is served by the
  TensorFlow backends (mixed_bfloat16, AMX via oneDNN).
"""

from __future__ import annotations

import copy
import logging
import tempfile
from pathlib import Path

import onnx

from ..core.errors import AttnkitError
from ..core.names import LOWERED_PRECISIONS, ONNX_PRECISIONS, WEIGHT_ONLY, artifact_file

#: ops kept in fp32 inside the fp16 graph, on top of onnxconverter-common's default block list
FP32_ISLANDS = (
    "LayerNormalization",
    "Softmax",
    "ReduceMean",
    "ReduceSum",
    "GlobalAveragePool",
    "Sqrt",
    "Reciprocal",
    "Pow",
    "Exp",
    "Log",
)
BF16_REASON = (
    "no runtime installed here runs a bf16 ONNX graph (onnxruntime's CPU provider has no bf16 MatMul); "
    "bf16 runs on the TensorFlow backends: keras, tf-function, xla, savedmodel"
)


def onnx_file(precision: str) -> str:
    """File name of the ONNX artifact of a precision: model.onnx, model.fp16.onnx, model.int8.onnx."""
    return artifact_file("model", precision, "onnx")


def to_fp16(model: onnx.ModelProto) -> onnx.ModelProto:
    """fp16 weights and activations, fp32 islands, fp32 inputs/outputs."""
    import warnings

    from onnxconverter_common import float16

    block = sorted(set(float16.DEFAULT_OP_BLOCK_LIST) | set(FP32_ISLANDS))
    blocked_nodes = _casts_to_float(model)
    model = _unshare_initializers(model, set(block), set(blocked_nodes))
    with warnings.catch_warnings():
        # The additive mask's -1e9 becomes -1e4 in fp16: still exp(-1e4) == 0 after the fp32 Softmax.
        warnings.filterwarnings("ignore", message="the float32 number", category=UserWarning)
        converted = float16.convert_float_to_float16(
            model, keep_io_types=True, op_block_list=block, node_block_list=blocked_nodes
        )
    _reroute_output_readers(converted)
    _restore_float_outputs(model, converted)
    return converted


def _unshare_initializers(model: onnx.ModelProto, block_ops: set[str], block_nodes: set[str]) -> onnx.ModelProto:
    """A copy of ``model`` where a float initializer read by both blocked (fp32) and other nodes is two: the
    blocked nodes keep it, the others read a copy of their own.

    onnxconverter-common (1.16) leaves such a shared initializer fp32 while converting the other inputs of its
    non-blocked readers to fp16, and onnxruntime refuses the graph ("Type parameter (T) of Optype (Less) bound
    to different types"; its open pull request #329 describes it). keras-hub's GPT-2 hits it: a scalar 0.0 read
    by the token embedding's ``Less`` and by ``Range`` (blocked). The copies are of the shared ones only
    (scalars there), so the file does not grow.
    """
    floats = {onnx.TensorProto.FLOAT, onnx.TensorProto.DOUBLE}
    inits = {i.name: i for i in model.graph.initializer if i.data_type in floats}
    kinds: dict[str, set[bool]] = {}  # initializer -> {blocked?} of its readers
    for node in model.graph.node:
        for name in set(node.input) & inits.keys():
            kinds.setdefault(name, set()).add(node.op_type in block_ops or node.name in block_nodes)
    mixed = {name for name, seen in kinds.items() if len(seen) == 2}
    if not mixed:
        return model
    model = copy.deepcopy(model)
    for name in mixed:
        twin = copy.deepcopy(inits[name])
        twin.name = f"{name}/unshared"
        model.graph.initializer.append(twin)
    for node in model.graph.node:
        if node.op_type not in block_ops and node.name not in block_nodes:
            node.input[:] = [f"{i}/unshared" if i in mixed else i for i in node.input]
    return model


def _reroute_output_readers(model: onnx.ModelProto) -> None:
    """Inner nodes reading a graph output read its fp16 value, not the fp32 output.

    With ``keep_io_types`` the converter ends an output with ``Cast(to=float)``, but nodes that also
    read that tensor (a KV cache's ``present.*``, read by the attention MatMul) keep reading the fp32
    output while being typed fp16: onnxruntime refuses the graph. They are pointed at the Cast's input.
    """
    outputs = {o.name for o in model.graph.output}
    producers = {o: n for n in model.graph.node for o in n.output}
    for name in outputs:
        cast = producers.get(name)
        if cast is None or cast.op_type != "Cast":
            continue
        for n in model.graph.node:
            if n is not cast and name in n.input:
                n.input[:] = [cast.input[0] if i == name else i for i in n.input]


def _restore_float_outputs(original: onnx.ModelProto, model: onnx.ModelProto) -> None:
    """Make every output that was fp32 fp32 again.

    With ``keep_io_types`` the converter still declares an output fp16 when a blocked (fp32) node
    produces it: it appends a Cast to fp16. That Cast is turned into a Cast to fp32 (a no-op on
    the fp32 value), otherwise a Cast to fp32 is appended.
    """
    f32, f16 = onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16
    was_float = {o.name for o in original.graph.output if o.type.tensor_type.elem_type == f32}
    producers = {o: n for n in model.graph.node for o in n.output}
    for out in model.graph.output:
        if out.name not in was_float or out.type.tensor_type.elem_type != f16:
            continue
        node = producers.get(out.name)
        if node is not None and node.op_type == "Cast":
            for a in node.attribute:
                if a.name == "to":
                    a.i = f32
        else:
            inner = f"{out.name}/fp16"
            for n in model.graph.node:
                n.output[:] = [inner if o == out.name else o for o in n.output]
                n.input[:] = [inner if i == out.name else i for i in n.input]
            model.graph.node.append(
                onnx.helper.make_node("Cast", [inner], [out.name], to=f32, name=f"{out.name}/to_fp32")
            )
        out.type.tensor_type.elem_type = f32


def _casts_to_float(model: onnx.ModelProto) -> list[str]:
    """Cast nodes turning a non-float tensor into float32 (our additive mask from int ids).

    The converter retypes their outputs to fp16 without changing the ``to`` attribute, which
    onnxruntime refuses to load; blocked by node name they stay fp32. (Blocking the op type
    ``Cast`` instead makes the converter loop forever on the Casts it inserts itself.)
    """
    inferred = onnx.shape_inference.infer_shapes(model)
    types = {v.name: v.type.tensor_type.elem_type for v in list(inferred.graph.value_info) + list(inferred.graph.input)}
    floats = (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.DOUBLE)
    return [
        n.name
        for n in model.graph.node
        if n.op_type == "Cast"
        and any(a.name == "to" and a.i == onnx.TensorProto.FLOAT for a in n.attribute)
        and types.get(n.input[0]) not in floats
    ]


def weight_matmuls(model: onnx.ModelProto) -> list[str]:
    """Names of MatMul nodes with a constant (initializer) operand."""
    inits = {i.name for i in model.graph.initializer}
    return [n.name for n in model.graph.node if n.op_type == "MatMul" and any(i in inits for i in n.input)]


BLOCK_SIZE = 32
ACCURACY_LEVEL = 4  # MatMulNBits: 0 unset, 1 fp32, 2 fp16, 3 bf16, 4 int8 compute


def weight_only_extra(precision: str) -> dict:
    return {"bits": 8 if precision == "q8" else 4, "block_size": BLOCK_SIZE, "accuracy_level": ACCURACY_LEVEL,
            "symmetric": True, "quantizer": "onnxruntime MatMulNBitsQuantizer"}  # fmt: skip


def to_weight_only(model: onnx.ModelProto, precision: str) -> onnx.ModelProto:
    """q8 / q4: every MatMul with a constant weight as ``MatMulNBits`` (see module docstring)."""
    from onnxruntime.quantization.matmul_nbits_quantizer import DefaultWeightOnlyQuantConfig, MatMulNBitsQuantizer

    bits = weight_only_extra(precision)["bits"]
    config = DefaultWeightOnlyQuantConfig(
        block_size=BLOCK_SIZE, is_symmetric=True, accuracy_level=ACCURACY_LEVEL, bits=bits
    )
    quiet = logging.getLogger("onnxruntime.quantization.matmul_nbits_quantizer")
    level = quiet.level
    quiet.setLevel(logging.WARNING)
    try:
        quantizer = MatMulNBitsQuantizer(onnx.ModelProto.FromString(model.SerializeToString()), algo_config=config)
        quantizer.process()
    finally:
        quiet.setLevel(level)
    return quantizer.model.model


def to_int8(model: onnx.ModelProto, per_channel: bool | None = None, scheme=None) -> onnx.ModelProto:
    """Dynamic int8 quantisation of the weight MatMuls (see module docstring).

    Args:
        per_channel: weight scales per output channel; None: the scheme's choice.
        scheme: an :class:`attnkit.core.targets.Int8Scheme`; default the portable one (U8U8).
    """
    try:
        from onnxruntime.quantization import QuantType, quantize_dynamic
    except ImportError:
        from ..core.errors import DependencyError

        raise DependencyError("onnxruntime", "cpu", "int8 quantisation") from None

    from ..core.targets import INT8_SCHEMES

    scheme = scheme or INT8_SCHEMES["u8u8"]
    per_channel = scheme.per_channel if per_channel is None else per_channel

    with tempfile.TemporaryDirectory() as tmp:
        src, dst = Path(tmp) / "in.onnx", Path(tmp) / "out.onnx"
        onnx.save(model, src)
        # quantize_dynamic logs advice to run its pre-processing on the root logger; that pass
        # (symbolic shape inference + ORT graph optimisation) is not applied here.
        logging.getLogger().setLevel(max(logging.getLogger().level, logging.ERROR))
        quantize_dynamic(
            src,
            dst,
            op_types_to_quantize=["MatMul"],
            nodes_to_quantize=weight_matmuls(model),
            per_channel=per_channel,
            reduce_range=scheme.reduce_range,
            weight_type=getattr(QuantType, scheme.weight),
        )
        return onnx.load(dst)


def lower(model: onnx.ModelProto, precision: str, per_channel: bool | None = None, scheme=None) -> onnx.ModelProto:
    """The fp32 ONNX model lowered to ``precision``.

    Raises:
        AttnkitError: bf16 (no runtime here) or an unknown precision.
    """
    if precision == "fp32":
        return model
    if precision == "fp16":
        return to_fp16(model)
    if precision == "int8":
        return to_int8(model, per_channel, scheme)
    if precision in WEIGHT_ONLY:
        return to_weight_only(model, precision)
    if precision == "bf16":
        raise AttnkitError(f"a bf16 ONNX graph is not produced: {BF16_REASON}.", flag="--precision")
    raise AttnkitError(
        f"`{precision}` is not an ONNX precision; valid: {', '.join(ONNX_PRECISIONS)}.", flag="--precision"
    )


def write_lowered(
    fp32: onnx.ModelProto, precisions, stage: Path, file_of, opset: int, per_channel: bool | None, target, say=None
) -> list[tuple[str, str, dict]]:
    """Write the fp32 graph and its fp16/int8 lowerings (``--target``'s int8 scheme) into ``stage``.

    Args:
        per_channel: int8 weight scales per output channel; None: the target's scheme's choice.
        file_of: precision -> file name relative to ``stage`` (``model.int8.onnx``...).
        say: progress callback, told of each file written (None: silent).

    Returns:
        ``(precision, file, manifest extra)`` per file: opset, op counts, where it runs, and for int8 the
        scheme, target and what the scheme requires of the CPU.
    """
    from ..core.targets import int8_requirement
    from .passes import op_counts

    written = []
    per_channel = target.int8.per_channel if per_channel is None else per_channel
    for precision in ["fp32"] + [p for p in precisions if p in LOWERED_PRECISIONS]:
        rel = file_of(precision)
        if say:
            scales = ", per-channel" if per_channel else ""
            say(f"writing {rel}" + (f" ({target.int8.name}{scales}, for {target.name})" if precision == "int8" else ""))
        graph = lower(fp32, precision, per_channel, target.int8) if precision != "fp32" else fp32
        onnx.save(graph, stage / rel)
        extra = {"opset": opset, "ops": op_counts(graph), "runs_on": ["onnxruntime (CPU)"]}
        if precision == "int8":
            extra.update(per_channel=per_channel, int8_scheme=target.int8.name, target=target.name)
            requires = int8_requirement(target.int8, target.name)
            if requires:
                extra["requires"] = requires
        if precision in WEIGHT_ONLY:
            extra.update(weight_only_extra(precision))
        written.append((precision, rel, extra))
    return written
