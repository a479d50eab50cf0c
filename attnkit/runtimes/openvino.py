"""``openvino``: OpenVINO's CPU plugin on ``DIR/openvino/model.xml``, with the precision it really ran.

OpenVINO's CPU plugin picks its own inference precision when left alone (bf16 on CPUs with AMX or
avx512_bf16, silently). attnkit never leaves it alone: fp32 forces ``f32``; bf16 asks for ``bf16``. After
compiling, the runner reads back ``INFERENCE_PRECISION_HINT`` and reports it as :attr:`ran_as`, so a row
that asked for bf16 on a CPU without bf16 (the plugin then runs f32, measured on an AVX2-only EPYC) says
so, and a row that computed in bf16 is never labelled fp32.
"""

from __future__ import annotations

import numpy as np

from ..exporters.openvino import IR_XML
from ..names import ROLE_DECODER_WITH_PAST, ROLE_ENCODER
from .base import Runner, StepRunner, register

#: attnkit precision -> OpenVINO's inference precision hint, and OpenVINO's element type name back
HINTS = {"fp32": "f32", "bf16": "bf16"}
RAN_AS = {"f32": "fp32", "float32": "fp32", "bf16": "bf16", "bfloat16": "bf16", "f16": "fp16", "float16": "fp16"}


def compile_ir(path, precision: str, threads: int | None = None):
    """``(compiled model, precision it runs in)`` for the CPU device, latency-oriented."""
    import openvino as ov

    config = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": HINTS[precision]}
    if threads:
        config["INFERENCE_NUM_THREADS"] = threads
    compiled = ov.Core().compile_model(str(path), "CPU", config)
    took = compiled.get_property("INFERENCE_PRECISION_HINT").get_type_name()  # "f32", "bf16", "f16"
    return compiled, RAN_AS.get(took, took)


def _unavailable() -> str | None:
    try:
        import openvino  # noqa: F401
    except ImportError:
        return "openvino is not installed (pip install 'attnkit[openvino]')"
    return None


class _Compiled:
    """One compiled IR and its infer request: named host arrays in, named host arrays out."""

    def __init__(self, path, precision: str, threads: int | None):
        self.compiled, self.ran_as = compile_ir(path / IR_XML, precision, threads)
        self.request = self.compiled.create_infer_request()
        self.inputs = {i.any_name for i in self.compiled.inputs}
        self.outputs = [(o, o.any_name) for o in self.compiled.outputs]

    def __call__(self, feeds):
        result = self.request.infer({k: v for k, v in feeds.items() if k in self.inputs})
        return {name: result[port].copy() for port, name in self.outputs}


@register
class OpenVINORunner(Runner):
    name = "openvino"
    needs = "openvino"
    verifies = True
    bench_default = True
    precisions = tuple(HINTS)

    unavailable_reason = staticmethod(_unavailable)

    def _load(self) -> None:
        self.model = _Compiled(self.source.path("openvino", self.precision), self.precision, self.threads)
        self.ran_as = self.model.ran_as

    def _infer(self, feeds):
        return self.model(feeds)

    def _close(self) -> None:
        self.model = None


@register
class OpenVINOStep(StepRunner):
    """The decode step's IR (``openvino_decoder_with_past/``; the prefill is the step with an empty past) and
    the seq2seq encoder's, compiled with f32 forced, driven by the same numpy loop as every step runner."""

    name = "openvino"
    needs = "openvino"
    unavailable_reason = staticmethod(_unavailable)

    def _load(self) -> None:
        self.step = _Compiled(self.source.generation_path(ROLE_DECODER_WITH_PAST, "openvino"), "fp32", self.threads)
        self.ran_as = self.step.ran_as
        self.encoder = None
        if self.gspec.seq2seq:
            self.encoder = _Compiled(self.source.generation_path(ROLE_ENCODER, "openvino"), "fp32", self.threads)

    def _encode(self, feeds):
        return self.encoder(feeds)

    def _prefill(self, feeds):
        g = self.gspec
        empty = np.zeros((feeds[g.ids].shape[0], g.num_heads, 0, g.depth), "float32")
        return self._decode({**feeds, **{n: empty for n in g.past_names()}})

    def _decode(self, feeds):
        return self.step(feeds)

    def _close(self) -> None:
        self.step = self.encoder = None
