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
