"""GenerationSpec: the interface of the exported decode step (names, dtypes, dynamic axes of the KV cache).

It plays for generation what :class:`attnkit.core.spec.ExportSpec` plays for the full forward pass: export
writes it into the manifest (``generation.spec``), and verify, bench and packaging read it back.

Naming follows optimum's ``*-with-past`` exports, which users of ONNX Runtime already know:
``past_key_values.{i}.key`` / ``.value`` in, ``present.{i}.key`` / ``.value`` out, one pair per decoder
layer, each (batch, heads, past_sequence, depth). For seq2seq the cross-attention keys/values of the
encoder output are computed once by the encoder graph (``cross_key_values.{i}.key`` / ``.value``) and fed
to every step unchanged.

Padding: ``padding_mask`` of a step covers past + new tokens (1 = token, 0 = padding), as optimum's
``attention_mask``. Each token's position is ``cumsum(padding_mask) - 1`` of its row, so a batch of
prompts of different lengths (padded on either side) decodes in lock-step and every row gives the tokens
it gives alone.

``positions="slot"`` (keras-hub's ``call_with_cache``, :mod:`attnkit.models.keras_hub`): a token's position
is its cache slot, the same for every row, and the step graphs take no ``padding_mask``. Prompts are padded
on the right and fed slot by slot from the shortest one, each row keeping its prompt tokens until its prompt
ends (keras-hub's ``generate()``), so every slot a row attends to holds one of its own tokens.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from .errors import ArtifactError, AttnkitError
from .spec import TensorSpec

FAMILIES = ("decoder", "seq2seq")
POSITIONS = ("mask", "slot")


@dataclass(frozen=True)
class GenerationSpec:
    family: str  # "decoder" | "seq2seq"
    num_layers: int
    num_heads: int
    depth: int
    vocab_size: int
    max_length: int
    d_model: int
    ids: str = "token_ids"  # the decoder's token input of the full model
    mask: str = "padding_mask"
    encoder_ids: str = "encoder_token_ids"
    encoder_mask: str = "encoder_padding_mask"
    positions: str = "mask"  # "mask": cumsum(padding_mask) - 1 per row; "slot": the cache slot (keras-hub)
    position_ids: str | None = None  # the full model's positions input, if it has one (keras-hub Gemma 4): 0..n-1

    @property
    def seq2seq(self) -> bool:
        return self.family == "seq2seq"

    @property
    def slot(self) -> bool:
        """Positions by cache slot: no padding mask in the step graphs; prompts fed slot by slot."""
        return self.positions == "slot"

    @staticmethod
    def past(i: int) -> tuple[str, str]:
        return f"past_key_values.{i}.key", f"past_key_values.{i}.value"

    @staticmethod
    def present(i: int) -> tuple[str, str]:
        return f"present.{i}.key", f"present.{i}.value"

    @staticmethod
    def cross(i: int) -> tuple[str, str]:
        return f"cross_key_values.{i}.key", f"cross_key_values.{i}.value"

    def _kv(self, names, axis: str) -> tuple[TensorSpec, ...]:
        shape = (None, self.num_heads, None, self.depth)
        return tuple(
            TensorSpec(n, "float32", shape, ("batch", None, axis, None))
            for i in range(self.num_layers)
            for n in names(i)
        )

    def prompt_inputs(self) -> tuple[TensorSpec, TensorSpec]:
        """The prompt's token ids and padding mask (inputs of ``generate``; of every step unless ``slot``)."""
        ids = TensorSpec(self.ids, "int32", (None, None), ("batch", "sequence"), "tokens", self.vocab_size)
        mask = TensorSpec(self.mask, "int32", (None, None), ("batch", "total_sequence"), "padding_mask")
        return ids, mask

    def step_inputs(self, with_past: bool = True) -> tuple[TensorSpec, ...]:
        """Inputs of the decode step (``with_past``) or of the prefill (no cache inputs)."""
        ids, mask = self.prompt_inputs()
        out = (ids,) if self.slot else (ids, mask)
        if self.seq2seq:
            enc_mask = TensorSpec(
                self.encoder_mask, "int32", (None, None), ("batch", "source_sequence"), "padding_mask"
            )
            out += (enc_mask,) + self._kv(self.cross, "source_sequence")
        return out + (self._kv(self.past, "past_sequence") if with_past else ())

    def step_outputs(self) -> tuple[TensorSpec, ...]:
        logits = TensorSpec("logits", "float32", (None, None, self.vocab_size), ("batch", "sequence", None))
        return (logits,) + self._kv(self.present, "total_sequence")

    def encoder_inputs(self) -> tuple[TensorSpec, ...]:
        axes = ("batch", "source_sequence")
        return (
            TensorSpec(self.encoder_ids, "int32", (None, None), axes, "tokens", self.vocab_size),
            TensorSpec(self.encoder_mask, "int32", (None, None), axes, "padding_mask"),
        )

    def encoder_outputs(self) -> tuple[TensorSpec, ...]:
        return self._kv(self.cross, "source_sequence")

    def past_names(self) -> list[str]:
        return [n for i in range(self.num_layers) for n in self.past(i)]

    def present_names(self) -> list[str]:
        return [n for i in range(self.num_layers) for n in self.present(i)]

    def past_from_present(self) -> dict[str, str]:
        """``past input -> present output`` names: each step's ``present.*`` is the next step's past."""
        return dict(zip(self.past_names(), self.present_names()))

    def cross_names(self) -> list[str]:
        return [n for i in range(self.num_layers) for n in self.cross(i)]

    def cache_bytes_per_token(self, dtype_bytes: int = 4) -> int:
        """Self-attention cache of one token of one sequence (keys + values, every layer)."""
        return 2 * self.num_layers * self.num_heads * self.depth * dtype_bytes

    def check_request(self, prompt_length: int, max_new_tokens: int, source_length: int | None = None) -> None:
        """One-line errors for a request the model cannot serve (every loop and runner asks here).

        Raises:
            AttnkitError: ``max_new_tokens`` < 1, or prompt + new tokens (or the source) beyond the model's
                maximum length. The error names the parameter; the CLI shows it as its flag.
        """
        if int(max_new_tokens) < 1:
            raise AttnkitError(f"must be >= 1; got {max_new_tokens}.", flag="--max-new-tokens")
        if int(prompt_length) + int(max_new_tokens) > self.max_length:
            raise AttnkitError(
                f"a prompt of {prompt_length} tokens + {max_new_tokens} new tokens exceeds the model's maximum "
                f"length {self.max_length}.",
                flag="--max-prompt-length",
                hint=f"Keep prompt length + --max-new-tokens <= {self.max_length}.",
            )
        if self.seq2seq and source_length is not None and source_length > self.max_length:
            raise AttnkitError(
                f"a source of {source_length} tokens exceeds the model's maximum length {self.max_length}.",
                flag="--max-prompt-length",
            )

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> GenerationSpec:
        try:
            spec = cls(**d)
        except TypeError as e:
            raise ArtifactError(f"the manifest's generation spec is not valid ({e}).", flag="DIR") from None
        if spec.positions not in POSITIONS:
            raise ArtifactError(
                f"the manifest's generation positions {spec.positions!r} is not one of {POSITIONS}.", flag="DIR"
            )
        if spec.family not in FAMILIES:
            raise ArtifactError(
                f"the manifest's generation family {spec.family!r} is not one of {FAMILIES}.", flag="DIR"
            )
        return spec
