"""A server process attnkit starts: its own process group and log file, readiness by polling, a one-line
error carrying the server's last log line when it never becomes ready, dies or answers an error, and a
stop by PID (SIGTERM to the group, SIGKILL after a grace period) that leaves no process behind.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

from ..core.errors import AttnkitError

LOOPBACK = "127.0.0.1"


class ServerError(AttnkitError):
    """A server attnkit started (or was pointed at) failed: never ready, died, or answered an error."""

    exit_code = 1


def free_port() -> int:
    """A port on 127.0.0.1 nobody listens on now (the server binds it a moment later)."""
    with socket.socket() as s:
        s.bind((LOOPBACK, 0))
        return s.getsockname()[1]


def http_json(method: str, url: str, body: dict | bytes | None = None, timeout: float = 30.0) -> tuple[int, dict]:
    """One request on loopback; returns (status, decoded JSON body or {}); connection errors raise OSError."""
    data = json.dumps(body).encode() if isinstance(body, dict) else body
    req = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            raw, status = r.read(), r.status
    except urllib.error.HTTPError as e:
        raw, status = e.read(), e.code
    try:
        return status, json.loads(raw) if raw else {}
    except ValueError:
        return status, {"error": raw.decode(errors="replace")[:500]}


class ServerProcess:
    """One server subprocess. Use as a context manager, or call :meth:`stop` (idempotent)."""

    what = "server"

    def __init__(self, cmd: list[str], env: dict[str, str] | None = None, log: Path | None = None):
        self.cmd, self.env = cmd, env
        #: what this object created and :meth:`close` removes (nothing of the caller's)
        self.owned: list[Path] = []
        if log:
            self.log = Path(log)
        else:
            fd, name = tempfile.mkstemp(prefix="attnkit-server-", suffix=".log")
            os.close(fd)
            self.log = Path(name)
            self.owned.append(self.log)
        self.proc: subprocess.Popen | None = None

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def start(self) -> ServerProcess:
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                self.cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=self.env,
                start_new_session=True,  # its own process group: stop() reaches the children (Triton's stubs)
                preexec_fn=_die_with_parent,
            )  # fmt: skip
        return self

    def last_log_line(self) -> str:
        try:
            lines = [ln.strip() for ln in self.log.read_text(errors="replace").splitlines() if ln.strip()]
        except OSError:
            return "(no log)"
        # Triton ends with a table of model states; its last message line says more than a border line.
        lines = [ln for ln in lines if not set(ln) <= set("+-|= ")]
        if not lines:
            return "(the log is empty)"
        # Triton's last words after a failed load are generic ("failed to load all models"): its last error
        # line (E<date> ...) is the one that names the model and the reason.
        errors = [ln for ln in lines if re.match(r"^E\d{4} ", ln) and "CudaDriverHelper" not in ln]
        last = lines[-1][:300]
        if errors and errors[-1][:300] != last:
            return f"{errors[-1][:500]} … {last}"
        return last

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def fail(self, problem: str) -> ServerError:
        """The one-line error of this server: the problem, then the server's own last log line."""
        return ServerError(f"{self.what} (pid {self.pid}) {problem}; its last log line: {self.last_log_line()}")

    def check_alive(self) -> None:
        if self.proc is not None and self.proc.poll() is not None:
            error = self.fail(f"exited with code {self.proc.returncode}")
            self.close()  # its stubs or children may outlive it; the error already quotes the log
            raise error

    def wait_until(self, ready, timeout: float, interval: float = 0.25) -> None:
        """Poll ``ready()`` (True when ready; connection errors count as not yet) until ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            self.check_alive()
            try:
                if ready():
                    return
            except OSError:
                pass
            if time.monotonic() > deadline:
                error = self.fail(f"was not ready after {timeout:g} s")
                self.close()
                raise error
            time.sleep(interval)

    def stop(self, grace: float = 10.0) -> None:
        """SIGTERM to the process group, SIGKILL to what is left after ``grace`` seconds; reaps the child."""
        if self.proc is None:
            return
        pgid = self.proc.pid
        for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
            try:
                os.killpg(pgid, sig)
            except ProcessLookupError:
                break
            deadline = time.monotonic() + wait
            while time.monotonic() < deadline and group_members(pgid):
                try:
                    self.proc.wait(timeout=0.1)
                except subprocess.TimeoutExpired:
                    pass
            if not group_members(pgid):
                break
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass

    def close(self) -> None:
        """Stop the server, then remove what this object created in TMPDIR (its log, its work directory).
        Errors already quote the log's last line, so nothing is lost with it."""
        self.stop()
        for path in self.owned:
            if path.is_dir():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)
        self.owned = []

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False


def _die_with_parent() -> None:
    """In the child, before exec: ask the kernel for SIGTERM when the parent dies, even by SIGKILL (Linux's
    PR_SET_PDEATHSIG, as pytriton's server does), so no server outlives the attnkit that started it. ctypes by
    hand: the standard library has no prctl."""
    import ctypes

    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGTERM), 0, 0, 0)  # 1 = PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # not Linux: the parent's own stop() is all there is
        pass


def live_processes():
    """``(pid, name, the stat fields after the name)`` of every live (not zombie) process, from /proc."""
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            head, tail = (d / "stat").read_text().rsplit(")", 1)
        except (OSError, ValueError):
            continue
        fields = tail.split()
        if fields and fields[0] != "Z":
            yield int(d.name), head.split("(", 1)[-1], fields


def group_members(pgid: int) -> list[int]:
    """Live (not zombie) processes of a process group."""
    return [pid for pid, _, fields in live_processes() if int(fields[2]) == pgid]
