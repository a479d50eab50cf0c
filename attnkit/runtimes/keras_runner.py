"""``keras``: the eager Keras model, the reference every artifact is compared with."""

from __future__ import annotations

import numpy as np

from .base import Runner, StepRunner, register


@register
class KerasRunner(Runner):
    name = "keras"
    needs = "keras"
    bench_default = True
    precisions = ("fp32", "bf16", "fp16")

    def _load(self) -> None:
        from ..tracing import with_policy

        self.model = with_policy(self.source.keras_model, self.precision)

    def _infer(self, feeds):
        from ..tracing import call_model

        out = call_model(self.model, self.source.spec, feeds)
        return {k: np.asarray(v) for k, v in out.items()}

    def _close(self) -> None:
        self.model = None


@register
class KerasStep(StepRunner):
    """The Keras model's layers called eagerly with their cache arguments (``keras`` with a KV cache)."""

    name = "keras"
    needs = "keras"

    def _load(self):
        from ..models.keras_hub import decoding_for

        self.decoding = decoding_for(self.source.keras_model)

    def _encode(self, feeds):
        g = self.gspec
        out = {}
        for i, (k, v) in enumerate(self.decoding.encode(feeds[g.encoder_ids], feeds[g.encoder_mask])):
            out[g.cross(i)[0]], out[g.cross(i)[1]] = np.asarray(k), np.asarray(v)
        return out

    def _run(self, feeds, with_past):
        from ..tracing.decode import step_outputs

        g = self.gspec
        past = [(feeds[k], feeds[v]) for k, v in map(g.past, range(g.num_layers))] if with_past else None
        cross = [(feeds[k], feeds[v]) for k, v in map(g.cross, range(g.num_layers))] if g.seq2seq else None
        logits, presents = self.decoding.step(feeds[g.ids], feeds.get(g.mask), past, cross, feeds.get(g.encoder_mask))
        return {k: np.asarray(v) for k, v in step_outputs(g, logits, presents).items()}

    def _prefill(self, feeds):
        return self._run(feeds, False)

    def _decode(self, feeds):
        return self._run(feeds, True)

    def _close(self):
        self.decoding = None
