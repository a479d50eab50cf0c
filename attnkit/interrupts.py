"""SIGTERM as an exception that cannot be lost.

The CLI's handler raises :class:`Terminated` (a KeyboardInterrupt, so ``finally`` blocks and staging
clean-ups run as for Ctrl-C) *and* records the request: libraries with bare ``except:`` clauses
(tf2onnx has several in its conversion loop) can swallow the exception, so :func:`check` raises it
again at attnkit's checkpoints: every progress line and the moment a staged export would be moved
into place. A library caller that never installs the handler is unaffected.

A process forked while the handler is installed starts with SIGTERM's default action (:func:`_default_in_child`).
"""

from __future__ import annotations

import os
import signal


class Terminated(KeyboardInterrupt):
    """SIGTERM (timeout, CI cancellation, docker stop) turned into an exception."""


_requested = False


def request(signum=signal.SIGTERM, _frame=None):
    """The SIGTERM handler: record the request, then raise."""
    global _requested
    _requested = True
    raise Terminated(signum)


def check() -> None:
    """Raise Terminated again if SIGTERM was requested (and perhaps swallowed) since :func:`reset`."""
    if _requested:
        raise Terminated(signal.SIGTERM)


def requested() -> bool:
    return _requested


def reset() -> None:
    global _requested
    _requested = False


def _default_in_child() -> None:
    """After a fork: SIGTERM back to its default action if attnkit's handler was inherited.

    A Python handler runs only when the process executes bytecode; a forked child stuck in native code
    never does, so SIGTERM could not stop it. Measured: OpenVINO's telemetry (on unless opted out) sends from
    a ``multiprocessing`` child forked from a worker thread; without network that child deadlocked in
    ``getaddrinfo`` on a glibc lock held at fork time, and ``attnkit export --format openvino`` then waited
    for it at exit forever, its ``terminate()`` ignored. With the default action, ``terminate()`` ends it."""
    try:
        if signal.getsignal(signal.SIGTERM) is request:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
    except ValueError:  # not the interpreter's main thread: leave it
        pass


os.register_at_fork(after_in_child=_default_in_child)
