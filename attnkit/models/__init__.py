"""Model building (presets) and loading (``.keras`` files): ``resolve(MODEL)`` -> (model, spec, info)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..core.errors import AttnkitError
from ..core.names import MANIFEST
from .presets import PRESETS, Preset, get_preset

__all__ = ["PRESETS", "Preset", "get_preset", "resolve", "is_keras_path", "classify", "ModelRef"]


def is_keras_path(model: str) -> bool:
    """True when MODEL names a file rather than a preset."""
    return model.endswith(".keras") or "/" in model or Path(model).exists()


@dataclass(frozen=True)
class ModelRef:
    """What a MODEL / MODEL_OR_DIR argument names: a preset, a ``.keras`` file or an export directory."""

    text: str
    kind: str  # "preset" | "keras" | "export"

    @property
    def name(self) -> str:
        """Default artifact name: the preset, the file's stem, or the export directory's name."""
        return (
            self.text
            if self.kind == "preset"
            else Path(self.text).stem
            if self.kind == "keras"
            else Path(self.text).name
        )

    @property
    def is_export(self) -> bool:
        return self.kind == "export"


def classify(model: str, flag: str = "MODEL_OR_DIR") -> ModelRef:
    """The one place a MODEL_OR_DIR string is classified (export, bench, attention, run all ask here).

    Raises:
        AttnkitError: a directory that is not an attnkit export (names ``flag``).
    """
    path = Path(model)
    if (path / MANIFEST).is_file():
        return ModelRef(model, "export")
    if path.is_dir():
        raise AttnkitError(
            f"`{model}` is a directory without {MANIFEST}.",
            flag=flag,
            hint="Give a preset name, a .keras file or an attnkit export directory.",
        )
    return ModelRef(model, "keras" if is_keras_path(model) else "preset")


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
