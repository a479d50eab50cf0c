"""`attnkit env`: every backend x precision, available here or why not (probes live in machine.py)."""

from __future__ import annotations

from .machine import cpu_flags, cpu_model, gpu_info, gpu_unavailable_reason
from .names import DECODE_STEP, FORWARD, GENERATE


def report() -> dict:
    """Every backend x precision with availability and reason, plus the machine and library facts."""
    from importlib import metadata

    from .exporters.tensorrt import detect
    from .runtimes.registry import all_backends, tasks_of, why_not

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
    for package in ("onnxruntime-genai", "openvino", "keras-hub"):
        try:
            libraries[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            libraries[package] = "not installed"
    flavour = detect()
    libraries["TensorRT"] = (
        f"{flavour.name} {flavour.version}; strongly typed: {flavour.strongly_typed}; "
        f"FP16 builder flag: {flavour.fp16_flag}; targets: {', '.join(flavour.aot_targets) or 'local GPU'}"
        if flavour
        else "not installed (pip install 'attnkit[tensorrt-rtx]')"
    )
    try:
        libraries["cuda-python"] = metadata.version("cuda-python")
    except metadata.PackageNotFoundError:
        libraries["cuda-python"] = "not installed"
    from .exporters.openvino_int8 import host_openvino_int8
    from .machine import cpu_features, onednn_cap, tensorflow_features
    from .targets import BF16_FEATURES, choose_int8, host_class, openvino_how, openvino_runs

    flags, features, tf_features = cpu_flags(), cpu_features(), tensorflow_features()
    scheme, cap = choose_int8(features).name, onednn_cap()
    machine = {
        "cpu": cpu_model(),
        "cores": __import__("os").cpu_count(),
        "speed flags": ", ".join(f"{k}={'yes' if v else 'no'}" for k, v in flags.items()),
        "cpu class (export --target host)": f"{host_class(features)}; int8 scheme {scheme}",
        "OpenVINO int8 (export --target host)": host_openvino_int8(features),
        "gpu": gpu_info() or gpu_unavailable_reason(),
    }
    if cap:
        machine["ONEDNN_MAX_CPU_ISA"] = f"{cap[0]}: TensorFlow uses {', '.join(sorted(tf_features)) or 'no AVX2'}"
    backends, cannot = [], []
    for name in all_backends():
        tasks = tasks_of(name)
        cls = tasks.get(FORWARD) or next(iter(tasks.values()))  # a generation-only backend: its one runner
        reason = cls.unavailable_reason()
        for precision in cls.precisions:
            note = reason
            if not note and cls.needs == "openvino":
                ov_ran, ov_native = openvino_runs(precision, features)
                note = None if ov_native else openvino_how(precision, ov_ran)
            elif (
                not note
                and precision == "bf16"
                and not set(BF16_FEATURES) & tf_features
                and cls.needs not in ("onnx", "openvino")
            ):
                note = "runs, but this CPU has no bf16 instructions (emulated, slow)"
            if not note and precision == "int8" and cls.needs == "onnx":
                note = (
                    "runs; int8 U8S8 is exact here"
                    if scheme == "u8s8"
                    else "runs; this CPU has no VNNI/AMX: only int8 exported for portable/cpu-avx2 (U8U8) is right here"
                )
            if (
                not note
                and precision == "fp16"
                and cls.needs in ("keras", "savedmodel")
                and "avx512_fp16" not in features
            ):
                note = "runs, but this CPU has no fp16 arithmetic (emulated, slow)"
            runs = [t for t, c in tasks.items() if precision in c.precisions]
            backends.append(
                {"backend": name, "precision": precision, "tasks": runs, "available": reason is None, "reason": note}
            )
        for task in (FORWARD, DECODE_STEP, GENERATE):  # what a backend declares it cannot do, and why
            if task not in tasks and any(task in c.not_for for c in tasks.values()):
                cannot.append({"backend": name, "task": task, "reason": why_not(name, task)})
    return {
        "machine": machine,
        "libraries": libraries,
        "backends": backends,
        "not_registered": cannot,
        "tensorrt": flavour.describe() if flavour else None,
    }
