"""TensorFlow graph backends: ``tf-function``, ``xla`` (jit_compile) and ``savedmodel``.

``tf-function`` and ``savedmodel`` also run generation: the decode step traced from the Keras model, or the
SavedModel's ``prefill``/``decode_step``/``encode`` signatures, and the in-graph ``generate`` signature.
"""

from __future__ import annotations

import numpy as np

from ..core.names import (
    DECODE_STEP,
    GENERATE,
    ROLE_SIGNATURES,
    SERVING_DEFAULT,
    SIG_DECODE_STEP,
    SIG_ENCODE,
    SIG_PREFILL,
)
from .base import GenerateRunner, Runner, StepRunner, register

XLA_REASON = (
    "XLA compiles one program per input shape, and the KV cache grows by one token per step: "
    "it would recompile at every step"
)


def _numpy(out: dict) -> dict[str, np.ndarray]:
    return {k: np.asarray(v) for k, v in out.items()}


class _TFRunner(Runner):
    """Shared inference: call a function of named tensors, copy every output to host."""

    precisions = ("fp32", "bf16", "fp16")

    def _call(self, feeds):
        raise NotImplementedError

    def _infer(self, feeds):
        return {k: v.numpy() for k, v in self._call(feeds).items()}

    def _close(self) -> None:
        self.fn = None


@register
class TFFunctionRunner(_TFRunner):
    name = "tf-function"
    needs = "keras"
    verifies = True  # model.keras is checked traced, as it is exported
    bench_default = True
    jit_compile = False

    def _load(self) -> None:
        from ..tracing import trace

        self.fn = trace(self.source.keras_model, self.source.spec, self.precision, jit_compile=self.jit_compile)
        self.names = self.source.spec.input_names

    def _call(self, feeds):
        return self.fn(*[feeds[n] for n in self.names])


@register
class XLARunner(TFFunctionRunner):
    name = "xla"
    verifies = False
    jit_compile = True
    not_for = {DECODE_STEP: XLA_REASON, GENERATE: XLA_REASON}


@register
class SavedModelRunner(_TFRunner):
    """The ``serving_default`` signature of ``DIR/savedmodel/<version>``, as TF Serving runs it."""

    name = "savedmodel"
    needs = "savedmodel"
    verifies = True
    bench_default = True

    def _load(self) -> None:
        import tensorflow as tf

        self.loaded_model = tf.saved_model.load(str(self.source.path("savedmodel", self.precision)))
        self.fn = self.loaded_model.signatures[SERVING_DEFAULT]

    def _call(self, feeds):
        import tensorflow as tf

        return self.fn(**{k: tf.constant(v) for k, v in feeds.items()})

    def _close(self) -> None:
        self.loaded_model = self.fn = None


class _TFStep(StepRunner):
    """Generation functions of named tensors (traced, or signatures of a loaded SavedModel)."""

    def _call(self, fn, specs, feeds):
        return _numpy(fn(*[feeds[t.name] for t in specs]))

    def _encode(self, feeds):
        return self._call(self.fns[SIG_ENCODE], self.gspec.encoder_inputs(), feeds)

    def _prefill(self, feeds):
        return self._call(self.fns[SIG_PREFILL], self.gspec.step_inputs(False), feeds)

    def _decode(self, feeds):
        return self._call(self.fns[SIG_DECODE_STEP], self.gspec.step_inputs(True), feeds)

    def _close(self):
        self.fns = self.loaded_model = None


@register
class TFFunctionStep(_TFStep):
    """The decode step traced from model.keras with ``tf.function`` (as export traces it)."""

    name = "tf-function"
    needs = "keras"

    def _load(self):
        from ..models.keras_hub import decoding_for
        from ..tracing.decode import trace_encode, trace_step

        d = decoding_for(self.source.keras_model)
        self.fns = {SIG_PREFILL: trace_step(d, False), SIG_DECODE_STEP: trace_step(d, True)}
        if self.gspec.seq2seq:
            self.fns[SIG_ENCODE] = trace_encode(d)


class _Signatures:
    """The generation signatures of ``savedmodel/1`` (role ``signatures``), loaded once per runner."""

    name = "savedmodel"
    needs = "savedmodel"
    role = ROLE_SIGNATURES

    def _load_signatures(self):
        import tensorflow as tf

        self.loaded_model = tf.saved_model.load(str(self.source.generation_path(ROLE_SIGNATURES, "savedmodel")))
        return self.loaded_model.signatures


@register
class SavedModelStep(_Signatures, _TFStep):
    """The ``encode`` / ``prefill`` / ``decode_step`` signatures of ``savedmodel/1``, step by step."""

    def _load(self):
        sigs = self._load_signatures()
        self.fns = {n: sigs[n] for n in (SIG_PREFILL, SIG_DECODE_STEP, SIG_ENCODE) if n in sigs}

    def _call(self, fn, specs, feeds):
        import tensorflow as tf

        return _numpy(fn(**{t.name: tf.constant(feeds[t.name]) for t in specs}))


@register
class SavedModelGenerate(_Signatures, GenerateRunner):
    """The in-graph ``generate`` signature (``tf.while_loop``): one call returns every token."""

    def _load(self):
        self.fn = self._load_signatures()[GENERATE]

    def _generate(self, feeds, max_new_tokens, eos_id):
        import tensorflow as tf

        from ..core.names import EOS_ID, MAX_NEW_TOKENS

        g = self.gspec
        names = [t.name for t in g.prompt_inputs()] + ([g.encoder_ids, g.encoder_mask] if g.seq2seq else [])
        args = {n: tf.constant(feeds[n]) for n in names}
        return _numpy(self.fn(**args, **{MAX_NEW_TOKENS: tf.constant(max_new_tokens), EOS_ID: tf.constant(eos_id)}))

    def _close(self):
        self.loaded_model = self.fn = None
