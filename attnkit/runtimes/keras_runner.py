"""``keras``: the eager Keras model, the reference every artifact is compared with."""

from __future__ import annotations

import numpy as np

from ..core.names import LENGTHS, OUTPUT_IDS
from ..core.sampling import sequence_lengths
from .base import GenerateRunner, Runner, StepRunner, register


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


@register
class KerasHubGenerate(GenerateRunner):
    """keras-hub's own ``generate()`` with its greedy sampler (``keras/generate``), for keras-hub models: the
    reference a keras-hub user trusts, run as keras-hub runs it (its preallocated cache of the final length,
    its compiled loop), so bench measures that cache beside attnkit's ``past + new`` one."""

    name = "keras"
    needs = "keras"

    @classmethod
    def inapplicable(cls, source) -> str | None:
        return None if source.generation.spec.slot else "keras-hub's generate() runs keras-hub models only"

    def _load(self):
        from ..core.errors import BackendError

        self.model = self.source.keras_model
        if not callable(getattr(self.model, "generate", None)):
            raise BackendError(f"`{type(self.model).__name__}` has call_with_cache but no keras-hub generate().")
        self.model.compile(sampler="greedy")

    def _generate(self, feeds, max_new_tokens, eos_id):
        from ..models.keras_hub import text_inputs

        g = self.gspec
        ids, mask = np.asarray(feeds[g.ids]), np.asarray(feeds[g.mask])
        lengths = mask.sum(axis=1).astype(int)
        # keras-hub generates into the padded slots of its input: pad every row to its last new token
        width = int(lengths.max()) + max_new_tokens
        pad = ((0, 0), (0, width - ids.shape[1]))
        # token ids in, token ids out: an attached preprocessor (it takes strings) is set aside for the call
        preprocessor, self.model.preprocessor = self.model.preprocessor, None
        try:
            inputs = text_inputs(self.model, {g.ids: np.pad(ids, pad), g.mask: np.pad(mask, pad)})
            if g.seq2seq:
                inputs.update({g.encoder_ids: feeds[g.encoder_ids], g.encoder_mask: feeds[g.encoder_mask]})
            out = self.model.generate(inputs, stop_token_ids=None if eos_id < 0 else (eos_id,))
        finally:
            self.model.preprocessor = preprocessor
        tokens = np.asarray(out[g.ids])
        new = np.stack([tokens[b, n : n + max_new_tokens] for b, n in enumerate(lengths)]).astype("int32")
        lengths = sequence_lengths(new, eos_id)
        # attnkit's convention: a finished row continues with eos_id (keras-hub leaves what it generated)
        new = np.where(np.arange(max_new_tokens)[None, :] >= lengths[:, None], eos_id, new).astype("int32")
        return {OUTPUT_IDS: new, LENGTHS: lengths}

    def _close(self):
        self.model = None
