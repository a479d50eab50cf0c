"""OpenVINO IR (``openvino/model.xml`` + ``model.bin``) from the ONNX graph attnkit already exports.

Converted by OpenVINO's own converter, ``openvino.convert_model`` on ``model.onnx``, rather than through
Keras 3's ``model.export(format="openvino")``: measured on the AMX Xeon (shared/STACK_FACTS.md, 2026-11-27),
W-base converted from the ONNX graph ran 140 ms bf16 against 161 ms from Keras's IR; the ONNX graph is the
one verify, the LayerNorm fusion and the int8 lowering already check; and it needs no scipy.

Precision is not a property of the IR for OpenVINO's CPU plugin but a compile-time hint
(``INFERENCE_PRECISION_HINT``): one fp32 IR serves fp32 (f32 forced) and bf16 (bf16 asked, and the plugin
says what it really took), so the manifest records it once per precision with the same path. The weights
stay fp32 in the file (``compress_to_fp16=False``): an fp16-compressed IR would change fp32 answers.
"""

from __future__ import annotations

from pathlib import Path

from ..core.errors import DependencyError
from .openvino_positions import (  # noqa: F401 (re-exported: the stateful runner and tests import them here)
    POSITION_IDS,
    expose_positions,
    expose_slot_positions,
    positions_from_mask,
    takes_paged_attention,
)

IR_DIR = "openvino"
IR_XML = "model.xml"


def require():
    """The ``openvino`` module, or DependencyError naming the extra."""
    try:
        import openvino
    except ImportError:
        raise DependencyError("openvino", "openvino", "--format openvino") from None
    return openvino


def write_ir(stage: Path, onnx_path: Path, rel_dir: str = IR_DIR) -> str:
    """Convert ``onnx_path`` and save ``rel_dir/model.xml`` (+ ``.bin``) under ``stage``; returns ``rel_dir``."""
    ov = require()
    model = ov.convert_model(str(onnx_path))
    (stage / rel_dir).mkdir(parents=True, exist_ok=True)
    ov.save_model(model, str(stage / rel_dir / IR_XML), compress_to_fp16=False)
    return rel_dir


#: attnkit precisions whose OpenVINO decode IRs store their weights reduced and compute in f32
WEIGHT_ONLY = ("fp16", "int8")


def cache_hint(precision: str, hint: str) -> str:
    """The KV cache precision a stateful decoder of ``precision`` compiled with inference ``hint`` is asked to keep.

    - f16 for the weight-only steps (fp16 and int8 weights, f32 compute), whose rows are judged by fp16's and int8's
      tolerances: OpenVINO's SDPA with an f16 cache decoded mistral-160m 1.06-1.16x faster than with an f32 one, f32
      compute, on an AVX2 EPYC and on Zen 4 (1.09x with int8 weights, tokens identical; BENCHMARKS.md), and the
      peers' OpenVINO defaults keep a 16-bit or u8 cache. The IRs keep the f32 cache pinned for consumers that
      compile with OpenVINO's defaults (:func:`pin_runtime_options`): more exact than what attnkit checked.
    - A bf16 hint's cache in what the plugin computes that hint in here (asked of it,
      :func:`attnkit.core.machine.openvino_compiles`): bf16 where it computes bf16, else f32, so that a bf16 row on a
      CPU without bf16 is wholly the fp32 row it says it ran as. GenAI's paged attention refuses a bf16 cache beside
      f32 compute (2026.4 on an AVX2 EPYC: "Check 'all_of(ov::element::f32, key_cache_type, value_cache_type)'").
    - Else the hint's own."""
    if precision in WEIGHT_ONLY and hint == "f32":
        return "f16"
    if hint == "bf16":
        from ..core.machine import openvino_compiles

        return "bf16" if openvino_compiles("bf16") in (None, "bf16") else "f32"
    return hint


def write_f16_weights(stage: Path, fp32_dir: Path, rel_dir: str) -> str:
    """The IR in ``fp32_dir`` with its weights stored in f16 (OpenVINO's own ``compress_to_fp16``: each f32 constant
    that f16 holds becomes f16 + Convert), saved as ``rel_dir/model.xml``: attnkit's weight-only fp16 decode step,
    compiled with f32 inference like the weight-only int8 one.

    Why: a decode step streams every weight once a token. OpenVINO's CPU plugin keeps such weights in f16 and widens
    them inside its FullyConnected kernels, so the step reads half the bytes and still computes in f32: measured on
    mistral-160m (AMD Zen 4, OpenVINO 2026.4, interleaved in one process) 13.4 ms a step against 26.0 ms with f32
    weights and 19.0 ms computing in bf16 (BENCHMARKS.md). Where a plugin widens them when it compiles instead, the
    step is as fast as fp32's, and as right. The runtime options pinned in the source IR (f32 cache) are kept."""
    ov = require()
    model = ov.Core().read_model(str(fp32_dir / IR_XML))
    (stage / rel_dir).mkdir(parents=True, exist_ok=True)
    ov.save_model(model, str(stage / rel_dir / IR_XML), compress_to_fp16=True)
    return rel_dir


