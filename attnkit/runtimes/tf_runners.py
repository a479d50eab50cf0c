"""TensorFlow graph backends: ``tf-function``, ``xla`` (jit_compile) and ``savedmodel``."""

from __future__ import annotations

from .base import Runner, register


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
        self.fn = self.loaded_model.signatures["serving_default"]

    def _call(self, feeds):
        import tensorflow as tf

        return self.fn(**{k: tf.constant(v) for k, v in feeds.items()})
