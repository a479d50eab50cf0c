"""``export --generate``: the decode step of a decoder or seq2seq model next to its full-forward artifacts.

- SavedModel: ``savedmodel/1`` gains the signatures ``prefill``, ``decode_step``, ``generate`` (greedy,
  ``tf.while_loop``) and, for seq2seq, ``encode``, beside ``serving_default`` (one SavedModel, one set of
  variables, as TF Serving serves it).
- ONNX: ``decoder_with_past.onnx`` (the prefill is the step with an empty past) and, for seq2seq,
  ``encoder.onnx`` (source -> cross-attention keys/values), each lowered like ``model.onnx``:
  ``.fp16.onnx`` with fp32 islands and ``.int8.onnx`` with the ``--target``'s int8 scheme.

The manifest's ``generation`` section records the GenerationSpec and one record per artifact with its
role (``signatures``, ``decoder_with_past``, ``encoder``).
"""

from __future__ import annotations

from pathlib import Path

from ..core.names import (
    EOS_ID,
    MAX_NEW_TOKENS,
    ROLE_DECODER_GENAI,
    ROLE_DECODER_STATEFUL,
    ROLE_DECODER_WITH_PAST,
    ROLE_ENCODER,
    ROLE_SIGNATURES,
    SIG_DECODE_STEP,
    SIG_ENCODE,
    SIG_GENERATE,
    SIG_PREFILL,
    artifact_file,
)
from ..exporters.manifest import ArtifactRecord, GenerationSection


def savedmodel_endpoints(decoding, sampler="greedy") -> dict:
    """The extra signatures of the fp32 SavedModel (see module docstring)."""
    from ..tracing.decode import trace_encode, trace_generate, trace_step

    fns = {
        SIG_PREFILL: trace_step(decoding, with_past=False),
        SIG_DECODE_STEP: trace_step(decoding, with_past=True),
        SIG_GENERATE: trace_generate(decoding, sampler),
    }
    if decoding.spec.seq2seq:
        fns[SIG_ENCODE] = trace_encode(decoding)
    return fns


def signatures_record(stage: Path, rel: str, seq2seq: bool) -> ArtifactRecord:
    names = [SIG_PREFILL, SIG_DECODE_STEP, SIG_GENERATE] + ([SIG_ENCODE] if seq2seq else [])
    return ArtifactRecord.of(stage, "savedmodel", rel, "fp32", role=ROLE_SIGNATURES, signatures=names)


def write_onnx(
    stage: Path, decoding, precisions, target, per_channel: bool | None, fuse: bool, opset: int, say
) -> list[ArtifactRecord]:
    """Convert, fuse and lower the decode step (and the seq2seq encoder); returns their records."""
    from ..exporters.onnx import convert
    from ..exporters.passes import apply_passes
    from ..exporters.precision import write_lowered
    from ..tracing.decode import step_export_spec, trace_encode, trace_step

    g = decoding.spec
    graphs = [
        (ROLE_DECODER_WITH_PAST, trace_step(decoding, with_past=True), step_export_spec(g, ROLE_DECODER_WITH_PAST))
    ]
    if g.seq2seq:
        graphs.append((ROLE_ENCODER, trace_encode(decoding), step_export_spec(g, ROLE_ENCODER, encoder=True)))
    records = []
    for role, fn, spec in graphs:
        say(f"exporting {role}.onnx (opset {opset})")
        # without tf2onnx's TransposeOptimizer: it ran gpt2-124m's step out of memory, and on gpt2-small's and
        # llama3-small's steps it changed no node (same op counts with and without it)
        fp32 = convert(fn, spec, opset, transpose_pass=False)
        if fuse:
            fp32, _ = apply_passes(fp32)
        for precision, rel, extra in write_lowered(
            fp32, precisions, stage, lambda p, role=role: artifact_file(role, p, "onnx"), opset, per_channel, target
        ):
            records.append(ArtifactRecord.of(stage, "onnx", rel, precision, role=role, **extra))
    return records


