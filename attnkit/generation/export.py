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

from ..exporters.manifest import ArtifactRecord


def file_name(role: str, precision: str) -> str:
    return f"{role}.onnx" if precision == "fp32" else f"{role}.{precision}.onnx"


def savedmodel_endpoints(decoding) -> dict:
    """The extra signatures of the fp32 SavedModel (see module docstring)."""
    from .tracing import trace_encode, trace_generate, trace_step

    fns = {
        "prefill": trace_step(decoding, with_past=False),
        "decode_step": trace_step(decoding, with_past=True),
        "generate": trace_generate(decoding),
    }
    if decoding.spec.seq2seq:
        fns["encode"] = trace_encode(decoding)
    return fns


def record(stage: Path, role: str, fmt: str, rel: str, precision: str, **extra) -> dict:
    from dataclasses import asdict

    return {"role": role, **asdict(ArtifactRecord.of(stage, fmt, rel, precision, **extra))}


def write_onnx(stage: Path, decoding, precisions, target, per_channel: bool, fuse: bool, opset: int, say) -> list[dict]:
    """Convert, fuse and lower the decode step (and the seq2seq encoder); returns their records."""
    from ..exporters.onnx import convert
    from ..exporters.passes import fuse_layernorm
    from ..exporters.precision import write_lowered
    from .tracing import step_export_spec, trace_encode, trace_step

    g = decoding.spec
    graphs = [("decoder_with_past", trace_step(decoding, with_past=True), step_export_spec(g, "decoder_with_past"))]
    if g.seq2seq:
        graphs.append(("encoder", trace_encode(decoding), step_export_spec(g, "encoder", encoder=True)))
    records = []
    for role, fn, spec in graphs:
        say(f"exporting {role}.onnx (opset {opset})")
        fp32 = convert(fn, spec, opset)
        if fuse:
            fp32, _ = fuse_layernorm(fp32)
        for precision, rel, extra in write_lowered(
            fp32, precisions, stage, lambda p, role=role: file_name(role, p), opset, per_channel, target
        ):
            records.append(record(stage, role, "onnx", rel, precision, **extra))
    return records


def section(decoding, records: list[dict]) -> dict:
    from .tracing import EOS_ID, MAX_NEW_TOKENS

    return {
        "spec": decoding.spec.to_dict(),
        "artifacts": records,
        "generate_inputs": [MAX_NEW_TOKENS, EOS_ID],
        "notes": [
            "prefill = decoder_with_past with past_sequence 0 (empty past_key_values.*)",
            "padding_mask covers past + new tokens; positions are cumsum(padding_mask) - 1 per row",
            "generate: greedy; eos_id -1 never stops; finished rows continue with eos_id",
        ],
    }


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
    import json

    from ..exporters.manifest import write_bytes_atomic, write_text_atomic
    from ..exporters.tensorrt import PLAN_PRECISIONS, build_plan
    from .spec import GenerationSpec
    from .tracing import step_export_spec

    g = GenerationSpec.from_dict(manifest.generation["spec"])
    records = manifest.generation["artifacts"]
    for item in [r for r in list(records) if r["format"] == "onnx" and r["precision"] in PLAN_PRECISIONS]:
        role, precision = item["role"], item["precision"]
        if precision not in precisions:
            continue
        encoder = role == "encoder"
        profiles = [p for batch, seq in trt["profiles"] for p in step_profiles(g, batch, seq, encoder)]
        name = f"{role}.plan" if precision == "fp32" else f"{role}.{precision}.plan"
        say(f"building {name} with {trt['flavour'].name} {trt['flavour'].version} for {trt['target']}")
        plan, sidecar = build_plan(
            stage / item["path"], step_export_spec(g, role, encoder), precision, [], trt["target"],
            cache or stage / "trt_timing.cache", trt["flavour"], explicit=profiles,
        )  # fmt: skip
        write_bytes_atomic(stage / name, plan)
        write_text_atomic(stage / f"{name}.json", json.dumps(sidecar, indent=2))
        records[:] = [r for r in records if r["path"] != name]
        keys = ("flavour", "version", "target", "runs_on", "build_seconds")
        records.append(
            record(stage, role, "tensorrt", name, precision, sidecar=f"{name}.json",
                   profiles=[p["name"] for p in profiles], **{k: sidecar[k] for k in keys})
        )  # fmt: skip
