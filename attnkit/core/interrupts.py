"""SIGTERM and Ctrl-C as exceptions that cannot be lost.

The CLI's handlers raise :class:`Terminated` (a KeyboardInterrupt, so ``finally`` blocks and staging
clean-ups run as for Ctrl-C) or KeyboardInterrupt *and* record the request: libraries with bare ``except:``
clauses (tf2onnx has several in its conversion loop) can swallow the exception, and one raised inside a
``__del__`` (TensorFlow's ``AtomicFunction.__del__``, measured: the export then went on and exited 0) is only
printed by Python as "Exception ignored", so :func:`check` raises it again at attnkit's checkpoints: every
progress line and the moment a staged export would be moved into place. A library caller that never
installs the handlers is unaffected.

A process forked while the handler is installed starts with SIGTERM's default action (:func:`_default_in_child`).
"""

from __future__ import annotations

import os
import signal

#: what the CLI says when Ctrl-C ends a command
INTERRUPTED = "Error: interrupted; nothing was left half-written."


class Terminated(KeyboardInterrupt):
    """SIGTERM (timeout, CI cancellation, docker stop) turned into an exception."""


_requested = False
_interrupted = False


def request(signum=signal.SIGTERM, _frame=None):
    """The SIGTERM handler: record the request, then raise."""
    global _requested
    _requested = True
    raise Terminated(signum)


def interrupt(_signum=signal.SIGINT, _frame=None):
    """The SIGINT handler: record the interrupt, then raise."""
    global _interrupted
    _interrupted = True
    raise KeyboardInterrupt


def check() -> None:
    """Raise again a SIGTERM or Ctrl-C received (and perhaps swallowed) since :func:`reset`."""
    if _requested:
        raise Terminated(signal.SIGTERM)
    if _interrupted:
        raise KeyboardInterrupt


def requested() -> bool:
    return _requested


def interrupted() -> bool:
    return _interrupted


def reset() -> None:
    global _requested, _interrupted
    _requested = _interrupted = False


def quiet_unraisable(hook):
    """A ``sys.unraisablehook`` that, once an interrupt was recorded (by :func:`interrupt` or :func:`request`;
    :func:`check` raises it again), says nothing of what a finaliser raises: the interrupt itself raised inside a
    ``__del__``, or an object the interrupt left half-built whose ``__del__`` then fails (measured in CI at 29861af:
    Ctrl-C inside TensorFlow's ``ApiDefMap.__init__`` printed "Exception ignored in ApiDefMap.__del__ ...
    AttributeError: no attribute '_api_def_map'" under the one-line error). Without an interrupt, every
    unraisable exception is reported as Python reports it."""

    def unraisable(info):
        if not (_interrupted or _requested):
            hook(info)

    return unraisable


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
