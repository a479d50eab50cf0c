"""SIGTERM as an exception that cannot be lost.

The CLI's handler raises :class:`Terminated` (a KeyboardInterrupt, so ``finally`` blocks and staging
clean-ups run as for Ctrl-C) *and* records the request: libraries with bare ``except:`` clauses
(tf2onnx has several in its conversion loop) can swallow the exception, so :func:`check` raises it
again at attnkit's checkpoints: every progress line and the moment a staged export would be moved
into place. A library caller that never installs the handler is unaffected.
"""

from __future__ import annotations

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
