"""SavedModel export in TF Serving's versioned layout (``savedmodel/<version>/``).

Uses Keras's own ``keras.export.ExportArchive`` (what ``model.export()`` does) so the variables of
the traced model are tracked and saved; the ``serving_default`` signature's input and output
names are the model's (the ``tf.TensorSpec`` names and the keys of the returned dict).
"""

from __future__ import annotations

from pathlib import Path


def export_savedmodel(fn, path: Path, extra: dict | None = None) -> None:
    """Write the traced function ``fn`` (from :func:`attnkit.tracing.trace`) as a SavedModel at ``path``,
    with ``extra`` signatures (name -> traced function over the same model) beside ``serving_default``."""
    import keras

    archive = keras.export.ExportArchive()
    archive.track(fn.keras_model)
    archive.add_endpoint("serving_default", fn)
    for name, other in (extra or {}).items():
        archive.add_endpoint(name, other)
    archive.write_out(str(path), verbose=False)
