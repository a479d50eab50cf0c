"""ONNX export through ``tf2onnx.convert.from_function`` (``from_keras`` is broken on Keras 3).

What tf2onnx does not do for Keras 3 models, written here:
- Keras 3's exact GELU traces to the TF op ``Erfc``, which tf2onnx has no handler for; we register
  one that emits ``1 - Erf(x)`` (``Erf`` is in every opset tf2onnx targets).
- Keras's ``ops.slice_update`` (keras-hub's cached attention writes its cache with it) traces to
  ``XlaDynamicUpdateSlice``, which tf2onnx 1.17 cannot convert either; we emit ``ScatterND`` over the
  update's index grid, start indices clamped as XLA clamps them.
- tf2onnx names dynamic dimensions ``unk__N``; we rename them to the spec's axis names (``batch``,
  ``sequence``) so ONNX Runtime, TensorRT profiles and Triton see meaningful names.
- A constant a Keras functional model computed eagerly while it was built (Gemma's backbone scales its
  embeddings by ``ops.cast(ops.sqrt(hidden_dim), x.dtype)``) is captured by the trace as a tensor, not a
  variable; tf2onnx freezes variables only and leaves such a capture as an extra graph input ("Required
  inputs ([...Mul/y:0]) are missing"). We write its value in as an initializer.
- tf2onnx freezes the variables through TensorFlow's ``convert_variables_to_constants_v2``, which builds a
  concrete function back from the frozen graph: on keras-hub Gemma 3 270M (1.07 GB of weights) the process
  grew past this machine's 24 GB inside that round trip (``wrap_function`` -> ``get_function_def``, seen with
  py-spy) and was killed. We freeze with the graph-def half of the same TensorFlow machinery
  (``_replace_variables_by_constants``, which tf2onnx's own ``large_model`` path uses) and keep every later step
  of tf2onnx's normal path (its freeze fix-ups, grappler): the same ONNX ops and weights, outputs bit-identical
  (tested), Gemma 3 270M converts.
"""

from __future__ import annotations

import contextlib
import logging
import os

from ..core.errors import AttnkitError, ExportError
from ..core.spec import ExportSpec

#: opsets tf2onnx 1.17 converts to (its OPSET_TO_IR_VERSION table) that onnxruntime also runs.
MIN_OPSET = 13


def supported_opsets() -> range:
    from tf2onnx import constants

    return range(MIN_OPSET, max(constants.OPSET_TO_IR_VERSION) + 1)


def check_opset(opset: int) -> None:
    """Raises AttnkitError naming ``--opset`` when tf2onnx cannot target ``opset``."""
    valid = supported_opsets()
    if opset not in valid:
        raise AttnkitError(
            f"opset {opset} is not supported; tf2onnx converts to opsets {valid.start}-{valid.stop - 1}.",
            flag="--opset",
            hint="The default, 17, has LayerNormalization.",
        )


def _erfc_handler(ctx, node, name, args):
    """erfc(x) = 1 - erf(x): rewrite the Erfc node as Erf followed by Sub(1, .)."""
    import numpy as np
    from tf2onnx import utils

    node.type = "Erf"
    node.domain = ""
    np_dtype = utils.map_onnx_to_numpy_type(ctx.get_dtype(node.output[0]))
    one = ctx.make_const(utils.make_name(f"{name}_one"), np.array(1, dtype=np_dtype))
    sub = ctx.insert_new_node_on_output("Sub", node.output[0], name=utils.make_name(f"{name}_erfc"))
    ctx.replace_inputs(sub, [one.output[0], node.output[0]])
    ctx.copy_shape(node.output[0], sub.output[0])
    ctx.set_dtype(sub.output[0], ctx.get_dtype(node.output[0]))


def _name_dynamic_axes(model, spec: ExportSpec) -> None:
    by_name = {t.name: t for t in spec.inputs + spec.outputs}
    for value in list(model.graph.input) + list(model.graph.output):
        t = by_name.get(value.name)
        if t is None:
            continue
        for dim, axis, size in zip(value.type.tensor_type.shape.dim, t.axes, t.shape):
            if size is None and axis:
                dim.dim_param = axis


@contextlib.contextmanager
def _env(**values: str):
    old = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@contextlib.contextmanager
def _fresh_node_protos():
    """Patch tf2onnx's Node.update_proto to rebuild into a new NodeProto (see module docstring)."""
    import onnx
    from tf2onnx.graph import Node

    original = Node.update_proto

    def update_proto(self, external_tensor_storage=None):
        old = self._op
        fresh = onnx.NodeProto(name=old.name, op_type=old.op_type, domain=old.domain, doc_string=old.doc_string)
        fresh.input.extend(old.input)
        fresh.output.extend(old.output)
        self._op = fresh
        return original(self, external_tensor_storage)

    Node.update_proto = update_proto
    try:
        yield
    finally:
        Node.update_proto = original


@contextlib.contextmanager
def _frugal_freeze():
    """tf2onnx's ``tf_loader.from_function`` (the freeze) without TensorFlow's concrete-function round trip
    (module docstring); the rest of its normal path as it is in tf2onnx 1.17."""
    import tensorflow as tf
    from tf2onnx import tf_loader

    original = tf_loader.from_function

    def from_function(func, input_names, output_names, large_model=False):
        if large_model:
            return original(func, input_names, output_names, large_model)
        graph_def = tf_loader.convert_variables_to_constants_large_model(func)
        graph_def = tf_loader.fix_freezing_errors_part2(tf_loader.fix_freezing_errors(graph_def))
        with tf.Graph().as_default() as tf_graph, tf_loader.tf_session(graph=tf_graph) as sess:
            tf.import_graph_def(graph_def, name="")
            input_names = tf_loader.inputs_without_resource(sess, input_names)
            return tf_loader.tf_optimize(input_names, output_names, graph_def)

    tf_loader.from_function = from_function
    try:
        yield
    finally:
        tf_loader.from_function = original


