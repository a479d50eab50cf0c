"""Preset registry: name -> builder, ExportSpec and FLOPs per sequence.

A new preset is one `Preset(...)` entry. FLOPs count matmuls only (2 per multiply-add), the
convention of roofline analyses: for a 4-layer d=768 encoder at seq 128 this gives 59.6 GFLOP per
batch of 8, the figure STACK_FACTS.md quotes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..core.errors import ModelError
from ..core.spec import TARGET_AXIS, ExportSpec, ShapeRange, TensorSpec

DEFAULT_SEQ = 128


def _attention_flops(lq: int, lk: int, d: int) -> int:
    # q/o projections on lq, k/v projections on lk, scores and weighted sum.
    return 4 * lq * d * d + 4 * lk * d * d + 4 * lq * lk * d


def _ffn_flops(seq: int, d: int, f: int) -> int:
    return 4 * seq * d * f


def _attention_params(d: int) -> int:
    return 4 * (d * d + d)


def _block_params(d: int, f: int, cross: bool = False) -> int:
    norms = 2 * (2 * d) + (2 * d if cross else 0)
    ffn = d * f + f + f * d + d
    return _attention_params(d) * (2 if cross else 1) + norms + ffn


@dataclass(frozen=True)
class Preset:
    """A named model: config, builder and analytic size."""

    name: str
    family: str  # "mha" | "encoder" | "decoder" | "seq2seq"
    description: str
    config: dict[str, Any] = field(default_factory=dict)

    def build(self, seed: int = 0):
        """Build the Keras model with weights drawn from ``seed``."""
        import keras

        from . import transformer

        keras.utils.set_random_seed(seed)
        builders: dict[str, Callable] = {
            "mha": transformer.build_mha,
            "encoder": transformer.build_encoder,
            "decoder": transformer.build_decoder_lm,
            "seq2seq": transformer.build_seq2seq,
        }
        return builders[self.family](dict(self.config), name=self.name.replace("-", "_"))

    def flops(self, seq: int = DEFAULT_SEQ) -> int:
        """Matmul FLOPs of one sequence of length ``seq`` (source = target length for seq2seq)."""
        c = self.config
        d = c["d_model"]
        if self.family == "mha":
            return _attention_flops(seq, seq, d)
        layer = _attention_flops(seq, seq, d) + _ffn_flops(seq, d, c["ffn_dim"])
        if self.family == "encoder":
            return c["num_layers"] * layer
        lm_head = 2 * seq * d * c["vocab_size"]
        if self.family == "decoder":
            return c["num_layers"] * layer + lm_head
        decoder_layer = layer + _attention_flops(seq, seq, d)
        return c["encoder_layers"] * layer + c["decoder_layers"] * decoder_layer + lm_head

    def params(self) -> int:
        """Parameter count, analytic (checked against ``model.count_params()`` in the tests)."""
        c = self.config
        d = c["d_model"]
        if self.family == "mha":
            return _attention_params(d)
        final_norm = 2 * d if c.get("norm_first") else 0
        embed = c["vocab_size"] * d
        lm_head = d * c["vocab_size"] + c["vocab_size"]
        if self.family == "encoder":
            return embed + c["num_layers"] * _block_params(d, c["ffn_dim"]) + final_norm
        if self.family == "decoder":
            return embed + c["num_layers"] * _block_params(d, c["ffn_dim"]) + final_norm + lm_head
        enc = embed + c["encoder_layers"] * _block_params(d, c["ffn_dim"]) + final_norm
        dec = embed + c["decoder_layers"] * _block_params(d, c["ffn_dim"], cross=True) + final_norm
        return enc + dec + lm_head

    def spec(self) -> ExportSpec:
        """The ExportSpec of this preset's model (input/output names, dtypes, dynamic axes)."""
        c = self.config
        max_len = c.get("max_length", 512)
        seq_range = ShapeRange(min(16, max_len), min(128, max_len), max_len)
        bs = ("batch", "sequence")
        if self.family == "mha":
            x = TensorSpec("x", "float32", (None, None, c["d_model"]), bs + (None,))
            out = TensorSpec("output", "float32", (None, None, c["d_model"]), bs + (None,))
            return ExportSpec(self.name, (x,), (out,), sequence=seq_range, max_sequence=None)

        def tokens(prefix: str, axes):
            return (
                TensorSpec(f"{prefix}token_ids", "int32", (None, None), axes, "tokens", c["vocab_size"]),
                TensorSpec(f"{prefix}padding_mask", "int32", (None, None), axes, "padding_mask"),
            )

        if self.family == "encoder":
            inputs = tokens("", bs)
            outputs = (TensorSpec("hidden_states", "float32", (None, None, c["d_model"]), bs + (None,)),)
        elif self.family == "decoder":
            inputs = tokens("", bs)
            outputs = (TensorSpec("logits", "float32", (None, None, c["vocab_size"]), bs + (None,)),)
        else:
            target = ("batch", TARGET_AXIS)
            inputs = tokens("encoder_", bs) + tokens("decoder_", target)
            outputs = (TensorSpec("logits", "float32", (None, None, c["vocab_size"]), target + (None,)),)
        return ExportSpec(self.name, inputs, outputs, sequence=seq_range, max_sequence=max_len)


