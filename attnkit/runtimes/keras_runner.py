"""``keras``: the eager Keras model, the reference every artifact is compared with."""

from __future__ import annotations

import numpy as np

from .base import Runner, register


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
