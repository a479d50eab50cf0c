"""The environment a benchmark ran in: CPU, memory, OS, versions, threads, git commit."""

from __future__ import annotations

import os
import platform
import subprocess
from pathlib import Path

from ..core.machine import cpu_flags, cpu_model
from ..exporters.manifest import library_versions


def _memory_gib() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 2**20, 1)
    except OSError:
        pass
    return None


def git_commit() -> str | None:
    """The commit of the attnkit checkout (with ``+dirty`` when it has local changes), if any."""
    root = Path(__file__).resolve().parents[2]
    try:
        sha = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5)
        if sha.returncode != 0:
            return None
        dirty = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=5,
        ).stdout.strip()
        return sha.stdout.strip() + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return None


def huge_pages() -> str:
    from ..core.hugepages import unavailable

    reason = unavailable()
    return f"4 KiB pages ({reason})" if reason else "2 MiB pages for loaded weights (MADV_COLLAPSE)"


def collect(threads: dict | None = None) -> dict:
    """A JSON-able description of this machine and software stack."""
    from .._version import __version__

    return {
        "cpu": cpu_model(),
        "cpu_flags": cpu_flags(),
        "cores": os.cpu_count(),
        "memory_gib": _memory_gib(),
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "attnkit": __version__,
        "git_commit": git_commit(),
        "versions": library_versions(("tensorflow", "keras", "tf2onnx", "onnx", "onnxruntime", "numpy")),
        "threads": threads or {},
        # how runners' weights are paged (attnkit.core.hugepages): "2 MiB pages (MADV_COLLAPSE)" or why not
        "huge_pages": huge_pages(),
        "env_vars": {
            k: os.environ[k]
            for k in ("OMP_NUM_THREADS", "TF_ENABLE_ONEDNN_OPTS", "TF_NUM_INTRAOP_THREADS", "ATTNKIT_HUGE_PAGES")
            if k in os.environ
        },
    }
