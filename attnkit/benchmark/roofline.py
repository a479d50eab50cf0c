"""Roofline figures: model FLOPs per call and the machine's measured matmul peak.

FLOPs count matmuls only (2 per multiply-add). Presets use their analytic formula (the one
``attnkit models`` prints); any other model is counted from its traced TensorFlow graph at the
benchmark shape: MatMul, BatchMatMul and Einsum ops (what Dense, attention and EinsumDense lower
to). The tests check the two agree on the presets.
"""

from __future__ import annotations

import time

import numpy as np

from ..core.spec import ExportSpec


def preset_flops(model_info: dict, seq: int) -> int | None:
    """Analytic FLOPs per sequence for a preset export, None for other models."""
    if model_info.get("source") != "preset":
        return None
    from ..models.presets import PRESETS

    preset = PRESETS.get(model_info["name"])
    return preset.flops(seq) if preset else None


def _einsum_flops(equation: str, shapes: list[list[int]]) -> int | None:
    inputs = equation.replace(" ", "").split("->")[0].split(",")
    sizes: dict[str, int] = {}
    for letters, shape in zip(inputs, shapes):
        if "." in letters or len(letters) != len(shape):
            return None
        sizes.update(zip(letters, shape))
    return 2 * int(np.prod(list(sizes.values()), dtype=np.int64))


def graph_flops(model, spec: ExportSpec, batch: int, seq: int) -> int | None:
    """Matmul FLOPs of one call at (batch, seq), counted on the traced graph; None if unknown."""
    import tensorflow as tf

    from ..tracing import call_model

    sizes = spec.sizes(batch, seq)
    signature = [tf.TensorSpec(t.concrete_shape(sizes), tf.as_dtype(t.dtype), name=t.name) for t in spec.inputs]
    names = spec.input_names

    @tf.function(input_signature=signature, autograph=False)
    def fn(*tensors):
        return call_model(model, spec, dict(zip(names, tensors)))

    total = 0
    for op in fn.get_concrete_function().graph.get_operations():
        if op.type not in ("MatMul", "BatchMatMulV2", "BatchMatMulV3", "Einsum"):
            continue
        shapes = [t.shape.as_list() for t in op.inputs]
        if any(d is None for s in shapes for d in s):
            return None
        if op.type == "Einsum":
            flops = _einsum_flops(op.get_attr("equation").decode(), shapes)
            if flops is None:
                return None
            total += flops
            continue
        a = shapes[0]
        adj = op.get_attr("transpose_a" if op.type == "MatMul" else "adj_x")
        k = a[-2] if adj else a[-1]
        out = op.outputs[0].shape.as_list()
        total += 2 * int(np.prod(out, dtype=np.int64)) * k
    return total


def calibrate_matmul(dtype: str = "float32", n: int = 2048, seconds: float = 1.0) -> dict:
    """Measured matmul throughput of this machine: GFLOP/s of repeated n x n tf.matmul, timed as a row
    (:func:`_sustained`).

    Returns:
        ``{"dtype", "n", "gflops", "best_gflops", "calls"}``; ``gflops`` is None where the dtype is unsupported.
    """
    import tensorflow as tf

    try:
        a = tf.random.stateless_normal((n, n), seed=(1, 2), dtype=tf.float32)
        b = tf.random.stateless_normal((n, n), seed=(3, 4), dtype=tf.float32)
        a, b = tf.cast(a, dtype), tf.cast(b, dtype)
        tf.matmul(a, b).numpy()  # the first call creates oneDNN's primitive (and warms up): errors surface here
    except (tf.errors.OpError, TypeError, ValueError) as e:
        return {"dtype": dtype, "n": n, "gflops": None, "calls": 0, "error": str(e).splitlines()[0][:200]}
    return {"dtype": dtype, "n": n, **_sustained(lambda: tf.matmul(a, b).numpy(), 2 * n**3, seconds)}


