"""`attnkit env`: every backend x precision, available here or why not (probes live in core/machine.py)."""

from __future__ import annotations

from ..core.machine import cpu_flags, cpu_model, gpu_info, gpu_unavailable_reason
from ..core.names import DECODE_STEP, FORWARD, GENERATE


def report() -> dict:
    """Every backend x precision with availability and reason, plus the machine and library facts."""
    from ..exporters.tensorrt import detect
    from ..runtimes.registry import all_backends, tasks_of, why_not

    flavour = detect()
    backends, cannot = [], []
    for name in all_backends():
        tasks = tasks_of(name)
        cls = tasks.get(FORWARD) or next(iter(tasks.values()))  # a generation-only backend: its one runner
        reason = cls.unavailable_reason()
        for precision in cls.precisions:
            runs = [t for t, c in tasks.items() if precision in c.precisions]
            note = reason or _note(cls.needs, precision)
            backends.append(
                {"backend": name, "precision": precision, "tasks": runs, "available": reason is None, "reason": note}
            )
        for task in (FORWARD, DECODE_STEP, GENERATE):  # what a backend declares it cannot do, and why
            if task not in tasks and any(task in c.not_for for c in tasks.values()):
                cannot.append({"backend": name, "task": task, "reason": why_not(name, task)})
    return {
        "machine": _machine(),
        "libraries": _libraries(flavour),
        "backends": backends,
        "not_registered": cannot,
        "tensorrt": flavour.describe() if flavour else None,
    }


def _note(needs: str, precision: str) -> str | None:
    """What an available backend reading ``needs`` does with ``precision`` on this CPU, where that is not plain:
    what OpenVINO's plugin compiles it to (asked of the plugin), emulated bf16/fp16, which int8 is exact here."""
    from ..core.machine import cpu_features, tensorflow_features
    from ..core.targets import BF16_FEATURES, choose_int8, openvino_how, openvino_runs

    features = cpu_features()
    if needs == "openvino":
        ran, native = openvino_runs(precision, features)
        return None if native else openvino_how(precision, ran)
    if precision == "bf16" and needs != "onnx" and not set(BF16_FEATURES) & tensorflow_features():
        return "runs, but this CPU has no bf16 instructions (emulated, slow)"
    if precision == "int8" and needs == "onnx":
        if choose_int8(features).name == "u8s8":
            return "runs; int8 U8S8 is exact here"
        return "runs; this CPU has no VNNI/AMX: only int8 exported for portable/cpu-avx2 (U8U8) is right here"
    if precision == "fp16" and needs in ("keras", "savedmodel") and "avx512_fp16" not in features:
        return "runs, but this CPU has no fp16 arithmetic (emulated, slow)"
    return None


def _machine() -> dict:
    import os

    from ..core.machine import cpu_features, onednn_cap, tensorflow_features
    from ..core.targets import choose_int8, host_class
    from ..exporters.openvino_int8 import host_openvino_int8

    features, cap = cpu_features(), onednn_cap()
    machine = {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "speed flags": ", ".join(f"{k}={'yes' if v else 'no'}" for k, v in cpu_flags().items()),
        "cpu class (export --target host)": f"{host_class(features)}; int8 scheme {choose_int8(features).name}",
        "OpenVINO int8 (export --target host)": host_openvino_int8(features),
        "gpu": gpu_info() or gpu_unavailable_reason(),
    }
    if cap:
        used = ", ".join(sorted(tensorflow_features())) or "no AVX2"
        machine["ONEDNN_MAX_CPU_ISA"] = f"{cap[0]}: TensorFlow uses {used}"
    return machine


def _libraries(flavour) -> dict:
    from importlib import metadata

    libraries: dict = {}
    try:
        import tensorflow as tf

        libraries["tensorflow"] = tf.__version__
        libraries["tensorflow GPUs"] = [d.name for d in tf.config.list_physical_devices("GPU")] or "none"
        libraries["XLA (jit_compile)"] = "available on CPU" if tf.test.is_built_with_xla() else "not built in"
    except ImportError:
        libraries["tensorflow"] = "not installed"
    try:
        import onnxruntime as ort

        libraries["onnxruntime"] = f"{ort.__version__}, providers: {', '.join(ort.get_available_providers())}"
    except ImportError:
        libraries["onnxruntime"] = "not installed"
    for package in ("onnxruntime-genai", "openvino", "keras-hub", "cuda-python"):
        try:
            libraries[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            libraries[package] = "not installed"
    libraries["TensorRT"] = (
        f"{flavour.name} {flavour.version}; strongly typed: {flavour.strongly_typed}; "
        f"FP16 builder flag: {flavour.fp16_flag}; targets: {', '.join(flavour.aot_targets) or 'local GPU'}"
        if flavour
        else "not installed (pip install 'attnkit[tensorrt-rtx]')"
    )
    return libraries
