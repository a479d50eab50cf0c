"""``genai_config.json``: what onnxruntime-genai needs to run a decoder-only ``decoder_with_past*.onnx``.

onnxruntime-genai (``onnxruntime_genai.Model(DIR)``) reads ``DIR/genai_config.json`` and the decoder graph it
names; its model builder writes both for Hugging Face checkpoints, but for a graph of its own a user writes
the config (https://onnxruntime.ai/docs/genai/reference/config.html). attnkit's step graph already has the
interface genai drives (``past_key_values.%d.*`` in, ``present.%d.*`` out, logits over the new tokens), so
the config is the whole adaptation: ``type: "llama"`` (genai's generic decoder-only pipeline), the names
mapped, ``past_present_share_buffer: false`` (the cache grows by concatenation, as in the step graph).

- ``attention_mask`` maps to ``padding_mask`` for attnkit's own decoders; keras-hub models' steps take no
  mask (slot positions, :mod:`attnkit.core.genspec`). Either way give genai unpadded prompts of one length per
  batch: genai 0.18 feeds a left-padded batch an all-ones mask (measured), so padding would be attended to.
- One config names the fp32 file; the other precisions are the same config with another
  ``model.decoder.filename`` (``onnxruntime_genai.Config.overlay``), as :mod:`attnkit.runtimes.genai` does.
- ``eos_token_id``: genai requires one inside the vocabulary; the keras-hub tokenizer's end token when the
  model has one, else 0 (attnkit's padding id). The file is hashed in the manifest; to stop on another
  token, overlay it at load (``Config.overlay('{"model": {"eos_token_id": N}}')``), as attnkit's runner does.
"""

from __future__ import annotations

import json
from pathlib import Path

from ..core.errors import ArtifactError
from ..core.genspec import GenerationSpec

CONFIG = "genai_config.json"


def genai_config(g: GenerationSpec, filename: str, eos_token_id: int = 0, bos_token_id: int = 0) -> dict:
    """The config dict for the step graph ``filename`` of spec ``g`` (decoder-only)."""
    inputs = {"input_ids": g.ids, "past_key_names": g.past(0)[0].replace(".0.", ".%d."),
              "past_value_names": g.past(0)[1].replace(".0.", ".%d.")}  # fmt: skip
    if not g.slot:
        inputs["attention_mask"] = g.mask
    return {
        "model": {
            "type": "llama",
            "bos_token_id": int(bos_token_id),
            "eos_token_id": int(eos_token_id),
            "pad_token_id": 0,
            "vocab_size": g.vocab_size,
            "context_length": g.max_length,
            "decoder": {
                "session_options": {"log_id": "attnkit", "provider_options": []},
                "filename": filename,
                "head_size": g.depth,
                "hidden_size": g.d_model,
                "num_attention_heads": g.num_heads,
                "num_key_value_heads": g.num_heads,
                "num_hidden_layers": g.num_layers,
                "inputs": inputs,
                "outputs": {
                    "logits": "logits",
                    "present_key_names": g.present(0)[0].replace(".0.", ".%d."),
                    "present_value_names": g.present(0)[1].replace(".0.", ".%d."),
                },
            },
        },
        "search": {"do_sample": False, "num_beams": 1, "max_length": g.max_length, "past_present_share_buffer": False},
    }


def end_token_id(keras_model) -> int:
    """The keras-hub tokenizer's end token, or 0 when the model carries no tokenizer."""
    tokenizer = getattr(getattr(keras_model, "preprocessor", None), "tokenizer", None)
    value = getattr(tokenizer, "end_token_id", None)
    return int(value) if isinstance(value, int) else 0


def write(stage: Path, g: GenerationSpec, filename: str, eos_token_id: int) -> str:
    """Write ``genai_config.json`` beside ``filename``; returns its path relative to ``stage``."""
    (stage / CONFIG).write_text(json.dumps(genai_config(g, filename, eos_token_id), indent=2) + "\n")
    return CONFIG


def check(root: Path, g: GenerationSpec, filename: str) -> dict:
    """The config, after checking it still describes ``filename`` and spec ``g`` (layers, heads, names).

    Raises:
        ArtifactError: missing, unreadable, or describing another graph (names DIR).
    """
    path = Path(root) / CONFIG
    try:
        config = json.loads(path.read_text())
        decoder = config["model"]["decoder"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ArtifactError(
            f"`{path}` is not an onnxruntime-genai config ({type(e).__name__}: {e}).", flag="DIR"
        ) from None
    want = genai_config(g, filename)["model"]["decoder"]
    keys = ("head_size", "num_attention_heads", "num_key_value_heads", "num_hidden_layers", "inputs", "outputs")
    wrong = [k for k in keys if decoder.get(k) != want[k]]
    if wrong:
        raise ArtifactError(
            f"`{path}` no longer matches the decoder graph ({', '.join(wrong)} differ from the export's).",
            flag="DIR",
            hint="Re-export with --generate, or restore the genai_config.json attnkit wrote.",
        )
    return config
