"""attnkit: export, verify and benchmark Keras attention models.

The public API is lazy: importing ``attnkit`` imports neither TensorFlow nor onnxruntime.

Example:
    >>> import attnkit
    >>> result = attnkit.export("encoder-tiny", out="artifacts/encoder-tiny")
    >>> report = attnkit.verify("artifacts/encoder-tiny")
    >>> report.ok
    True
"""

from __future__ import annotations

import os

# TensorFlow logs CUDA probing errors on CPU-only machines at level 2; users can lower this.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from ._version import __version__

__all__ = ["__version__", "export", "verify", "bench", "list_models"]


def export(*args, **kwargs):
    """See :func:`attnkit.export_api.export`."""
    from .export_api import export as _export

    return _export(*args, **kwargs)


def verify(*args, **kwargs):
    """See :func:`attnkit.verification.verify`."""
    from .verification import verify as _verify

    return _verify(*args, **kwargs)


def bench(*args, **kwargs):
    """See :func:`attnkit.benchmark.run.bench`."""
    from .benchmark.run import bench as _bench

    return _bench(*args, **kwargs)


def list_models(seq: int = 128) -> list[dict]:
    """See :func:`attnkit.models.presets.list_models`."""
    from .models.presets import list_models as _list_models

    return _list_models(seq)
