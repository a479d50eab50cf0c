"""``tensorrt``: a serialized plan run with the TensorRT runtime and cuda-python device buffers.

Input shapes are set per call, the optimisation profile whose ranges contain them is selected,
copies and execution are enqueued on one stream and the stream is synchronised before the
outputs (copied back to host) are returned, so a timed call covers the whole round trip.
Needs an NVIDIA GPU: elsewhere the runner reports itself unavailable with the reason.
"""

from __future__ import annotations

import numpy as np

from ..core.names import PLAN_PRECISIONS, ROLE_DECODER_WITH_PAST, ROLE_ENCODER
from .base import Runner, StepRunner, register


def _cudart():
    try:
        from cuda.bindings import runtime as cudart  # cuda-python >= 12.6
    except ImportError:
        from cuda import cudart  # older cuda-python
    return cudart


def _check(result):
    err, *rest = result if isinstance(result, tuple) else (result,)
    if int(err) != 0:
        raise RuntimeError(f"CUDA error {err}")
    return rest[0] if len(rest) == 1 else rest


def _unavailable() -> str | None:
    from ..core.machine import gpu_unavailable_reason
    from ..exporters.tensorrt import detect

    if detect() is None:
        return "no TensorRT Python package (pip install 'attnkit[tensorrt-rtx]' or tensorrt)"
    reason = gpu_unavailable_reason()
    if reason:
        return reason
    try:
        _cudart()
    except ImportError:
        return "cuda-python is not installed (pip install 'attnkit[gpu]')"
    return None


class _Engine:
    """One deserialised plan with its execution context, stream and device buffers."""

    def __init__(self, path):
        from ..exporters.tensorrt import _CaptureLogger, require

        trt = require().module
        self.cudart = _cudart()
        self.logger = _CaptureLogger(trt)
        self.engine = trt.Runtime(self.logger).deserialize_cuda_engine(path.read_bytes())
        if self.engine is None:
            errors = [m for s, m in self.logger.messages if s <= 1][:3]
            raise RuntimeError(f"the plan {path.name} could not be deserialised: {'; '.join(errors)}")
        self.context = self.engine.create_execution_context()
        self.stream = _check(self.cudart.cudaStreamCreate())
        self.names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        self.inputs = [n for n in self.names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        self.outputs = [n for n in self.names if n not in self.inputs]
        self.trt = trt
        self.profile = 0
        self.buffers: dict[str, tuple] = {}  # tensor name -> (device pointer, bytes)

    def _select_profile(self, feeds) -> None:
        for p in range(self.engine.num_optimization_profiles):
            ok = all(
                all(
                    lo <= d <= hi
                    for lo, d, hi in zip(
                        self.engine.get_tensor_profile_shape(n, p)[0],
                        feeds[n].shape,
                        self.engine.get_tensor_profile_shape(n, p)[2],
                    )
                )
                for n in self.inputs
            )
            if ok:
                if p != self.profile:
                    self.context.set_optimization_profile_async(p, self.stream)
                    self.profile = p
                return
        raise ValueError(f"input shapes {[feeds[n].shape for n in self.inputs]} are outside every optimisation profile")

    def _device(self, name: str, nbytes: int):
        """Device buffer of ``name``, allocated once and grown only when a larger shape arrives, so
        cudaMalloc/cudaFree stay out of the timed calls (the harness's warm-up sees each shape first)."""
        ptr, size = self.buffers.get(name, (None, 0))
        if nbytes > size:
            if ptr is not None:
                self.cudart.cudaFree(ptr)
            ptr, size = _check(self.cudart.cudaMalloc(max(nbytes, 1))), nbytes
            self.buffers[name] = (ptr, size)
        return ptr

    def infer(self, feeds):
        cudart, kind = self.cudart, self.cudart.cudaMemcpyKind
        self._select_profile(feeds)
        host = {}
        for name in self.inputs:
            arr = np.ascontiguousarray(feeds[name], dtype=self.trt.nptype(self.engine.get_tensor_dtype(name)))
            self.context.set_input_shape(name, arr.shape)
            ptr = self._device(name, arr.nbytes)
            _check(cudart.cudaMemcpyAsync(ptr, arr.ctypes.data, arr.nbytes, kind.cudaMemcpyHostToDevice, self.stream))
            self.context.set_tensor_address(name, ptr)
            host[name] = arr  # keep alive until the copy completes
        outs = {}
        for name in self.outputs:
            shape = tuple(self.context.get_tensor_shape(name))
            out = np.empty(shape, dtype=self.trt.nptype(self.engine.get_tensor_dtype(name)))
            ptr = self._device(name, out.nbytes)
            self.context.set_tensor_address(name, ptr)
            outs[name] = (out, ptr)
        if not self.context.execute_async_v3(self.stream):
            raise RuntimeError("TensorRT execution failed")
        for out, ptr in outs.values():
            _check(cudart.cudaMemcpyAsync(out.ctypes.data, ptr, out.nbytes, kind.cudaMemcpyDeviceToHost, self.stream))
        _check(cudart.cudaStreamSynchronize(self.stream))
        return {name: out.astype(np.float32, copy=False) for name, (out, _) in outs.items()}

    def close(self) -> None:
        for ptr, _ in getattr(self, "buffers", {}).values():
            self.cudart.cudaFree(ptr)
        self.buffers = {}
        if getattr(self, "stream", None) is not None:
            self.cudart.cudaStreamDestroy(self.stream)
        self.context = self.engine = self.stream = None


@register
class TensorRTRunner(Runner):
    name = "tensorrt"
    needs = "tensorrt"
    verifies = True
    precisions = PLAN_PRECISIONS

    @classmethod
    def unavailable_reason(cls) -> str | None:
        return _unavailable()

    def _load(self) -> None:
        self.engine = _Engine(self.source.path("tensorrt", self.precision))

    def _infer(self, feeds):
        return self.engine.infer({n: feeds[n] for n in self.engine.inputs})

    def _close(self) -> None:
        self.engine.close()
        self.engine = None


@register
class TensorRTStep(StepRunner):
    """The decode-step plans (``decoder_with_past[.fp16].plan``: a prefill profile with an empty past and a
    decode profile over past length) and the seq2seq encoder plan, on an NVIDIA GPU."""

    name = "tensorrt"
    needs = "tensorrt"
    precisions = PLAN_PRECISIONS

    @classmethod
    def unavailable_reason(cls) -> str | None:
        return _unavailable()

    def _load(self) -> None:
        self.step = _Engine(self.source.generation_path(ROLE_DECODER_WITH_PAST, "tensorrt", self.precision))
        self.encoder = None
        if self.gspec.seq2seq:
            self.encoder = _Engine(self.source.generation_path(ROLE_ENCODER, "tensorrt", self.precision))

    def _encode(self, feeds):
        return self.encoder.infer({n: feeds[n] for n in self.encoder.inputs})

    def _prefill(self, feeds):
        g = self.gspec
        empty = np.zeros((feeds[g.ids].shape[0], g.num_heads, 0, g.depth), "float32")
        return self._decode({**feeds, **{n: empty for n in g.past_names()}})

    def _decode(self, feeds):
        return self.step.infer({n: feeds[n] for n in self.step.inputs})

    def _close(self) -> None:
        for engine in (self.step, self.encoder):
            if engine is not None:
                engine.close()
        self.step = self.encoder = None