def write_openvino(
    stage: Path, records: list[ArtifactRecord], g, precisions, say, eos_token_id: int = 0, windows: list | None = None
) -> list[ArtifactRecord]:
    """OpenVINO IR of the fp32 decode step (and seq2seq encoder), converted from their ONNX graphs as the
    forward IR is (:mod:`attnkit.exporters.openvino`): ``openvino_decoder_with_past/``, ``openvino_encoder/``;
    the stateful decoder made from the step's IR, the KV cache kept inside (``openvino_decoder_stateful/``,
    optimum-intel's layout, :func:`attnkit.exporters.openvino.make_stateful`); with int8 asked, both decode
    steps with NNCF's weight-only int8 (``..._int8/``; the encoder, run once a request, stays fp32); for a
    decoder-only model, each stateful decoder in OpenVINO GenAI's layout too (``openvino_genai[_int8]/``,
    :func:`attnkit.exporters.openvino.write_genai`; ``eos_token_id`` goes into its generation config; ``windows``, each
    transformer layer's sliding window, are given to GenAI's paged attention)."""
    from ..core.targets import OPENVINO_BF16_REQUIREMENT
    from ..exporters.openvino import IR_XML, write_f16_weights, write_ir, write_stateful
    from ..exporters.openvino import write_genai as write_genai_ir
    from ..exporters.openvino_attention import fuse_ir
    from ..exporters.openvino_int8 import WEIGHT_ONLY, scheme_record, write_int8

    out = []

    def add(rel: str, role: str, **extra) -> None:
        """The fp32 IR's record; for a decode step with bf16 asked, the same IR's bf16 record (compiled with a bf16
        hint, its cache in bf16: what OpenVINO runs by default on a CPU with bf16 instructions, the plugin's own
        choice read back by the runners); with fp16 asked, its weights stored in f16 and computed in f32 (weight-only,
        :func:`attnkit.exporters.openvino.write_f16_weights`); with int8 asked, its weight-only int8 IR's."""
        out.append(ArtifactRecord.of(stage, "openvino", rel, "fp32", role=role, inference_precision="f32", **extra))
        if role != ROLE_ENCODER and "bf16" in precisions:
            out.append(ArtifactRecord.of(stage, "openvino", rel, "bf16", role=role, inference_precision="bf16",
                                         requires=OPENVINO_BF16_REQUIREMENT, **extra))  # fmt: skip
        if role != ROLE_ENCODER and "fp16" in precisions:
            say(f"storing {rel}'s weights in f16 (weight-only, f32 compute)")
            rel16 = write_f16_weights(stage, stage / rel, f"{rel}_fp16")
            out.append(ArtifactRecord.of(stage, "openvino", rel16, "fp16", role=role, inference_precision="f32",
                                         weights="f16", **extra))  # fmt: skip
        if role != ROLE_ENCODER and "int8" in precisions:
            say(f"compressing {rel}'s weights to int8 (NNCF, weight-only)")
            rel8 = write_int8(stage, stage / rel, f"{rel}_int8")
            scheme = {**scheme_record(WEIGHT_ONLY), **extra}
            out.append(
                ArtifactRecord.of(stage, "openvino", rel8, "int8", role=role, inference_precision="f32", **scheme)
            )

    from ..exporters.openvino_window import narrow_windows

    windows = narrow_windows(windows, g.max_length)
    refused = None  # why paged attention cannot take the stateful step (exporters.openvino.write_stateful)
    for item in [r for r in records if r.format == "onnx" and r.precision == "fp32"]:
        say(f"converting {item.path} to OpenVINO IR")
        rel = write_ir(stage, stage / item.path, f"openvino_{item.role}")
        fusion = {}
        if item.role == ROLE_DECODER_WITH_PAST and not g.seq2seq:
            fusion = fuse_ir(stage / rel / IR_XML, g.past_from_present(), g.ids, None if g.slot else g.mask)
            if fusion.get("fused_attention"):
                say(f"fused {fusion['fused_attention']} attention blocks into ScaledDotProductAttention")
        add(rel, item.role, **fusion)
        if item.role == ROLE_DECODER_WITH_PAST:
            say("making the OpenVINO decode step stateful (KV cache as state)")
            stateful, refused = write_stateful(stage, stage / rel, f"openvino_{ROLE_DECODER_STATEFUL}",
                                               g.past_from_present(), g.ids, g.positions, windows)  # fmt: skip
            add(stateful, ROLE_DECODER_STATEFUL, **fusion)
    if not g.seq2seq:  # GenAI's LLMPipeline is decoder-only
        written: dict[str, tuple[str, str | None]] = {}  # stateful IR -> its GenAI directory (bf16 shares fp32's)
        for made in [r for r in out if r.role == ROLE_DECODER_STATEFUL]:
            if made.path not in written:
                say(f"writing {made.path} in OpenVINO GenAI's layout")
                rel = "openvino_genai" + ("" if made.precision == "fp32" else f"_{made.precision}")
                written[made.path] = write_genai_ir(stage, stage / made.path, rel, g, eos_token_id, windows,
                                                    refused)  # fmt: skip
            rel, refused = written[made.path]
            extra = {**made.extra, "eos_token_id": eos_token_id, "paged_attention": refused is None}
            if refused:
                extra["paged_attention_refused"] = refused
            out.append(ArtifactRecord.of(stage, "openvino", rel, made.precision, role=ROLE_DECODER_GENAI, **extra))
    return out