def _sustained(call, ops: int, seconds: float) -> dict:
    """A peak kernel's throughput timed by the bench's own harness and rule, as every row is, and taken from
    its median call as a row's GFLOP/s is: ``{"gflops", "best_gflops", "calls"}`` (``best_gflops``, the fastest
    call, kept for the record).

    Median against median, because the fastest call is no peak a row can be held to: on the 2-vCPU AMX Xeon
    of issue 19 the int8 2048^2 kernel ran at a steady ~1100 GOP/s on one thread and, on two, at a median of
    1118 with bursts to 2319 (the second vCPU at times its own core, at times not; 212 calls in 3 s), so a
    peak from the fastest call scored the peak kernel itself, timed as a row, at 48 % of its own peak. A row
    that still beats its peak (a fused model can, or a fast stretch of the VM) sets the peak and says so
    (:func:`attnkit.benchmark.run._derive`), so no row is above 100 %."""
    from .harness import StoppingRule, measure

    # for ``seconds``, without the rule's extension for noisy rows: a median holds still where a fastest call does
    # not, and every bench calibrates up to seven kernels (extended, each could take three times as long)
    # warmup_s=0: the harness still makes one untimed call, which packs weights and creates primitives
    latency = measure(call, StoppingRule(warmup_s=0.0, min_iterations=3, min_seconds=seconds, extend=1.0))
    return {"gflops": ops / (latency.p50 / 1e3) / 1e9, "best_gflops": ops / (latency.min / 1e3) / 1e9,
            "calls": latency.count}  # fmt: skip


def _best_of(call, seconds: float) -> tuple[float, int]:
    """Fastest of repeated ``call()`` (at least 3, for ``seconds``): (seconds, calls)."""
    call()  # warm-up (primitive creation, weight packing)
    best, calls, start = float("inf"), 0, time.perf_counter()
    while calls < 3 or time.perf_counter() - start < seconds:
        t0 = time.perf_counter()
        call()
        best = min(best, time.perf_counter() - t0)
        calls += 1
    return best, calls


def _matmul_graph(n: int):
    """An ONNX graph of one n x n fp32 MatMul with a constant weight, and a seeded input for it."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(7)
    weight = numpy_helper.from_array(rng.standard_normal((n, n)).astype(np.float32), "w")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["a", "w"], ["y"], name="peak")],
        "peak",
        [helper.make_tensor_value_info("a", TensorProto.FLOAT, [n, n])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [n, n])],
        [weight],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8  # what tf2onnx writes; onnx 1.23 defaults to IR 14, newer than onnxruntime reads
    return model, {"a": rng.standard_normal((n, n)).astype(np.float32)}


def _onnxruntime_matmul(n: int, seconds: float) -> dict:
    """fp32 n x n MatMul with a constant weight on onnxruntime's CPU provider (MLAS)."""
    try:
        import onnxruntime as ort
    except ImportError:
        return {"gflops": None, "error": "onnxruntime is not installed"}
    model, feeds = _matmul_graph(n)
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return {**_sustained(lambda: session.run(None, feeds), 2 * n**3, seconds),
            "kernel": f"onnxruntime {ort.__version__} MatMul"}  # fmt: skip


def _openvino_matmul(dtype: str, n: int, seconds: float) -> dict:
    """n x n MatMul with a constant weight on OpenVINO's CPU plugin, its inference precision forced to
    ``dtype``; a precision the plugin does not take here (it reports f32 for bf16 without bf16
    instructions) is no peak of that precision."""
    try:
        import openvino as ov
        import openvino.opset13 as ops
    except ImportError:
        return {"gflops": None, "error": "openvino is not installed"}
    from ..core.names import OPENVINO_HINTS, OPENVINO_RAN_AS

    precision = {"float32": "fp32", "bfloat16": "bf16"}[dtype]
    rng = np.random.default_rng(7)
    a = ops.parameter([n, n], ov.Type.f32, name="a")
    y = ops.matmul(a, ops.constant(rng.standard_normal((n, n)).astype(np.float32)), False, False)
    compiled = ov.Core().compile_model(
        ov.Model([y], [a]), "CPU", {"INFERENCE_PRECISION_HINT": OPENVINO_HINTS[precision]}
    )
    took = OPENVINO_RAN_AS.get(compiled.get_property("INFERENCE_PRECISION_HINT").get_type_name())
    if took != precision:
        return {"gflops": None, "error": f"OpenVINO runs {precision} as {took} on this CPU"}
    request, feed = compiled.create_infer_request(), {"a": rng.standard_normal((n, n)).astype(np.float32)}
    return {**_sustained(lambda: request.infer(feed), 2 * n**3, seconds), "kernel": f"OpenVINO {ov.__version__} MatMul"}


