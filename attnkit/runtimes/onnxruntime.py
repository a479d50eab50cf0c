"""``onnxruntime``: ONNX Runtime's CPU execution provider on ``DIR/model.onnx``."""

from __future__ import annotations

from .base import Runner, register


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
    precisions = ("fp32", "fp16", "int8")
    providers = ("CPUExecutionProvider",)

    needs_gpu = False

    @classmethod
    def unavailable_reason(cls) -> str | None:
        try:
            import onnxruntime as ort
        except ImportError:
            return "onnxruntime is not installed (pip install 'attnkit[cpu]', or 'attnkit[gpu]' on a GPU server)"
        if cls.needs_gpu:
            from ..machine import gpu_unavailable_reason

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


@register
class OnnxRuntimeTensorRTRunner(OnnxRuntimeRunner):
    """onnxruntime-gpu's TensorRT execution provider (CUDA, then CPU, for what TensorRT does not take)."""

    name = "onnxruntime-trt"
    verifies = False
    bench_default = False
    providers = ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider")
    precisions = ("fp32", "fp16")
    needs_gpu = True
