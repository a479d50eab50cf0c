"""Probes of this machine: CPU model and instruction-set features, NVIDIA GPUs. Imports nothing heavy.

CPU features come from py-cpuinfo (CPUID plus /proc/cpuinfo), the maintained library for this,
read once per process. Feature names are normalised to the Linux spelling (``avx512_vnni``,
``amx_int8``), since py-cpuinfo reports both ``avx512vnni`` (CPUID) and ``avx512_vnni`` (kernel).

``ONEDNN_MAX_CPU_ISA`` (oneDNN's own switch, honoured by TensorFlow) caps the features TensorFlow
uses; :func:`tensorflow_features` applies the same cap, so a bf16 SavedModel run under
``ONEDNN_MAX_CPU_ISA=AVX2`` is reported as emulated, as it is. onnxruntime has no such switch:
its int8 kernels are chosen from CPUID alone (:func:`cpu_features`).

``ATTNKIT_CPU_FEATURES=avx2,fma`` replaces the probed features: for emulators (qemu-user, Intel SDE)
whose CPUID, which the kernels dispatch on, differs from the host's /proc/cpuinfo that py-cpuinfo reads.
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

#: the features that decide which reduced-precision kernels a CPU runs, in the Linux spelling
FEATURES = (
    "avx2",
    "fma",
    "avx512f",
    "avx512bw",
    "avx512_vnni",
    "avx_vnni",
    "avx512_bf16",
    "avx512_fp16",
    "avx_ne_convert",  # with AVX-VNNI-INT8: oneDNN's avx2_vnni_2, on which OpenVINO takes bf16 and f16
    "amx_tile",
    "amx_bf16",
    "amx_int8",
)

#: oneDNN ISA levels (ONEDNN_MAX_CPU_ISA values) and the features each one allows TensorFlow to use
_ONEDNN_LEVELS = (
    ("SSE41", set()),
    ("AVX", set()),
    ("AVX2", {"avx2", "fma"}),
    ("AVX2_VNNI", {"avx2", "fma", "avx_vnni"}),
    ("AVX2_VNNI_2", {"avx2", "fma", "avx_vnni", "avx_ne_convert"}),
    ("AVX512_CORE", {"avx2", "fma", "avx512f", "avx512bw"}),
    ("AVX512_CORE_VNNI", {"avx2", "fma", "avx512f", "avx512bw", "avx512_vnni"}),
    ("AVX512_CORE_BF16", {"avx2", "fma", "avx512f", "avx512bw", "avx512_vnni", "avx512_bf16"}),
    ("AVX10_1_512", {"avx2", "fma", "avx512f", "avx512bw", "avx512_vnni", "avx512_bf16", "avx512_fp16"}),
    (
        "AVX10_1_512_AMX",
        {"avx2", "fma", "avx512f", "avx512bw", "avx512_vnni", "avx512_bf16", "avx512_fp16"}
        | {"amx_tile", "amx_bf16", "amx_int8"},
    ),
)


@dataclass(frozen=True)
class CpuInfo:
    """Brand string and the normalised features of :data:`FEATURES` this CPU has."""

    brand: str
    arch: str
    features: frozenset[str]

    def has(self, feature: str) -> bool:
        return feature in self.features

    def describe(self) -> str:
        """``AMD EPYC (avx2, avx512f, avx512_vnni)``: what a warning line says this machine has."""
        return f"{self.brand} ({', '.join(f for f in FEATURES if f in self.features) or 'no AVX2'})"


def _normalise(flags) -> frozenset[str]:
    squashed = {str(f).lower().replace("_", "") for f in flags}
    return frozenset(f for f in FEATURES if f.replace("_", "") in squashed)


@functools.lru_cache(maxsize=1)
def cpu() -> CpuInfo:
    """This CPU, probed once per process with py-cpuinfo (falls back to /proc/cpuinfo without it)."""
    override = os.environ.get("ATTNKIT_CPU_FEATURES")
    if override is not None:
        return CpuInfo(
            f"{_proc_brand()} (features from ATTNKIT_CPU_FEATURES)", os.uname().machine, _normalise(override.split(","))
        )
    try:
        import cpuinfo

        info = cpuinfo.get_cpu_info()
        return CpuInfo(info.get("brand_raw") or "unknown CPU", info.get("arch", ""), _normalise(info.get("flags", [])))
    except Exception:  # py-cpuinfo missing or its CPUID probe failed: the kernel's view is still right
        return CpuInfo(_proc_brand(), os.uname().machine, _normalise(_proc_flags()))


def _proc_field(prefix: str) -> str | None:
    """The value of the first ``prefix`` line of /proc/cpuinfo (``flags``, ``model name``), if any."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(prefix):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def _proc_flags() -> list[str]:
    return (_proc_field("flags") or "").split()


def _proc_brand() -> str:
    return _proc_field("model name") or "unknown CPU"


def cpu_features() -> frozenset[str]:
    """Features the CPU reports (what onnxruntime's MLAS dispatches on)."""
    return cpu().features


def onednn_cap() -> tuple[str, set[str]] | None:
    """(level, allowed features) when ``ONEDNN_MAX_CPU_ISA`` caps oneDNN below ALL, else None."""
    value = os.environ.get("ONEDNN_MAX_CPU_ISA", os.environ.get("DNNL_MAX_CPU_ISA", "")).strip().upper()
    for level, allowed in _ONEDNN_LEVELS:
        if value == level:
            return level, allowed
    return None


def tensorflow_features() -> frozenset[str]:
    """Features TensorFlow's oneDNN kernels may use here: the CPU's, capped by ONEDNN_MAX_CPU_ISA."""
    cap = onednn_cap()
    return cpu_features() if cap is None else cpu_features() & frozenset(cap[1])


def cpu_flags() -> dict[str, bool]:
    """Every feature of :data:`FEATURES` with yes/no, for reports."""
    have = cpu_features()
    return {f: f in have for f in FEATURES}


def cpu_model() -> str:
    return cpu().brand


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


def gpu_sms() -> list[str]:
    """``["sm89"]``-style architecture names of the visible GPUs."""
    return [f"sm{g['compute_capability'].replace('.', '')}" for g in gpu_info() if g.get("compute_capability")]


@functools.cache
def openvino_compiles(precision: str) -> str | None:
    """The precision OpenVINO's CPU plugin computes in here when asked for ``precision`` (attnkit's name), or
    None where openvino is not installed.

    Asked of the plugin, not predicted from CPU flags: a one-MatMul model is compiled with the hint and the
    compiled model's ``INFERENCE_PRECISION_HINT`` read back, as the runner reads it after compiling a real IR.
    The plugin's rule moves with its releases and CPUs (2026.4 compiles an f16 hint to bf16 on AMD Zen 4 and
    Zen 5, which have AVX512_BF16 but no AVX512-FP16; to f32 on an AVX2-only EPYC), so no copy of it is kept here.
    The compile takes a few milliseconds and is done once per precision and process.
    """
    from .names import OPENVINO_HINTS, OPENVINO_RAN_AS

    try:
        import numpy as np
        import openvino as ov
        from openvino import opset13 as ops
    except ImportError:
        return None
    x = ops.parameter([1, 16], np.float32, name="x")
    model = ov.Model([ops.matmul(x, ops.constant(np.ones((16, 16), np.float32)), False, False)], [x])
    compiled = ov.Core().compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": OPENVINO_HINTS[precision]})
    took = compiled.get_property("INFERENCE_PRECISION_HINT").get_type_name()
    return OPENVINO_RAN_AS.get(took, took)
