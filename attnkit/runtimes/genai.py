"""``onnxruntime-genai``: ONNX Runtime's generation library driving ``decoder_with_past*.onnx`` through the
``genai_config.json`` export writes (:mod:`attnkit.exporters.genai`) — a real consumer of the artifact, as a
CPU LLM server runs it (its own KV-cache handling, search and stopping rule).

Each precision is the same config with ``model.decoder.filename`` overlaid (``Config.overlay``), and the
request's ``eos_id`` overlaid as ``eos_token_id`` (genai needs one inside the vocabulary; with ``eos_id``
-1 the config's is kept, and a row genai stopped on it is compared up to that stop: the tokens it did not
produce are -1).

Batches: prompts of one length run as one genai batch; a ragged batch runs one length group at a time
(genai 0.18 gives a left-padded batch an all-ones ``attention_mask``, so it cannot be handed over padded).
"""

from __future__ import annotations

import json

import numpy as np

from ..core.names import LENGTHS, OUTPUT_IDS, ROLE_DECODER_WITH_PAST
from ..core.sampling import sequence_lengths
from .base import GenerateRunner, by_prompt_length, register


@register
class GenAIGenerate(GenerateRunner):
    name = "onnxruntime-genai"
    needs = "onnx"
    role = ROLE_DECODER_WITH_PAST
    precisions = ("fp32", "fp16", "int8", "q8", "q4")
    not_for = {
        "forward": "onnxruntime-genai runs generation only (the forward pass: onnxruntime)",
        "decode_step": "onnxruntime-genai runs its own loop (the generate task); the step graph: onnxruntime",
    }

    @classmethod
    def unavailable_reason(cls) -> str | None:
        try:
            import onnxruntime_genai  # noqa: F401
        except ImportError:
            return "onnxruntime-genai is not installed (pip install 'attnkit[genai]')"
        return None

    @classmethod
    def inapplicable(cls, source) -> str | None:
        section = source.generation
        if section.spec.seq2seq:
            return "onnxruntime-genai runs decoder-only exports here (its encoder-decoder pipeline is Whisper's)"
        if not section.has("genai"):
            return "the export has no genai_config.json (re-export with --generate)"
        return None

    def _load(self):
        import onnxruntime_genai as og

        from ..exporters import genai

        g = self.gspec
        record = self.source.generation.artifact(ROLE_DECODER_WITH_PAST, "onnx", self.precision)
        fp32 = self.source.generation.artifact(ROLE_DECODER_WITH_PAST, "onnx", "fp32")
        self.config = genai.check(self.source.root, g, fp32.path)
        self._og = og
        self._models = {}
        self._overlay = {"model": {"decoder": {"filename": record.path}}}
        if self.threads:
            self._overlay["model"]["decoder"]["session_options"] = {"intra_op_num_threads": int(self.threads)}

    def _model(self, eos_id: int):
        eos = eos_id if eos_id >= 0 else self.config["model"]["eos_token_id"]
        if eos not in self._models:
            config = self._og.Config(str(self.source.root))
            config.overlay(json.dumps({"model": {**self._overlay["model"], "eos_token_id": int(eos)}}))
            self._models[eos] = self._og.Model(config)
        return self._models[eos], eos

    def _run(self, model, rows: np.ndarray, max_new_tokens: int) -> list[np.ndarray]:
        """genai's greedy loop on a batch of equal-length prompts; the new tokens of each row (up to its stop)."""
        og = self._og
        params = og.GeneratorParams(model)
        params.set_search_options(max_length=rows.shape[1] + max_new_tokens, do_sample=False, batch_size=len(rows))
        gen = og.Generator(model, params)
        gen.append_tokens(rows.astype("int32"))
        while not gen.is_done():
            gen.generate_next_token()
        return [np.asarray(gen.get_sequence(b))[rows.shape[1] :] for b in range(len(rows))]

    def _generate(self, feeds, max_new_tokens, eos_id):
        g = self.gspec
        model, eos = self._model(eos_id)
        # with eos_id -1 (never stop) genai still stops on its config's eos_token_id: the tokens it did not
        # produce are -1, which the verification does not compare (see generation.verify._compare_steps)
        tokens = by_prompt_length(np.asarray(feeds[g.ids]), np.asarray(feeds[g.mask]), max_new_tokens,
                                  eos if eos_id >= 0 else -1, lambda rows: self._run(model, rows, max_new_tokens))  # fmt: skip
        return {OUTPUT_IDS: tokens, LENGTHS: sequence_lengths(tokens, eos)}

    def _close(self):
        self._models = {}
