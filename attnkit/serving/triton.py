"""Triton Inference Server, the real binary (2.51, from the ``nvidia-pytriton`` wheel), on a model
repository as ``attnkit package`` wrote it.

What is Triton's own: the server, its config parsing, model management, dynamic batcher, warm-up, HTTP and
gRPC (KServe v2) endpoints and the Python backend. What is a stand-in: the two backends it loads models
with. Triton's C++ onnxruntime and tensorflow backends are in no package these machines can install, so a
backend directory holds Python-based backends *named* ``onnxruntime`` and ``tensorflow`` (attnkit's
``serving/backends``). Triton maps ``platform: onnxruntime_onnx`` / ``tensorflow_savedmodel`` to those
names, so the repository is loaded unchanged.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from .env import ServingEnv
from .process import LOOPBACK, ServerError, ServerProcess, free_port, http_json, live_processes

BACKENDS = Path(__file__).with_name("backends")
STANDINS = ("onnxruntime", "tensorflow", "openvino")

#: Triton's Python backend, which runs the stand-ins, makes one directory per backend it initialises with
#: ``mkdtemp("/tmp/python_env_XXXXXX")`` (a fixed template: TMPDIR is not read) and removes it only when the
#: server shuts down cleanly. tritonserver installs its SIGTERM handler only once its start-up models have
#: loaded, so a server stopped while it loads (not ready in time) or one that died leaves them behind.
#: No Triton option moves or removes them, hence :func:`python_env_litter` by hand.
PYTHON_ENV_DIR, PYTHON_ENV_PREFIX = Path("/tmp"), "python_env_"


def backend_directory(env: ServingEnv, into: Path) -> Path:
    """``into/python`` (pytriton's Python backend and the stub for the venv's Python) and one directory per
    stand-in holding its ``model.py`` and the shared ``attnkit_standin.py``."""
    python = into / "python"
    python.mkdir(parents=True, exist_ok=True)
    for f in ("libtriton_python.so", "triton_python_backend_utils.py"):
        shutil.copy2(env.python_backend / f, python / f)
    shutil.copy2(env.stub, python / "triton_python_backend_stub")
    for name in STANDINS:
        (into / name).mkdir(exist_ok=True)
        shutil.copy2(BACKENDS / name / "model.py", into / name / "model.py")
        shutil.copy2(BACKENDS / "attnkit_standin.py", into / name / "attnkit_standin.py")
    return into


class TritonServer(ServerProcess):
    """``tritonserver`` on 127.0.0.1 with explicit model control.

    Args:
        repository: the model repository.
        models: models to load at start-up (default: all, ``--load-model=*``); none with ``()``.
        http_port, grpc_port, metrics_port: 0 picks free ports.
        env: the serving venv (default :meth:`ServingEnv.locate`).
    """

    what = "tritonserver"

    def __init__(
        self,
        repository: str | Path,
        *,
        models: tuple[str, ...] | None = None,
        http_port: int = 0,
        grpc_port: int = 0,
        metrics_port: int = 0,
        env: ServingEnv | None = None,
        log: Path | None = None,
        exit_on_error: bool = True,
    ):
        self.env_ = env or ServingEnv.locate()
        self.repository = Path(repository).absolute()
        check_repository(self.repository)
        self.workdir = Path(tempfile.mkdtemp(prefix="attnkit-triton-"))
        try:
            backends = backend_directory(self.env_, self.workdir / "backends")
        except BaseException:
            shutil.rmtree(self.workdir, ignore_errors=True)
            raise
        self.http_port = http_port or free_port()
        self.grpc_port = grpc_port or free_port()
        self.metrics_port = metrics_port or free_port()
        loads = ["*"] if models is None else list(models)
        cmd = [
            str(self.env_.tritonserver),
            f"--model-repository={self.repository}",
            f"--backend-directory={backends}",
            "--model-control-mode=explicit",
            *[f"--load-model={m}" for m in loads],
            f"--http-address={LOOPBACK}",
            f"--grpc-address={LOOPBACK}",
            f"--metrics-address={LOOPBACK}",
            f"--http-port={self.http_port}",
            f"--grpc-port={self.grpc_port}",
            f"--metrics-port={self.metrics_port}",
            f"--exit-on-error={'true' if exit_on_error else 'false'}",
            "--exit-timeout-secs=5",
            "--allow-metrics=false",
        ]
        super().__init__(cmd, env=self.env_.environment(), log=log or self.workdir / "tritonserver.log")
        self.owned.append(self.workdir)  # close() removes the backends and the log: nothing left in TMPDIR
        self._env_before: set[Path] | None = None  # the Python backend's directories at the launch

    @property
    def http_url(self) -> str:
        return f"http://{LOOPBACK}:{self.http_port}"

    @property
    def grpc_url(self) -> str:
        return f"{LOOPBACK}:{self.grpc_port}"

    def ready(self) -> bool:
        status, _ = http_json("GET", f"{self.http_url}/v2/health/ready", timeout=2)
        return status == 200

    def start(self, timeout: float = 120.0) -> TritonServer:
        """Start and wait until the server and every model loaded at start-up are ready."""
        self._env_before = python_env_dirs()  # stop() removes only what appeared after this
        super().start()
        self.wait_until(self.ready, timeout)
        return self

    def index(self) -> list[dict]:
        """The repository index: ``[{"name", "version", "state", "reason"}]`` for every model in it."""
        self.check_alive()
        status, body = http_json("POST", f"{self.http_url}/v2/repository/index", b"{}")
        if status != 200:
            raise self.fail(f"answered the repository index with HTTP {status}: {body}")
        return body

    def load(self, model: str, config: str | None = None) -> None:
        """Load (or reload) one model, with ``config`` (its ModelConfig as JSON) instead of its config.pbtxt when
        given (Triton's load API override: the repository is not touched); Triton's refusal becomes a
        ServerError carrying its message."""
        self.check_alive()
        payload = {"parameters": {"config": config}} if config else b"{}"
        status, body = http_json("POST", f"{self.http_url}/v2/repository/models/{model}/load", payload, timeout=300)
        if status != 200:  # the Python backend appends the stub's traceback ("At: ..."): keep Triton's first line
            error = str(body.get("error", body)).strip().splitlines()[0]
            raise ServerError(f"tritonserver refused to load `{model}`: {error}")

    def unload(self, model: str) -> None:
        http_json("POST", f"{self.http_url}/v2/repository/models/{model}/unload", b"{}")

    def stop(self, grace: float = 10.0) -> None:
        """Stop by PID, then remove the Python backend's directories this server left (see
        :data:`PYTHON_ENV_PREFIX`); :meth:`close` (also ``with``) then removes the work directory, log included."""
        super().stop(grace)
        before, self._env_before = self._env_before, None
        if before is not None:
            for d in python_env_litter(before):
                try:
                    d.rmdir()  # empty ones only: attnkit's configs set no EXECUTION_ENV_PATH to unpack there
                except OSError:
                    pass


def python_env_dirs() -> set[Path]:
    return set(PYTHON_ENV_DIR.glob(f"{PYTHON_ENV_PREFIX}*"))


def tritonservers() -> list[int]:
    """PIDs of the live tritonserver processes on this machine."""
    return [pid for pid, name, _ in live_processes() if name == "tritonserver"]


def python_env_litter(before: set[Path]) -> set[Path]:
    """The Python backend's directories made since ``before`` (:func:`python_env_dirs` at this server's launch),
    called once this server is gone: they are its own (or a server's that died meanwhile) only when no other
    tritonserver is alive, since one that is can initialise a stand-in backend at any load. Otherwise none:
    nothing is taken from a live server."""
    return set() if tritonservers() else python_env_dirs() - before


def check_repository(path: Path) -> None:
    """Refuse what tritonserver would start on and serve nothing from: a directory with no model config.

    Raises:
        AttnkitError: not a directory, an attnkit export directory (package it first), or no
            ``<model>/config.pbtxt`` in it. The error names ``REPOSITORY``.
    """
    from ..core.errors import AttnkitError
    from ..core.names import MANIFEST

    path = Path(path)
    if not path.is_dir():
        raise AttnkitError(f"`{path}` is not a directory.", flag="REPOSITORY", hint="Give a Triton model repository.")
    if (path / MANIFEST).is_file():
        packaged = path / "triton"
        hint = (f"Serve its repository: attnkit serve triton {packaged}" if (packaged / ".").is_dir() and any(
            (d / "config.pbtxt").is_file() for d in packaged.iterdir()) else
            f"Package it first: attnkit package {path} --triton {packaged}")  # fmt: skip
        raise AttnkitError(f"`{path}` is an attnkit export directory, not a Triton model repository.",
                           flag="REPOSITORY", hint=hint)  # fmt: skip
    if not any((d / "config.pbtxt").is_file() for d in path.iterdir() if d.is_dir()):
        raise AttnkitError(
            f"`{path}` holds no model configuration (no <model>/config.pbtxt): tritonserver would serve nothing.",
            flag="REPOSITORY",
            hint="Give the repository `attnkit package DIR --triton REPO` wrote.",
        )