def pin_runtime_options(model, **options) -> None:
    """Write ``options`` into the IR's ``runtime_options``, which OpenVINO's core applies when it compiles the
    model without them being asked (as optimum-intel and OpenVINO GenAI pin a cache precision). OpenVINO
    honours only some keys there: ``KV_CACHE_PRECISION`` and ``DYNAMIC_QUANTIZATION_GROUP_SIZE`` (measured with
    OpenVINO 2026.4: both read back from a model compiled with no config; ``PERFORMANCE_HINT`` and
    ``EXECUTION_MODE_HINT`` did not), so the inference precision is not among them. Pinned, a consumer that
    compiles with its own defaults (Triton's OpenVINO backend, OpenVINO GenAI, a user's script) gets the
    cache and the activations attnkit verified, not OpenVINO's u8 cache or on-the-fly int8 activations."""
    for key, value in options.items():
        model.set_rt_info(str(value), ["runtime_options", key])


#: what OpenVINO's CPU plugin says when its snippets (the JIT-compiled fused eltwise and MHA subgraphs) run out
#: of vector registers; and the property that compiles without them
SNIPPETS_OUT_OF_REGISTERS = "Can't allocate registers for a snippet"
SNIPPETS_OFF = {"SNIPPETS_MODE": "DISABLE"}


def compile_with_fallback(build, config: dict):
    """``(build(config), what was added to config)``: ``build`` compiles (``core.compile_model`` or GenAI's
    ``LLMPipeline``); if OpenVINO's CPU plugin cannot allocate registers for a snippet, compiled again with
    snippets off (``SNIPPETS_MODE: DISABLE``: the same ops as ordinary nodes, same answers).

    Why: OpenVINO 2026.4's CPU plugin fails to compile attention whose scores carry an additive bias inside
    the scale and keras-hub's masked softmax (``MatMul -> Add(alibi) -> Multiply -> where -> Softmax -> where
    -> MatMul``, keras-hub Falcon and Bloom) on an AVX2-only CPU, 16 vector registers (measured on an AVX2
    EPYC: "not enough registers", for the forward IR, the step and GenAI alike; ``SNIPPETS_MODE`` pinned in
    the IR's ``runtime_options`` is not honoured). Whether a CPU hits it is asked of the plugin by compiling,
    never predicted from CPU flags; nothing else is retried."""
    try:
        return build(config), {}
    except RuntimeError as error:
        if SNIPPETS_OUT_OF_REGISTERS not in str(error):
            raise
    return build({**config, **SNIPPETS_OFF}), dict(SNIPPETS_OFF)


#: the stateful decoder's extra input: which row of the cache each row continues from (optimum-intel's name)
BEAM_IDX = "beam_idx"