def write_genai(stage: Path, decoding, records: list[ArtifactRecord], say) -> list[ArtifactRecord]:
    """``genai_config.json`` for onnxruntime-genai beside the decoder-only ``decoder_with_past*.onnx``
    (:mod:`attnkit.exporters.genai`); seq2seq exports get none (genai's encoder-decoder pipeline is Whisper's)."""
    from ..exporters import genai

    fp32 = next(
        (r for r in records if r.format == "onnx" and r.role == ROLE_DECODER_WITH_PAST and r.precision == "fp32"), None
    )
    if decoding.spec.seq2seq or fp32 is None:
        return []
    say(f"writing {genai.CONFIG} (onnxruntime-genai)")
    eos = genai.end_token_id(decoding.model)
    rel = genai.write(stage, decoding.spec, fp32.path, eos)
    return [ArtifactRecord.of(stage, "genai", rel, "fp32", role=ROLE_DECODER_WITH_PAST, eos_token_id=eos)]


def section(decoding, records: list[ArtifactRecord], sampler: str = "greedy") -> GenerationSection:
    return GenerationSection(
        spec=decoding.spec,
        artifacts=records,
        sampler=sampler,
        generate_inputs=[MAX_NEW_TOKENS, EOS_ID],
        notes=[
            "prefill = decoder_with_past with past_sequence 0 (empty past_key_values.*)",
            "padding_mask covers past + new tokens; positions are cumsum(padding_mask) - 1 per row",
            f"generate: {sampler}; eos_id -1 never stops; finished rows continue with eos_id",
        ],
    )


def step_profiles(g, batch, seq, encoder: bool = False) -> list[dict]:
    """TensorRT optimisation profiles of the generation graphs for one (batch, sequence) range pair.

    The decode step gets two: ``prefill`` (past_sequence 0, a prompt of ``seq`` tokens) and ``decode``
    (one new token over a past of 1 .. seq.max - 1); padding_mask spans past + new in both. The seq2seq
    source (encoder input, cross-attention cache) takes ``seq`` in each. The encoder gets one.
    """

    def dims(**by_axis):
        def one(t, k):
            return [d if d is not None else by_axis[a][k] for d, a in zip(t.shape, t.axes)]

        return lambda tensors: {t.name: {k: one(t, i) for i, k in enumerate(("min", "opt", "max"))} for t in tensors}

    b = batch.as_list()
    src = seq.as_list()
    if encoder:
        return [{"name": "encoder", "shapes": dims(batch=b, source_sequence=src)(g.encoder_inputs())}]
    tensors = g.step_inputs(with_past=True)
    longest = seq.max - 1
    past = [1, min(max(seq.opt, 1), longest), longest]
    prefill = dims(batch=b, sequence=src, total_sequence=src, past_sequence=[0, 0, 0], source_sequence=src)
    decode = dims(batch=b, sequence=[1, 1, 1], total_sequence=[p + 1 for p in past], past_sequence=past,
                  source_sequence=src)  # fmt: skip
    return [{"name": "prefill", "shapes": prefill(tensors)}, {"name": "decode", "shapes": decode(tensors)}]


def write_tensorrt(stage: Path, manifest, precisions, trt: dict, cache, say) -> None:
    """TensorRT plans of ``decoder_with_past`` (and ``encoder``) for each precision a plan is built in,
    recorded in the manifest's generation section. Running them needs an NVIDIA GPU."""
    from ..core.names import PLAN_PRECISIONS
    from ..exporters.tensorrt import write_plan
    from ..tracing.decode import step_export_spec

    section = manifest.generation
    g = section.spec
    for item in [r for r in list(section.artifacts) if r.format == "onnx" and r.precision in PLAN_PRECISIONS]:
        if item.precision not in precisions:
            continue
        encoder = item.role == ROLE_ENCODER
        profiles = [p for batch, seq in trt["profiles"] for p in step_profiles(g, batch, seq, encoder)]
        section.replace(
            write_plan(
                stage, stage / item.path, artifact_file(item.role, item.precision, "plan"),
                step_export_spec(g, item.role, encoder), item.precision, trt, cache, say, role=item.role,
                explicit=profiles,
            )
        )  # fmt: skip
