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


def _layers_known_to_keras() -> None:
    """After ``import attnkit``, ``keras.models.load_model("…/model.keras")`` finds attnkit's layers, as keras-hub's
    do after ``import keras_hub``: Keras imports a saved class's module only for its own packages, so attnkit's
    registered layers must be imported when Keras is. Keras already loaded: import them now; not yet: once
    Keras's own module has run (a one-shot import hook; ``import attnkit`` itself stays free of Keras).

    Where Keras is first imported by attnkit's own layer modules (``from attnkit.models.attention import ...`` in a
    fresh process), they are mid-import and register themselves: importing them again from the hook failed with a
    circular ImportError (found 2026-12-06; ``test_house`` imports each module first in a fresh process)."""
    import importlib
    import sys

    layers = "attnkit.models.transformer"  # imports attnkit.models.attention: every registered layer
    if "keras" in sys.modules:
        importlib.import_module(layers)
        return

    class AfterKeras:  # a meta path finder by protocol: importlib.abc alone costs 20 ms at every CLI start
        def find_spec(self, name, path=None, target=None):
            if name != "keras":
                return None
            import importlib.util

            sys.meta_path.remove(self)
            spec = importlib.util.find_spec(name)
            if spec is None or spec.loader is None:
                return spec
            run = spec.loader.exec_module

            def exec_module(module):
                run(module)
                own = [sys.modules.get(m) for m in ("attnkit.models.attention", layers)]
                if not any(m is not None and getattr(m.__spec__, "_initializing", False) for m in own):
                    importlib.import_module(layers)

            spec.loader.exec_module = exec_module
            return spec

    sys.meta_path.insert(0, AfterKeras())


_layers_known_to_keras()

__all__ = ["__version__", "export", "verify", "bench", "list_models"]


def export(*args, **kwargs):
    """See :func:`attnkit.orchestration.export.export`."""
    from .orchestration.export import export as _export

    return _export(*args, **kwargs)


def verify(*args, **kwargs):
    """See :func:`attnkit.checks.agreement.verify`."""
    from .checks.agreement import verify as _verify

    return _verify(*args, **kwargs)


def bench(*args, **kwargs):
    """See :func:`attnkit.orchestration.resolve.bench` (a preset, .keras file or export directory)."""
    from .orchestration.resolve import bench as _bench

    return _bench(*args, **kwargs)


def list_models(seq: int = 128) -> list[dict]:
    """See :func:`attnkit.models.presets.list_models`."""
    from .models.presets import list_models as _list_models

    return _list_models(seq)