def make_stateful(model, pairs: dict[str, str], batch_input: str):
    """Keep the KV cache inside ``model`` (an ``ov.Model`` of the decode step) as OpenVINO state, in place.

    optimum-intel's recipe (``optimum/exporters/openvino/stateful.py``), written here with OpenVINO's own
    transformation because optimum-intel wants a transformers model, not an IR: each ``past -> present`` pair
    of ``pairs`` becomes a variable (``apply_make_stateful_transformation``: ReadValue/Assign); a
    ``beam_idx`` input (int32, one per row) gathers the cache rows before each step; and each variable
    starts as zeros of ``(batch, heads, 0, depth)`` with the batch read from ``batch_input``'s shape, so one
    IR serves any batch. ``beam_idx`` is not ornamental: the CPU plugin fuses ReadValue -> Gather(beam_idx)
    -> Concat -> attention -> Assign into one ScaledDotProductAttention that appends to the cache in place
    (measured on decoder-small: 6 SDPA nodes with it, plain MatMul/Softmax and a cache copy per step without).
    """
    import numpy as np
    from openvino import Type, opset13
    from openvino._offline_transformations import apply_make_stateful_transformation

    ids = model.input(batch_input)
    beam = opset13.parameter([ids.get_partial_shape()[0]], Type.i32, name=BEAM_IDX)
    beam.output(0).get_tensor().set_names({BEAM_IDX})
    model.add_parameters([beam])
    for past in pairs:
        port = model.input(past)
        consumers = list(port.get_target_inputs())
        gathered = opset13.gather(port, beam, opset13.constant(0))
        for consumer in consumers:
            consumer.replace_source_output(gathered.output(0))
    model.validate_nodes_and_infer_types()
    apply_make_stateful_transformation(model, dict(pairs))
    batch = opset13.gather(
        opset13.shape_of(model.input(batch_input), "i64"), opset13.constant([0]), opset13.constant(0)
    )
    for op in model.get_ops():
        if op.get_type_name() != "ReadValue":
            continue
        dims = [d.min_length for d in op.get_output_partial_shape(0)]  # dynamic past -> 0
        parts = [batch] + [opset13.constant(np.array([d], np.int64)) for d in dims[1:]]
        zero = opset13.constant(0.0, dtype=op.get_output_element_type(0))
        op.set_arguments([opset13.broadcast(zero, opset13.concat(parts, 0))])
    model.validate_nodes_and_infer_types()
    return model


def write_stateful(stage: Path, step_dir: Path, rel_dir: str, pairs: dict[str, str], batch_input: str,
                   positions: str | None = None, windows: list | None = None) -> tuple[str, str | None]:  # fmt: skip
    """The stateful decoder (:func:`make_stateful`) of the step IR in ``step_dir``, saved as ``rel_dir/model.xml``;
    ``positions`` (how the step positions its tokens, :data:`attnkit.core.genspec.POSITIONS`): with a
    ``position_ids`` input in place of what it computed them from, its mask (:func:`expose_positions`) or its
    cache slot (:func:`expose_slot_positions`; a step whose positions are not found keeps computing them), as
    optimum-intel's stateful models take them; a slot-positioned step's sliding ``windows`` (one per attention
    layer, None for full attention: :func:`attnkit.models.keras_hub.layer_windows`) in the form GenAI's paged
    attention reads (:func:`attnkit.exporters.openvino_window.window_for_paged_attention`; written here, not only
    in the GenAI layout, so both share one ``.bin``). Returns ``rel_dir`` and why paged attention cannot take the
    step (:func:`write_genai` refuses it with that), else None."""
    from .openvino_window import WINDOW_REFUSED, window_for_paged_attention

    ov = require()
    model = make_stateful(ov.Core().read_model(str(step_dir / IR_XML)), pairs, batch_input)
    refused = None
    if positions == "mask":
        expose_positions(model)
    elif positions == "slot":
        model, unpositioned = expose_slot_positions(model)
        refused = unpositioned and f"its positions by cache slot are not an input: {unpositioned}"
        if not refused and any(windows or []):
            why = window_for_paged_attention(model, windows)
            refused = why and WINDOW_REFUSED.format(why=why)
    pin_runtime_options(model, KV_CACHE_PRECISION="f32")  # OpenVINO's default u8 cache: rel L2 1.45e-3
    (stage / rel_dir).mkdir(parents=True, exist_ok=True)
    ov.save_model(model, str(stage / rel_dir / IR_XML), compress_to_fp16=False)
    return rel_dir, refused


#: OpenVINO GenAI's file names in a model directory (``openvino_genai.LLMPipeline(DIR, "CPU")``)
GENAI_XML = "openvino_model.xml"
GENAI_CONFIG = "generation_config.json"


