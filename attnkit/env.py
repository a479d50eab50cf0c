"""What this machine can run: GPU presence, CPU speed flags. Imports nothing heavy."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path


def gpu_unavailable_reason() -> str | None:
    """None when an NVIDIA GPU is visible, else the reason a GPU test or backend is skipped."""
    if not Path("/dev/nvidiactl").exists() and not Path("/proc/driver/nvidia/version").exists():
        return "needs an NVIDIA GPU; none found (no NVIDIA driver on this machine)"
    smi = shutil.which("nvidia-smi")
    if smi:
        try:
            out = subprocess.run([smi, "-L"], capture_output=True, text=True, timeout=10)
            if out.returncode != 0 or "GPU" not in out.stdout:
                return "needs an NVIDIA GPU; nvidia-smi lists none"
        except (OSError, subprocess.SubprocessError):
            return "needs an NVIDIA GPU; nvidia-smi failed"
    return None


def cpu_flags() -> dict[str, bool]:
    """The CPU features that decide reduced-precision speed on x86 (from /proc/cpuinfo)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return {}
    flags = set()
    for line in text.splitlines():
        if line.startswith("flags"):
            flags = set(line.split(":", 1)[1].split())
            break
    wanted = {
        "avx2": "avx2",
        "avx512f": "avx512f",
        "avx512_bf16": "avx512_bf16",
        "avx512_vnni": "avx512_vnni",
        "amx_bf16": "amx_bf16",
        "amx_int8": "amx_int8",
        "amx_tile": "amx_tile",
        "avx512_fp16": "avx512_fp16",
    }
    return {k: v in flags for k, v in wanted.items()}


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform

    return platform.processor() or "unknown"


def gpu_info() -> list[dict]:
    """Name and compute capability of each NVIDIA GPU (nvidia-smi), empty without one."""
    smi = shutil.which("nvidia-smi")
    if gpu_unavailable_reason() or not smi:
        return []
    out = subprocess.run(
        [smi, "--query-gpu=name,compute_cap", "--format=csv,noheader"], capture_output=True, text=True, timeout=10
    )
    return [
        {"name": n.strip(), "compute_capability": c.strip()}
        for n, c in (line.split(",", 1) for line in out.stdout.strip().splitlines() if "," in line)
    ]


def report() -> dict:
    """Every backend x precision with availability and reason, plus the machine and library facts."""
    from importlib import metadata

    from .exporters.tensorrt import detect
    from .runtimes.base import RUNNERS, runner_names

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
    flags = cpu_flags()
    machine = {
        "cpu": cpu_model(),
        "cores": __import__("os").cpu_count(),
        "speed flags": ", ".join(f"{k}={'yes' if v else 'no'}" for k, v in flags.items()),
        "gpu": gpu_info() or gpu_unavailable_reason(),
    }
    backends = []
    for name in runner_names():
        cls = RUNNERS[name]
        reason = cls.unavailable_reason()
        for precision in cls.precisions:
            note = reason
            if not note and precision == "bf16" and not flags.get("avx512_bf16") and not flags.get("amx_bf16"):
                note = "runs, but this CPU has no bf16 instructions (emulated, slow)"
            if (
                not note
                and precision == "fp16"
                and cls.__name__.startswith(("TF", "XLA", "Keras", "SavedModel"))
                and not flags.get("avx512_fp16")
            ):
                note = "runs, but this CPU has no fp16 arithmetic (emulated, slow)"
            backends.append({"backend": name, "precision": precision, "available": reason is None, "reason": note})
    return {
        "machine": machine,
        "libraries": libraries,
        "backends": backends,
        "tensorrt": flavour.describe() if flavour else None,
    }
