"""The serving virtualenv: Triton's own server binary (from the ``nvidia-pytriton`` wheel) and what the
stand-in backends import (onnxruntime, TensorFlow), with numpy < 2 as pytriton requires.

It lives beside the project's environment (numpy 2 there), is built by ``attnkit serve setup`` (which
``make serving`` calls) from the pins in ``constraints.txt`` next to this file, and is found again by
:meth:`ServingEnv.locate`. A ``attnkit-serving.json`` marker is written last: a half-built venv has no
marker and is rebuilt from scratch.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import sysconfig
from dataclasses import dataclass
from pathlib import Path

from ..core.errors import AttnkitError

CONSTRAINTS = Path(__file__).with_name("constraints.txt")
MARKER = "attnkit-serving.json"
BASE_PACKAGES = ("nvidia-pytriton", "onnxruntime", "openvino", "numpy<2", "kserve", "kubernetes")


class ServingEnvError(AttnkitError):
    """The serving virtualenv is missing, half-built or cannot be built here."""


def _constraints_digest() -> str:
    return hashlib.sha256(CONSTRAINTS.read_bytes()).hexdigest()[:16]


def default_path() -> Path:
    """``$ATTNKIT_SERVING_VENV``, else ``.venv-serving`` of the source checkout attnkit runs from (the
    make targets' location), else ``~/.cache/attnkit/venv-serving``."""
    if os.environ.get("ATTNKIT_SERVING_VENV"):
        return Path(os.environ["ATTNKIT_SERVING_VENV"]).absolute()
    checkout = Path(__file__).resolve().parents[2]
    if (checkout / "Makefile").is_file() and (checkout / "attnkit").is_dir():
        return checkout / ".venv-serving"
    return Path.home() / ".cache" / "attnkit" / "venv-serving"


@dataclass(frozen=True)
class ServingEnv:
    root: Path
    info: dict

    @property
    def python(self) -> Path:
        return self.root / "bin" / "python"

    @property
    def site(self) -> Path:
        return Path(self.info["site_packages"])

    @property
    def tritonserver(self) -> Path:
        return self.site / "pytriton" / "tritonserver" / "bin" / "tritonserver"

    @property
    def python_backend(self) -> Path:
        """pytriton's build of Triton's Python backend: libtriton_python.so + triton_python_backend_utils.py."""
        return self.site / "pytriton" / "tritonserver" / "backends" / "python"

    @property
    def stub(self) -> Path:
        """The Python backend's stub process, built for this venv's Python version."""
        return (
            self.site
            / "pytriton"
            / "tritonserver"
            / "python_backend_stubs"
            / self.info["python"]
            / ("triton_python_backend_stub")
        )

    def library_path(self) -> str:
        """LD_LIBRARY_PATH for tritonserver and the stub: pytriton's bundled libraries and the libpython the
        stub embeds (it must be this venv's Python's, not another 3.11 the loader finds first)."""
        parts = [self.info["libpython_dir"], str(self.site / "nvidia_pytriton.libs")]
        if os.environ.get("LD_LIBRARY_PATH"):
            parts.append(os.environ["LD_LIBRARY_PATH"])
        return ":".join(parts)

    def environment(self) -> dict[str, str]:
        """The server's environment: the stub finds this venv's site-packages through ``python3`` on PATH."""
        env = dict(os.environ)
        env["LD_LIBRARY_PATH"] = self.library_path()
        env["PATH"] = f"{self.root / 'bin'}:{env.get('PATH', '')}"
        env.pop("PYTHONPATH", None)  # the project's packages (numpy 2) must not leak into the stub
        env.pop("PYTHONHOME", None)
        return env

    @classmethod
    def locate(cls, path: str | Path | None = None) -> ServingEnv:
        """The built serving venv at ``path`` (default :func:`default_path`), or a one-line error with the fix."""
        root = Path(path).absolute() if path else default_path()
        marker = root / MARKER
        if not marker.is_file():
            raise ServingEnvError(
                f"no serving environment at `{root}`.",
                flag="--venv",
                hint="Build it with `make serving` (or `attnkit serve setup`), or point ATTNKIT_SERVING_VENV at one.",
            )
        env = cls(root, json.loads(marker.read_text()))
        missing = [
            p for p in (env.tritonserver, env.stub, env.python_backend / "libtriton_python.so") if not p.exists()
        ]
        if missing:
            raise ServingEnvError(
                f"the serving environment at `{root}` is incomplete (`{missing[0]}` is missing).",
                flag="--venv",
                hint="Rebuild it with `attnkit serve setup --force`.",
            )
        return env


def _libpython_dir() -> str:
    """The directory holding the shared libpython of the interpreter that builds the venv."""
    libdir = sysconfig.get_config_var("LIBDIR") or ""
    name = f"libpython{sys.version_info.major}.{sys.version_info.minor}.so.1.0"
    if not (Path(libdir) / name).exists():
        raise ServingEnvError(
            f"{sys._base_executable} has no shared {name} (looked in `{libdir}`); Triton's Python backend stub "
            "embeds it.",
            hint="Use a Python built with --enable-shared (pyenv: PYTHON_CONFIGURE_OPTS=--enable-shared).",
        )
    return libdir


def build(
    path: str | Path | None = None, *, tensorflow: bool = True, force: bool = False, say=lambda _m: None
) -> ServingEnv:
    """Create (or reuse) the serving venv. Reused when its marker names the same pins and TensorFlow choice."""
    root = Path(path).absolute() if path else default_path()
    digest = _constraints_digest()
    marker = root / MARKER
    if marker.is_file() and not force:
        info = json.loads(marker.read_text())
        if info.get("constraints") == digest and (info.get("tensorflow") or not tensorflow):
            return ServingEnv.locate(root)
    libpython_dir = _libpython_dir()
    if root.exists():
        if not (root / "pyvenv.cfg").exists() and any(root.iterdir()):
            raise ServingEnvError(
                f"`{root}` exists and is not a virtualenv.", flag="--venv", hint="Choose another path."
            )
        shutil.rmtree(root)
    base = getattr(sys, "_base_executable", sys.executable)
    say(f"creating {root} with {base}")
    _run([base, "-m", "venv", str(root)], "creating the virtualenv")
    packages = list(BASE_PACKAGES) + (["tensorflow"] if tensorflow else [])
    say(f"pip install {' '.join(packages)} (pins: {CONSTRAINTS.name})")
    pip = [str(root / "bin" / "python"), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    _run([*pip, "-c", str(CONSTRAINTS), *packages], "pip install")
    probe = (
        "import json, site, sys, importlib.metadata as m\n"
        "v = lambda p: (m.version(p) if p in {d.metadata['Name'].lower() for d in m.distributions()} else None)\n"
        "print(json.dumps({'python': f'{sys.version_info.major}.{sys.version_info.minor}', "
        "'site_packages': site.getsitepackages()[0], 'pytriton': v('nvidia-pytriton'), "
        "'onnxruntime': v('onnxruntime'), 'openvino': v('openvino'), 'tensorflow': v('tensorflow'), 'numpy': v('numpy'), "
        "'kserve': v('kserve'), 'kubernetes': v('kubernetes')}))"
    )
    out = _run([str(root / "bin" / "python"), "-c", probe], "probing the virtualenv")
    info = {**json.loads(out.strip().splitlines()[-1]), "libpython_dir": libpython_dir, "constraints": digest}
    tmp = marker.with_suffix(".tmp")
    tmp.write_text(json.dumps(info, indent=2))
    tmp.replace(marker)
    return ServingEnv.locate(root)


def _run(cmd: list[str], what: str) -> str:
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        lines = [ln for ln in (proc.stderr or proc.stdout).splitlines() if ln.strip() and "is ignored" not in ln]
        last = lines[-1].strip() if lines else f"exit code {proc.returncode}"
        raise ServingEnvError(f"{what} failed: {last}", hint="The serving environment needs PyPI (or a mirror).")
    return proc.stdout