def write_genai(stage: Path, stateful_dir: Path, rel_dir: str, g, eos_token_id: int, windows: list | None = None,
                refused: str | None = None) -> tuple[str, str | None]:  # fmt: skip
    """The stateful decoder in OpenVINO GenAI's layout, saved as ``rel_dir/openvino_model.xml`` with a
    ``generation_config.json``: the directory ``openvino_genai.LLMPipeline`` loads (no tokenizer: it is fed
    token ids, ``TokenizedInputs``).

    GenAI drives a stateful model by fixed names and types: ``input_ids`` and ``attention_mask`` (i64, the
    mask over past and new tokens, which is what attnkit's step takes as ``padding_mask``), ``beam_idx``
    (i32), ``logits``. The step's inputs are renamed and given i64 tensors by OpenVINO's own
    PrePostProcessor (a Convert in the graph); a keras-hub step (positions by cache slot) takes no mask, so
    an ``attention_mask`` GenAI can set and the graph ignores is added (the runner hands such a model
    unpadded prompts of one length per call). Written by hand because optimum-intel, which writes
    this layout, exports from a transformers model, not from an IR. The runtime options pinned in the
    stateful IR (f32 cache, no dynamic quantisation) are kept. ``eos_token_id``: GenAI needs one inside the
    vocabulary (attnkit's runner asks it to ignore it unless a request names one). Returns ``rel_dir`` and
    None if the model takes GenAI's paged attention, which ``ContinuousBatchingPipeline`` and OpenVINO Model
    Server need, else why not: ``refused`` (why :func:`write_stateful` could not make the step take it), or the
    rewrite's own refusal (:func:`takes_paged_attention`, which also asks that each attention get its layer's
    sliding window of ``windows``).
    """
    import json

    from openvino import Type, opset13
    from openvino.preprocess import PrePostProcessor

    ov = require()
    model = ov.Core().read_model(str(stateful_dir / IR_XML))
    model.input(g.ids).get_tensor().set_names({"input_ids"})
    if g.slot:
        mask = opset13.parameter([-1, -1], Type.i64, name="attention_mask")
        mask.output(0).get_tensor().set_names({"attention_mask"})
        model.add_parameters([mask])
    else:
        model.input(g.mask).get_tensor().set_names({"attention_mask"})
    ppp = PrePostProcessor(model)
    for name in ("input_ids", "attention_mask"):
        if model.input(name).get_element_type() != Type.i64:
            ppp.input(name).tensor().set_element_type(Type.i64)
    model = ppp.build()
    for parameter in model.get_parameters():  # the paged-attention rewrite finds input_ids by its node's name
        names = parameter.output(0).get_names() & {"input_ids", "attention_mask", BEAM_IDX, POSITION_IDS}
        if names:
            parameter.set_friendly_name(next(iter(names)))
    refused = refused or takes_paged_attention(model, windows)
    (stage / rel_dir).mkdir(parents=True, exist_ok=True)
    ov.save_model(model, str(stage / rel_dir / GENAI_XML), compress_to_fp16=False)
    _share_weights(stateful_dir / IR_XML, stage / rel_dir / GENAI_XML)
    config = {"eos_token_id": int(eos_token_id), "pad_token_id": 0, "do_sample": False, "num_beams": 1}
    (stage / rel_dir / GENAI_CONFIG).write_text(json.dumps(config, indent=2) + "\n")
    return rel_dir, refused


def _share_weights(source_xml: Path, written_xml: Path) -> None:
    """Hard-link ``written_xml``'s ``.bin`` to ``source_xml``'s when they hold the same bytes (renaming inputs
    and adding a Convert changes no constant: measured identical for decoder-small), so the GenAI layout costs
    no second copy of the weights (the packager's link-or-copy; a file system without links keeps a copy)."""
    import filecmp

    from .triton import _link_or_copy

    src, dst = source_xml.with_suffix(".bin"), written_xml.with_suffix(".bin")
    if src.stat().st_size == dst.stat().st_size and filecmp.cmp(src, dst, shallow=False):
        dst.unlink()  # inside the export's staging directory: nothing outside sees the gap
        _link_or_copy(src, dst)


def streamed_weight_bytes(xml: Path) -> int:
    """Bytes of the weights one step of the IR reads: every constant except tables only gathered from (a step
    reads one row of the token embedding per token), as :func:`attnkit.generation.traffic.streamed_weight_bytes`
    counts them for ONNX; compressed weights count at their stored width."""
    ov = require()
    decompression = {"Convert", "Subtract", "Multiply", "Reshape"}

    def readers(output) -> set[str]:
        """What reads a weight, looking through NNCF's decompression chain (Convert -> Subtract -> Multiply)."""
        out: set[str] = set()
        for target in output.get_target_inputs():
            node = target.get_node()
            kind = node.get_type_name()
            out |= readers(node.output(0)) if kind in decompression else {kind}
        return out

    total = 0
    for op in ov.Core().read_model(str(xml)).get_ops():
        if op.get_type_name() != "Constant" or op.get_output_partial_shape(0).rank.get_length() < 2:
            continue  # shapes, scales, zero points, biases: noise next to the weights
        if readers(op.output(0)) - {"ShapeOf"} == {"Gather"}:
            # a table only gathered from; a ShapeOf reads no data (keras-hub's GPT-2 reads its token table's
            # shape: counted, gpt2-124m's step was 652 MB instead of 497)
            continue
        total += op.get_byte_size()
    return total
