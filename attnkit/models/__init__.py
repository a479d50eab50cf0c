"""Model building (presets) and loading (``.keras`` files): ``resolve(MODEL)`` -> (model, spec, info)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .presets import PRESETS, Preset, get_preset

__all__ = ["PRESETS", "Preset", "get_preset", "resolve", "is_keras_path"]


def is_keras_path(model: str) -> bool:
    """True when MODEL names a file rather than a preset."""
    return model.endswith(".keras") or "/" in model or Path(model).exists()


def resolve(model: str, seed: int = 0, imports: tuple[str, ...] = (), unsafe: bool = False):
    """Turn a preset name or ``.keras`` path into ``(keras.Model, ExportSpec, info)``.

    Args:
        model: preset name (see ``attnkit models``) or path of a ``.keras`` file.
        seed: weight-initialisation seed for presets.
        imports: modules to import first so custom layers can be deserialised.
        unsafe: allow unsafe deserialisation (Lambda layers); off by default.

    Returns:
        The model, its ExportSpec and a JSON-able dict describing where it came from.
    """
    from .loading import import_modules, load_keras_file, spec_from_model

    import_modules(imports)
    if is_keras_path(model):
        keras_model = load_keras_file(model, unsafe=unsafe)
        name = Path(model).stem
        info: dict[str, Any] = {
            "name": name,
            "source": "path",
            "path": str(Path(model).resolve()),
            "imports": list(imports),
            "config": {},
        }
        return keras_model, spec_from_model(keras_model, name), info
    preset = get_preset(model)
    keras_model = preset.build(seed)
    info = {
        "name": preset.name,
        "source": "preset",
        "family": preset.family,
        "seed": seed,
        "imports": list(imports),
        "config": dict(preset.config),
    }
    return keras_model, preset.spec(), info
