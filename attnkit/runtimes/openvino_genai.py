"""``openvino-genai``: OpenVINO GenAI's ``LLMPipeline`` driving the stateful decoder in its own layout
(``openvino_genai/``, :func:`attnkit.exporters.openvino.write_genai`) — a real consumer of the artifact, as
a CPU LLM service built on OpenVINO runs it (its own loop, cache, search and stopping rule).

Compiled as attnkit's OpenVINO runners compile: f32 inference and cache, dynamic quantisation off (int8 is
weight-only), ``ATTENTION_BACKEND: SDPA`` (the stateful model as written; GenAI's paged-attention rewrite
fails on these graphs and it falls back to the same, measured with GenAI 2026.4). No tokenizer: prompts go
in as ``TokenizedInputs``. Greedy; ``eos_id`` -1 asks GenAI to ignore its end token.

Batches: prompts of one length run as one GenAI batch; a ragged batch (attnkit pads on the right, GenAI
expects left padding) runs one length group at a time, as for onnxruntime-genai.
"""

from __future__ import annotations

import numpy as np

from ..names import LENGTHS, OUTPUT_IDS, ROLE_DECODER_GENAI
from ..sampling import sequence_lengths
from .base import GenerateRunner, register
from .openvino import HINTS


@register
class OpenVINOGenAIGenerate(GenerateRunner):
    name = "openvino-genai"
    needs = "openvino"
    role = ROLE_DECODER_GENAI
    precisions = ("fp32", "int8")
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

    def _load(self):
        import openvino_genai as og

        record = self.source.generation.artifact(ROLE_DECODER_GENAI, "openvino", self.precision)
        hint = HINTS[self.precision]
        config = {"INFERENCE_PRECISION_HINT": hint, "KV_CACHE_PRECISION": hint, "DYNAMIC_QUANTIZATION_GROUP_SIZE": 0}
        if self.threads:
            config["INFERENCE_NUM_THREADS"] = int(self.threads)
        self._og = og
        self.eos = int(record.extra.get("eos_token_id", 0))
        self.pipe = og.LLMPipeline(str(self.source.root / record.path), "CPU", ATTENTION_BACKEND="SDPA", **config)

    def _run(self, rows: np.ndarray, max_new_tokens: int, eos_id: int) -> list[np.ndarray]:
        """GenAI's greedy loop on a batch of equal-length prompts; the new tokens of each row (up to its stop)."""
        import openvino as ov

        og = self._og
        config = og.GenerationConfig()
        config.max_new_tokens = max_new_tokens
        config.do_sample = False
        config.eos_token_id = eos_id if eos_id >= 0 else self.eos
        config.ignore_eos = eos_id < 0
        ids = rows.astype("int64")
        result = self.pipe.generate(og.TokenizedInputs(ov.Tensor(ids), ov.Tensor(np.ones_like(ids))), config)
        return [np.asarray(t, "int64") for t in result.tokens]

    def _generate(self, feeds, max_new_tokens, eos_id):
        g = self.gspec
        ids, mask = np.asarray(feeds[g.ids]), np.asarray(feeds[g.mask])
        lengths = mask.sum(axis=1)
        new: list = [None] * len(ids)
        for n in sorted(set(lengths.tolist())):
            group = np.flatnonzero(lengths == n)
            rows = np.stack([ids[b, mask[b] == 1] for b in group])
            for b, row in zip(group, self._run(rows, max_new_tokens, eos_id)):
                new[b] = row[:max_new_tokens]
        tokens = np.full((len(ids), max_new_tokens), eos_id, "int32")  # after a stop: eos, as every runner pads
        for b, row in enumerate(new):
            tokens[b, : len(row)] = row
        return {OUTPUT_IDS: tokens, LENGTHS: sequence_lengths(tokens, eos_id)}

    def _close(self):
        self.pipe = None