def _from_function(tf2onnx, fn, opset: int):
    model, _ = tf2onnx.convert.from_function(
        fn,
        input_signature=fn.input_signature,
        opset=opset,
        custom_op_handlers={
            "Erfc": (_erfc_handler, []),
            "XlaDynamicUpdateSlice": (_dynamic_update_slice_handler, []),
        },
    )
    return model


def _fold_captured_constants(model, fn) -> None:
    """Each graph input of ``model`` that is a non-variable tensor ``fn`` captured becomes an initializer
    holding the captured value (see module docstring)."""
    from onnx import numpy_helper

    values = {}
    for external, internal in fn.get_concrete_function().graph.captures:
        if external.dtype.name != "resource" and hasattr(external, "numpy"):
            values[internal.name] = external.numpy()
    keep = [value for value in model.graph.input if value.name not in values]
    for value in model.graph.input:
        if value.name in values:
            model.graph.initializer.append(numpy_helper.from_array(values[value.name], value.name))
    del model.graph.input[:]
    model.graph.input.extend(keep)


def _dynamic_update_slice_handler(ctx, node, name, args):
    """XlaDynamicUpdateSlice(x, update, start) -> ScatterND(x, grid, update), grid[..., d] = start[d] + i_d.

    Written by hand because no converter here has it (tf2onnx 1.17 reports it unsupported)."""
    import numpy as np
    from tf2onnx import utils

    x, update, start = node.input[0], node.input[1], node.input[2]
    rank = ctx.get_rank(x)

    def op(kind, inputs, **attr):
        return ctx.make_node(kind, inputs, attr=attr, op_name_scope=name).output[0]

    def const(value):
        return ctx.make_const(utils.make_name(f"{name}_c"), np.array(value, dtype=np.int64)).output[0]

    sx, su = op("Shape", [x]), op("Shape", [update])
    begin = op("Max", [op("Min", [op("Cast", [start], to=7), op("Sub", [sx, su])]), const([0] * rank)])
    axes = []
    for d in range(rank):
        s_d, u_d = op("Gather", [begin, const(d)]), op("Gather", [su, const(d)])
        line = op("Range", [s_d, op("Add", [s_d, u_d]), const(1)])
        shape = [1] * rank + [1]
        shape[d] = -1
        axes.append(op("Expand", [op("Reshape", [line, const(shape)]), op("Concat", [su, const([1])], axis=0)]))
    grid = op("Concat", axes, axis=-1)
    node.type = "ScatterND"
    node.domain = ""
    ctx.replace_inputs(node, [x, grid, update])


@contextlib.contextmanager
def _without_transpose_pass():
    """tf2onnx's optimizers minus its TransposeOptimizer while the block runs (see :func:`convert`)."""
    from tf2onnx import optimizer

    saved = optimizer._optimizers.pop("optimize_transpose", None)
    try:
        yield
    finally:
        if saved is not None:
            optimizer._optimizers["optimize_transpose"] = saved
            optimizer._optimizers.move_to_end("optimize_transpose", last=False)


def convert(fn, spec: ExportSpec, opset: int = 17, transpose_pass: bool = True):
    """Convert a traced ``tf.function`` to an ONNX ModelProto with named I/O and dynamic axes.

    ``transpose_pass=False`` converts without tf2onnx's TransposeOptimizer: on a keras-hub GPT-2 decode step
    of 124 M parameters that pass grows the converter from 7 GB to more than the 24 GB this machine has (the
    process is killed; measured with tf2onnx 1.17, the pass logged step by step), while without it the step
    converts at 8 GB. The runtimes sink transposes themselves (onnxruntime's transpose optimizer, OpenVINO's
    MOC), so the decode steps, where this was measured, are converted without it.

    Raises:
        ExportError: tf2onnx failed or produced a graph with unconverted ops.
    """
    import onnx
    import tf2onnx

    check_opset(opset)
    logging.getLogger("tf2onnx").setLevel(logging.ERROR)
    try:
        passes = contextlib.nullcontext() if transpose_pass else _without_transpose_pass()
        with passes, _frugal_freeze():
            try:
                with _env(TF2ONNX_CATCH_ERRORS="FALSE"), _fresh_node_protos():
                    model = _from_function(tf2onnx, fn, opset)
            except Exception:
                model = _from_function(tf2onnx, fn, opset)  # tf2onnx's default: skip a failing optimizer pass
    except Exception as e:
        raise ExportError(f"tf2onnx could not convert `{spec.name}`: {type(e).__name__}: {str(e)[:200]}") from None
    unconverted = sorted({n.op_type for n in model.graph.node if n.domain not in ("", "ai.onnx", "com.microsoft")})
    if unconverted:
        raise ExportError(f"tf2onnx left TensorFlow ops it cannot convert in `{spec.name}`: {', '.join(unconverted)}.")
    _fold_captured_constants(model, fn)
    _name_dynamic_axes(model, spec)
    model.producer_name = "attnkit (tf2onnx)"
    try:
        onnx.checker.check_model(model, full_check=True)
    except onnx.checker.ValidationError as e:
        raise ExportError(f"the ONNX graph of `{spec.name}` fails onnx.checker: {str(e).splitlines()[0]}") from None
    return model
