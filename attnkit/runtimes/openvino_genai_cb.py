"""``openvino-genai-cb``: OpenVINO GenAI's ``ContinuousBatchingPipeline`` on the GenAI layout
(``openvino_genai/``) — the engine OpenVINO Model Server serves LLMs with: GenAI rewrites the stateful
model's attention into paged attention (``SDPAToPagedAttention``), keeps the KV cache in its own blocks and
schedules every request's tokens together, each prompt unpadded.

Only where the export recorded that the rewrite takes the model (``paged_attention`` in the GenAI record,
checked at export by :func:`attnkit.exporters.openvino.takes_paged_attention`, then by this pipeline's tokens
against the model's own decode): attnkit's decoders and keras-hub's, whose stateful IRs take ``position_ids``
(:mod:`attnkit.exporters.openvino_positions`) and give each layer's sliding window in the form the rewrite reads
(:mod:`attnkit.exporters.openvino_window`), except ALiBi models (Falcon, Bloom); the refusal says why. This
pipeline has no SDPA fallback, unlike ``LLMPipeline`` (the ``openvino-genai`` backend, which this module shares
loading rules with). Compiled as attnkit's other OpenVINO runners: f32 inference and cache, dynamic quantisation
off (int8 is weight-only). Greedy; each row of a batch is one request.
"""

from __future__ import annotations

from ..core.names import ROLE_DECODER_GENAI
from ..exporters.openvino import compile_with_fallback
from .base import register
from .openvino_genai import OpenVINOGenAIGenerate


@register
class OpenVINOContinuousBatching(OpenVINOGenAIGenerate):
    name = "openvino-genai-cb"
    not_for = {
        "forward": "openvino-genai-cb runs generation only (the forward pass: openvino)",
        "decode_step": "openvino-genai-cb runs its own scheduler (the generate task); the step: openvino-stateful",
    }

    @classmethod
    def inapplicable(cls, source) -> str | None:
        reason = super().inapplicable(source)
        if reason:
            return reason
        extra = source.generation.artifact(ROLE_DECODER_GENAI, "openvino", "fp32").extra
        if not extra.get("paged_attention"):
            why = extra.get("paged_attention_refused", "exported before attnkit checked it")
            return f"OpenVINO's paged-attention rewrite does not take this model ({why}); run it with openvino-genai"
        return None

    def _load(self):
        path, config = self._layout()
        # SchedulerConfig's defaults: the CPU grows the block cache as requests need it (cache_size 0)
        self.pipe, _ = compile_with_fallback(
            lambda c: self._og.ContinuousBatchingPipeline(path, self._og.SchedulerConfig(), "CPU", c), config
        )

    def _rows(self, ids, mask, max_new_tokens, eos_id):
        """Each row one request, its padding removed; GenAI schedules them together."""
        import openvino as ov

        prompts = [ov.Tensor(ids[b, mask[b] == 1][None, :].astype("int64")) for b in range(len(ids))]
        results = self.pipe.generate(prompts, [self._greedy(max_new_tokens, eos_id)] * len(prompts))
        return [result.m_generation_ids[0] for result in results]

    def serve(self, prompts: list, arrivals, max_new_tokens: int, eos_id: int = -1, clock=None, sleep=None) -> list:
        """Serve requests as they arrive, as OpenVINO Model Server drives this pipeline: request ``i`` (its prompt
        ids, unpadded) is added when ``arrivals[i]`` seconds have passed, and every ``step()`` advances every
        request added so far by one token. Returns per request ``(first_token_s, done_s, tokens)``, times from
        the start, when its first token could be read and when it finished."""
        import time

        import numpy as np
        import openvino as ov

        clock, sleep = clock or time.perf_counter, sleep or time.sleep
        config = self._greedy(max_new_tokens, eos_id)
        served: list = [[None, None, []] for _ in prompts]
        handles: dict = {}
        start, i = clock(), 0
        while i < len(prompts) or handles:
            now = clock() - start
            while i < len(prompts) and arrivals[i] <= now:
                ids = ov.Tensor(np.asarray(prompts[i], "int64")[None, :])
                handles[i] = self.pipe.add_request(i, ids, config)
                i += 1
            if not handles:  # idle until the next request arrives
                sleep(max(0.0, arrivals[i] - now))
                continue
            self.pipe.step()
            now = clock() - start
            for r, handle in list(handles.items()):
                if handle.can_read():
                    new = [t for out in handle.read().values() for t in out.generated_ids]
                    if new and served[r][0] is None:
                        served[r][0] = now
                    served[r][2] += new
                if handle.get_status() != self._og.GenerationStatus.RUNNING and not handle.can_read():
                    served[r][1] = now
                    del handles[r]
        return [(first, done, tokens[:max_new_tokens]) for first, done, tokens in served]