def calibrate_peaks(dtypes=("float32", "bfloat16"), n: int = 2048, seconds: float = 1.0) -> dict:
    """Each precision's matmul peak from every installed library's kernel at the same size (TensorFlow/oneDNN,
    onnxruntime MLAS for fp32, OpenVINO), the machine's best setting the peak; ``library`` names which did,
    ``by_library`` keeps every figure. A row's "% of peak" is against the best, so a backend whose own
    kernels beat TensorFlow's no longer shows above 100 %."""
    out = {}
    for dtype in dtypes:
        found = {"tensorflow": calibrate_matmul(dtype, n, seconds)}
        if dtype == "float32":
            found["onnxruntime"] = _onnxruntime_matmul(n, seconds)
        found["openvino"] = _openvino_matmul(dtype, n, seconds)
        out[dtype] = _best_library(found, dtype, n)
    return out


def _best_library(found: dict[str, dict], dtype: str, n: int) -> dict:
    """One precision's peak from each library's measurement (``found``, first = the fallback name): the
    fastest library's figure, named in ``library``, every figure (or its error) in ``by_library``."""
    ok = {k: v for k, v in found.items() if v.get("gflops")}
    library = max(ok, key=lambda k: ok[k]["gflops"]) if ok else next(iter(found))
    return {
        **found[library],
        "dtype": dtype,
        "n": n,
        "library": library,
        "by_library": {k: v.get("gflops") or v.get("error") for k, v in found.items()},
    }


def calibrate_int8(scheme: str = "u8u8", n: int = 2048, seconds: float = 1.0) -> dict:
    """The machine's best measured int8 matmul throughput, from every installed library's int8 kernel.

    - onnxruntime: one n x n float MatMul with a constant weight, quantised by the same ``quantize_dynamic``
      call and scheme as ``model.int8.onnx`` (onnxruntime fuses it into DynamicQuantizeMatMul: activation
      quantisation + MatMulInteger), the kernel the int8 ONNX file really runs;
    - OpenVINO: the same MatMul between FakeQuantize'd operands (u8 activations, i8 weights), which OpenVINO's
      low-precision transformations turn into its int8 FullyConnected, the kernel an OpenVINO IR quantised by
      NNCF runs (on the AMX Xeon of issue 19: 0.8-1.0 TOP/s against onnxruntime's U8S8).

    Timed like :func:`calibrate_matmul`; GOP/s count 2 ops per multiply-add, so int8 rows' "% of peak" compares
    like with like. ``library`` names the kernel that set the peak, ``by_library`` keeps every figure.
    """
    found = {"onnxruntime": _onnxruntime_int8_matmul(scheme, n, seconds), "openvino": _openvino_int8_matmul(n, seconds)}
    return _best_library(found, "int8", n)


def _onnxruntime_int8_matmul(scheme: str, n: int, seconds: float) -> dict:
    from ..core.targets import INT8_SCHEMES
    from ..exporters.precision import to_int8

    try:
        import onnxruntime as ort
    except ImportError:
        return {"gflops": None, "calls": 0, "error": "onnxruntime is not installed"}
    model, feeds = _matmul_graph(n)
    quantised = to_int8(model, scheme=INT8_SCHEMES[scheme])
    session = ort.InferenceSession(quantised.SerializeToString(), providers=["CPUExecutionProvider"])
    kernel = f"onnxruntime {ort.__version__} DynamicQuantizeMatMul {scheme}"
    return {**_sustained(lambda: session.run(None, feeds), 2 * n**3, seconds), "kernel": kernel}


