"""``openvino-genai``: OpenVINO GenAI's ``LLMPipeline`` driving the stateful decoder in its own layout
(``openvino_genai/``, :func:`attnkit.exporters.openvino.write_genai`) — a real consumer of the artifact, as
a CPU LLM service built on OpenVINO runs it (its own loop, cache, search and stopping rule).

Compiled as attnkit's OpenVINO runners compile: f32 inference and cache, dynamic quantisation off (int8 is
weight-only; bf16, where the export has it, asks bf16 of both, as OpenVINO runs by default on a CPU with bf16
instructions, and reports what the plugin takes), ``ATTENTION_BACKEND: SDPA``: the stateful model as written (GenAI's default on CPU is its
paged-attention rewrite, which the ``openvino-genai-cb`` backend runs where the export recorded that it takes
the model). No tokenizer: prompts go in as ``TokenizedInputs``. Greedy; ``eos_id`` -1 asks GenAI to
ignore its end token.

Batches: a ragged batch goes in whole, left-padded as GenAI pads (attnkit pads on the right), for attnkit's
decoders, whose ``position_ids`` GenAI computes from the mask, padding taking none, as the step did (tokens
identical to each row alone; decoder-small at batch 4: 838.8 tok/s against 314.8 one length at a time, two
bench-generate runs, BENCHMARKS.md); keras-hub steps take positions from the cache slot, so their prompts
run one length at a time (:func:`attnkit.runtimes.base.by_prompt_length`).
"""

from __future__ import annotations

import numpy as np

from ..core.names import LENGTHS, OPENVINO_HINTS, OUTPUT_IDS, ROLE_DECODER_GENAI
from ..core.sampling import sequence_lengths
from ..exporters.openvino import cache_hint, compile_with_fallback
from .base import GenerateRunner, by_prompt_length, register, token_array


def left_padded(ids: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """attnkit's right-padded prompts moved to the right edge (GenAI appends each new token after the last
    column, so every row's tokens must end there)."""
    out_ids, out_mask = np.zeros_like(ids), np.zeros_like(mask)
    width = ids.shape[1]
    for b, n in enumerate(mask.sum(axis=1)):
        out_ids[b, width - n :], out_mask[b, width - n :] = ids[b, mask[b] == 1], 1
    return out_ids, out_mask


@register
class OpenVINOGenAIGenerate(GenerateRunner):
    name = "openvino-genai"
    needs = "openvino"
    role = ROLE_DECODER_GENAI
    precisions = ("fp32", "bf16", "fp16", "int8")
    not_for = {
        "forward": "openvino-genai runs generation only (the forward pass: openvino)",
        "decode_step": "openvino-genai runs its own loop (the generate task); the step: openvino, openvino-stateful",
    }

    @classmethod
    def unavailable_reason(cls) -> str | None:
        try:
            import openvino_genai  # noqa: F401
        except ImportError:
            return "openvino-genai is not installed (pip install 'attnkit[openvino]')"
        return None

    @classmethod
    def inapplicable(cls, source) -> str | None:
        section = source.generation
        if section.spec.seq2seq:
            return "OpenVINO GenAI's LLMPipeline runs decoder-only models"
        if section.artifact(ROLE_DECODER_GENAI, "openvino", "fp32") is None:
            return "the export has no openvino_genai/ (re-export with --generate --format openvino)"
        return None

    def _layout(self) -> tuple[str, dict]:
        """The GenAI directory of this precision and the properties every GenAI pipeline here compiles it with
        (f32 inference and cache, no dynamic quantisation); sets ``self.eos`` from its record."""
        import openvino_genai as og

        record = self.source.generation.artifact(ROLE_DECODER_GENAI, "openvino", self.precision)
        # the record's inference precision (a weight-only fp16 step: f32), else the precision's own hint
        hint = record.extra.get("inference_precision") or OPENVINO_HINTS[self.precision]
        cache = cache_hint(self.precision, hint)
        config = {"INFERENCE_PRECISION_HINT": hint, "KV_CACHE_PRECISION": cache, "DYNAMIC_QUANTIZATION_GROUP_SIZE": 0}
        if self.threads:
            config["INFERENCE_NUM_THREADS"] = int(self.threads)
        self._og = og
        self.eos = int(record.extra.get("eos_token_id", 0))
        if self.precision == "bf16":
            # GenAI keeps its compiled model to itself: what the plugin computes a bf16 hint in here is asked of
            # it with the same hint (core.machine.openvino_compiles), so a CPU without bf16 says f32, not bf16
            from ..core.machine import openvino_compiles

            self.ran_as = openvino_compiles(self.precision) or self.precision
        return str(self.source.root / record.path), config

    def _load(self):
        path, config = self._layout()
        self.pipe, _ = compile_with_fallback(
            lambda c: self._og.LLMPipeline(path, "CPU", ATTENTION_BACKEND="SDPA", **c), config
        )

    def _run(self, ids: np.ndarray, mask: np.ndarray, max_new_tokens: int, eos_id: int) -> list[np.ndarray]:
        """GenAI's greedy loop on one batch (``mask``: 1 = token); the new tokens of each row (up to its stop)."""
        import openvino as ov

        inputs = self._og.TokenizedInputs(ov.Tensor(ids.astype("int64")), ov.Tensor(mask.astype("int64")))
        return [np.asarray(t, "int64") for t in self.pipe.generate(inputs, self._greedy(max_new_tokens, eos_id)).tokens]

    def _greedy(self, max_new_tokens: int, eos_id: int):
        """GenAI's greedy GenerationConfig; ``eos_id`` -1: run to ``max_new_tokens`` (GenAI still needs an end
        token inside the vocabulary: the export's)."""
        config = self._og.GenerationConfig()
        config.max_new_tokens = max_new_tokens
        config.do_sample = False
        config.eos_token_id = eos_id if eos_id >= 0 else self.eos
        config.ignore_eos = eos_id < 0
        return config

    def _generate(self, feeds, max_new_tokens, eos_id):
        g = self.gspec
        ids, mask = np.asarray(feeds[g.ids]), np.asarray(feeds[g.mask])
        tokens = token_array(self._rows(ids, mask, max_new_tokens, eos_id), max_new_tokens, eos_id)
        return {OUTPUT_IDS: tokens, LENGTHS: sequence_lengths(tokens, eos_id)}

    def _rows(self, ids: np.ndarray, mask: np.ndarray, max_new_tokens: int, eos_id: int):
        """Each row's new tokens from GenAI (``mask``: attnkit's right padding, 1 = token)."""
        if self.gspec.slot:  # positions by cache slot: GenAI's padding would shift them; one prompt length per call
            return by_prompt_length(ids, mask, max_new_tokens, eos_id,
                                    lambda rows: self._run(rows, np.ones_like(rows), max_new_tokens, eos_id))  # fmt: skip
        # positions from the mask: the batch goes in whole, left-padded as GenAI pads (tokens identical)
        return self._run(*left_padded(ids, mask), max_new_tokens, eos_id)

    def _close(self):
        self.pipe = None
