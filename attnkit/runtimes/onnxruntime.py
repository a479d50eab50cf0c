"""``onnxruntime``: ONNX Runtime's CPU execution provider on ``DIR/model.onnx``."""

from __future__ import annotations

import numpy as np

from ..core.names import DECODE_STEP, GENERATE, ROLE_DECODER_WITH_PAST, ROLE_ENCODER
from .base import Runner, StepRunner, register

_GPU_GENERATION = "attnkit's generation loop runs onnxruntime's CPU provider only (GPU decode: the tensorrt backend)"


def session(path, threads: int | None = None, providers=("CPUExecutionProvider",)):
    """An onnxruntime InferenceSession on ``path``, quiet, with ``threads`` intra-op threads if given."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    if threads:
        options.intra_op_num_threads = threads
    return ort.InferenceSession(str(path), options, providers=list(providers))


@register
class OnnxRuntimeRunner(Runner):
    name = "onnxruntime"
    needs = "onnx"
    verifies = True
    bench_default = True
    precisions = ("fp32", "fp16", "int8", "q8", "q4")
    providers = ("CPUExecutionProvider",)

    needs_gpu = False

    @classmethod
    def unavailable_reason(cls) -> str | None:
        try:
            import onnxruntime as ort
        except ImportError:
            return "onnxruntime is not installed (pip install 'attnkit[cpu]', or 'attnkit[gpu]' on a GPU server)"
        if cls.needs_gpu:
            from ..core.machine import gpu_unavailable_reason

            reason = gpu_unavailable_reason()
            if reason:
                return reason
        missing = [p for p in cls.providers if p not in ort.get_available_providers()]
        if missing:
            hint = " (install onnxruntime-gpu: pip install 'attnkit[gpu]')" if cls.needs_gpu else ""
            return f"onnxruntime {ort.__version__} has no {', '.join(missing)}{hint}"
        return None

    def _load(self) -> None:
        self.session = session(self.source.path("onnx", self.precision), self.threads, self.providers)
        self.output_names = [o.name for o in self.session.get_outputs()]

    def _infer(self, feeds):
        return dict(zip(self.output_names, self.session.run(self.output_names, feeds)))

    def _close(self) -> None:
        self.session = None


@register
class OnnxRuntimeCUDARunner(OnnxRuntimeRunner):
    """onnxruntime-gpu's CUDA execution provider (CPU fallback for unsupported nodes)."""

    name = "onnxruntime-cuda"
    verifies = False
    bench_default = False
    providers = ("CUDAExecutionProvider", "CPUExecutionProvider")
    precisions = ("fp32", "fp16")
    needs_gpu = True
    not_for = {DECODE_STEP: _GPU_GENERATION, GENERATE: _GPU_GENERATION}


@register
class OnnxRuntimeTensorRTRunner(OnnxRuntimeRunner):
    """onnxruntime-gpu's TensorRT execution provider (CUDA, then CPU, for what TensorRT does not take)."""

    name = "onnxruntime-trt"
    verifies = False
    bench_default = False
    providers = ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider")
    precisions = ("fp32", "fp16")
    needs_gpu = True
    not_for = {DECODE_STEP: _GPU_GENERATION, GENERATE: _GPU_GENERATION}


@register
class OnnxRuntimeStep(StepRunner):
    """``decoder_with_past[.fp16|.int8].onnx`` (and ``encoder*.onnx``) on onnxruntime's CPU provider.

    One decode-step graph serves both phases: the prefill is the step with an empty past
    (past_sequence = 0), the documented switch of this layout.
    """

    name = "onnxruntime"
    needs = "onnx"
    precisions = ("fp32", "fp16", "int8", "q8", "q4")
    unavailable_reason = OnnxRuntimeRunner.unavailable_reason

    def _load(self):
        self.step = session(self.source.generation_path(ROLE_DECODER_WITH_PAST, "onnx", self.precision), self.threads)
        self.step_outputs = [o.name for o in self.step.get_outputs()]
        self.step_inputs = {i.name for i in self.step.get_inputs()}
        self.encoder = None
        if self.gspec.seq2seq:
            self.encoder = session(self.source.generation_path(ROLE_ENCODER, "onnx", self.precision), self.threads)

    def _close(self):
        self.step = self.encoder = None

    def _encode(self, feeds):
        names = [o.name for o in self.encoder.get_outputs()]
        g = self.gspec
        return dict(zip(names, self.encoder.run(names, {n: feeds[n] for n in (g.encoder_ids, g.encoder_mask)})))

    def _prefill(self, feeds):
        g = self.gspec
        empty = np.zeros((feeds[g.ids].shape[0], g.num_heads, 0, g.depth), "float32")
        return self._decode({**feeds, **{n: empty for n in g.past_names()}})

    def _decode(self, feeds):
        run = self.step.run(self.step_outputs, {k: v for k, v in feeds.items() if k in self.step_inputs})
        return dict(zip(self.step_outputs, run))