def _openvino_int8_matmul(n: int, seconds: float) -> dict:
    """n x n MatMul of FakeQuantize'd operands on OpenVINO's CPU plugin (what NNCF's quantised IR holds; built
    by hand because a peak needs one bare MatMul, not a calibrated model), its inference precision f32 as
    attnkit's runner compiles int8 IRs; the plugin's runtime graph must show a u8/i8 FullyConnected, else it is
    no int8 peak."""
    try:
        import openvino as ov
        import openvino.opset13 as ops
    except ImportError:
        return {"gflops": None, "calls": 0, "error": "openvino is not installed"}
    rng = np.random.default_rng(7)
    weight = rng.standard_normal((n, n)).astype(np.float32)
    bound = float(np.abs(weight).max())

    def fq(x, low: float, high: float, levels: int):
        lo, hi = ops.constant(np.float32(low)), ops.constant(np.float32(high))
        return ops.fake_quantize(x, lo, hi, lo, hi, levels)

    a = ops.parameter([n, n], ov.Type.f32, name="a")
    y = ops.matmul(fq(a, -4.0, 4.0, 256), fq(ops.constant(weight), -bound, bound, 255), False, True)
    compiled = ov.Core().compile_model(ov.Model([y], [a]), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    ran = {str(op.get_rt_info()["runtimePrecision"].astype(str)) for op in compiled.get_runtime_model().get_ops()
           if op.get_rt_info()["layerType"].astype(str) == "FullyConnected"}  # fmt: skip
    if not ran & {"u8", "i8"}:
        return {"gflops": None, "calls": 0, "error": f"OpenVINO ran the quantised MatMul in {', '.join(sorted(ran))}"}
    request, feed = compiled.create_infer_request(), {"a": rng.standard_normal((n, n)).astype(np.float32)}
    kernel = f"OpenVINO {ov.__version__} int8 FullyConnected"
    return {**_sustained(lambda: request.infer(feed), 2 * n**3, seconds), "kernel": kernel}


class BandwidthProbes:
    """A run's memory-bandwidth probes, on buffers allocated once and reused by every probe of the run.

    - ``copy``: STREAM's *copy* of a ``mib`` MiB float32 array, each of ``threads`` threads its own slice
      (numpy releases the GIL in the copy loop); bytes count the read and the write (2 x size). Far larger
      than any last-level cache here: DRAM bandwidth, the roof of a step that streams its weights from DRAM.
    - ``read``: reading ``nbytes`` the way a decode step reads its weights, a float32 matrix-vector product
      over a matrix of that size split by rows over the threads (numpy's BLAS releases the GIL). A step
      whose weights and cache fit in the last-level cache runs above the DRAM copy; this read of its own
      working-set size is the bound it cannot pass.

    Buffers are reused so that the probes of a run differ only by the machine, not by where fresh pages
    landed. The machine does move: on one 2-core AMD EPYC VM the same buffer's copy measured 43 GB/s for the
    first part of a run and 63 GB/s for the rest (attnkit 2026-11-28), which is why a generation bench
    probes around its rows, bounds them by the highest probe and reports the spread.
    """

    def __init__(self, threads: int | None = None, mib: int = 512):
        import os

        self.threads = threads or min(os.cpu_count() or 1, 8)
        self.mib = mib
        self._copy = None
        self._reads: dict[int, tuple] = {}

    def _pool(self):
        from concurrent.futures import ThreadPoolExecutor

        return ThreadPoolExecutor(self.threads)

    def _slices(self, n: int) -> list[slice]:
        bounds = np.linspace(0, n, self.threads + 1).astype(np.int64)
        return [slice(int(a), int(b)) for a, b in zip(bounds[:-1], bounds[1:])]

    def copy(self, seconds: float = 1.0) -> dict:
        if self._copy is None:
            src = np.random.default_rng(3).standard_normal(self.mib * (1 << 20) // 4, dtype=np.float32)
            self._copy = (src, np.empty_like(src))
        src, dst = self._copy
        parts = self._slices(src.size)
        with self._pool() as pool:
            best, calls = _best_of(lambda: list(pool.map(lambda s: np.copyto(dst[s], src[s]), parts)), seconds)
        return {"kind": "copy", "mib": self.mib, "threads": self.threads, "gbps": 2 * src.nbytes / best / 1e9,
                "calls": calls}  # fmt: skip

    def read(self, nbytes: int, seconds: float = 0.3) -> dict:
        cols = 1024
        rows = max(self.threads, int(nbytes) // (4 * cols))
        if rows not in self._reads:
            matrix = np.random.default_rng(4).standard_normal((rows, cols), dtype=np.float32)
            self._reads[rows] = (matrix, np.ones(cols, np.float32))
        matrix, vector = self._reads[rows]
        parts = [matrix[s] for s in self._slices(rows)]
        with self._pool() as pool:
            best, calls = _best_of(lambda: list(pool.map(lambda m: m @ vector, parts)), seconds)
        return {"kind": "read", "bytes": int(matrix.nbytes), "threads": self.threads,
                "gbps": matrix.nbytes / best / 1e9, "calls": calls}  # fmt: skip

    def close(self) -> None:
        self._copy, self._reads = None, {}
