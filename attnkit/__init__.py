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

__version__ = "0.1.0"

__all__ = ["__version__", "export", "verify", "bench", "list_models"]


def export(*args, **kwargs):
    """See :func:`attnkit.export_api.export`."""
    from .export_api import export as _export

    return _export(*args, **kwargs)


def verify(*args, **kwargs):
    """See :func:`attnkit.verify.verify`."""
    from .verification import verify as _verify

    return _verify(*args, **kwargs)


def bench(*args, **kwargs):
    """See :func:`attnkit.benchmark.run.bench`."""
    from .benchmark.run import bench as _bench

    return _bench(*args, **kwargs)


def list_models(seq: int = 128) -> list[dict]:
    """One dict per preset: name, family, description, dims, parameters and FLOPs per sequence."""
    from .models.presets import PRESETS

    rows = []
    for p in PRESETS.values():
        c = p.config
        layers = c.get("num_layers") or (f"{c['encoder_layers']}+{c['decoder_layers']}" if "encoder_layers" in c else 1)
        rows.append(
            {
                "name": p.name,
                "family": p.family,
                "description": p.description,
                "layers": layers,
                "d_model": c["d_model"],
                "heads": c["num_heads"],
                "ffn": c.get("ffn_dim"),
                "params": p.params(),
                "flops_per_seq": p.flops(seq),
                "seq": seq,
            }
        )
    return rows