_BASE = {"dropout": 0.0, "norm_first": False, "attention": "classic"}

PRESETS: dict[str, Preset] = {
    p.name: p
    for p in (
        Preset(
            "mha",
            "mha",
            "one classic multi-head attention layer on float features",
            {"d_model": 512, "num_heads": 8, "attention": "classic"},
        ),
        Preset(
            "encoder-tiny",
            "encoder",
            "2-layer post-LN encoder, gelu (tests and demo)",
            {
                **_BASE,
                "vocab_size": 1024,
                "max_length": 512,
                "num_layers": 2,
                "d_model": 128,
                "num_heads": 4,
                "ffn_dim": 512,
                "activation": "gelu",
            },
        ),
        Preset(
            "encoder-base",
            "encoder",
            "BERT-base body: 12 layers, d=768, 12 heads, FFN 3072, gelu",
            {
                **_BASE,
                "vocab_size": 30522,
                "max_length": 512,
                "num_layers": 12,
                "d_model": 768,
                "num_heads": 12,
                "ffn_dim": 3072,
                "activation": "gelu",
            },
        ),
        Preset(
            "decoder-small",
            "decoder",
            "causal LM: 6 layers, d=512, 8 heads, FFN 2048, gelu",
            {
                **_BASE,
                "vocab_size": 8192,
                "max_length": 1024,
                "num_layers": 6,
                "d_model": 512,
                "num_heads": 8,
                "ffn_dim": 2048,
                "activation": "gelu",
            },
        ),
        Preset(
            "seq2seq-base",
            "seq2seq",
            "Transformer-base encoder-decoder: 6+6 layers, d=512, relu",
            {
                **_BASE,
                "vocab_size": 8192,
                "max_length": 512,
                "encoder_layers": 6,
                "decoder_layers": 6,
                "d_model": 512,
                "num_heads": 8,
                "ffn_dim": 2048,
                "activation": "relu",
            },
        ),
    )
}


def get_preset(name: str) -> Preset:
    """Look a preset up by name.

    Raises:
        ModelError: the name is unknown; the message lists the valid ones.
    """
    try:
        return PRESETS[name]
    except KeyError:
        raise ModelError(
            f"`{name}` is neither a preset nor a `.keras` file. Valid presets: {', '.join(PRESETS)}.",
            flag="MODEL",
        ) from None


def list_models(seq: int = 128) -> list[dict]:
    """One dict per preset: name, family, description, dims, parameters and FLOPs per sequence."""
    rows = []
    for p in PRESETS.values():
        c = p.config
        layers = c.get("num_layers") or (f"{c['encoder_layers']}+{c['decoder_layers']}" if "encoder_layers" in c else 1)
        rows.append(
            {
                "name": p.name,
                "family": p.family,
                "description": p.description,
                "layers": layers,
                "d_model": c["d_model"],
                "heads": c["num_heads"],
                "ffn": c.get("ffn_dim"),
                "params": p.params(),
                "flops_per_seq": p.flops(seq),
                "seq": seq,
            }
        )
    return rows
