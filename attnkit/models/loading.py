"""Loading user models saved as ``.keras`` and deriving their ExportSpec from ``model.inputs``."""

from __future__ import annotations

import importlib
import importlib.util
import sys
import zipfile
from pathlib import Path

from ..core.errors import AttnkitError, ModelError
from ..core.spec import ExportSpec, ShapeRange, TensorSpec


def import_modules(modules: tuple[str, ...] | list[str]) -> None:
    """Import modules (dotted names or ``.py`` paths) so the custom layers they register load.

    Raises:
        ModelError: a module cannot be imported; names ``--import``.
    """
    for mod in modules:
        try:
            if mod.endswith(".py"):
                path = Path(mod).resolve()
                spec = importlib.util.spec_from_file_location(path.stem, path)
                if spec is None or not path.is_file():
                    raise FileNotFoundError(mod)
                module = importlib.util.module_from_spec(spec)
                sys.modules[path.stem] = module
                spec.loader.exec_module(module)
            else:
                importlib.import_module(mod)
        except Exception as e:  # any failure of user code is reported the same way
            raise ModelError(
                f"cannot import `{mod}` ({type(e).__name__}: {e}).",
                flag="--import",
                hint="Give an importable module name or the path of a .py file.",
            ) from None


def load_keras_file(path: str | Path, unsafe: bool = False):
    """Load a ``.keras`` file with Keras ``safe_mode`` on unless ``unsafe``.

    Raises:
        ModelError: missing, not a Keras file, corrupt, needs ``--import`` or ``--unsafe``.
    """
    path = Path(path)
    if not path.exists():
        raise ModelError(f"file `{path}` does not exist.", flag="MODEL", hint="Give a preset name or a .keras file.")
    if path.suffix != ".keras" or not zipfile.is_zipfile(path):
        raise ModelError(
            f"`{path}` is not a Keras file (a .keras zip archive written by model.save()).",
            flag="MODEL",
            hint="Save the model with model.save('model.keras').",
        )
    import keras

    from . import attention, transformer  # noqa: F401  (registers attnkit's own layers with Keras)

    try:
        return keras.models.load_model(path, compile=False, safe_mode=not unsafe)
    except Exception as e:
        cause = _attnkit_cause(e)
        if cause is not None:  # our own layer refused its config (e.g. d_model % num_heads)
            raise cause from None
        text = str(e)
        first = text.strip().splitlines()[0] if text.strip() else type(e).__name__
        missing = missing_classes(path)
        if missing:
            names = ", ".join(f"`{name}` (saved from module `{module}`)" for name, module in missing[:3])
            more = f" and {len(missing) - 3} more" if len(missing) > 3 else ""
            raise ModelError(
                f"`{path}` uses {'a custom class' if len(missing) == 1 else 'custom classes'} Keras cannot find: "
                f"{names}{more}.",
                flag="--import",
                hint=f"Pass --import MODULE (a module name or a .py file) that defines and registers it, "
                f"e.g. --import {missing[0][1]}.",
            ) from None
        if "Could not locate" in text or "Unknown layer" in text or "not found" in text.lower() and "class" in text:
            raise ModelError(
                f"`{path}` uses a custom object Keras cannot find ({first[:160]}).",
                flag="--import",
                hint="Pass --import MODULE for the module that defines and registers it.",
            ) from None
        if "safe_mode" in text or "unsafe" in text.lower():
            raise ModelError(
                f"`{path}` needs unsafe deserialisation (e.g. a Lambda layer with Python code).",
                flag="--unsafe",
                hint="Pass --unsafe only if you trust the file.",
            ) from None
        raise ModelError(
            f"`{path}` could not be loaded; the file looks corrupt ({first[:160]}).", flag="MODEL"
        ) from None


def missing_classes(path: str | Path) -> list[tuple[str, str]]:
    """``(registered name, module)`` of every class in a ``.keras`` file's ``config.json`` that Keras cannot
    resolve here: not registered (``keras.saving.get_registered_object``) and not in an importable Keras-family
    module (Keras imports ``keras``, ``keras_hub``... modules itself). Read from the file rather than from Keras's
    error, which names the outermost object that failed (``Functional``) and is cut mid-sentence."""
    import importlib.util
    import json

    import keras

    try:
        with zipfile.ZipFile(path) as archive:
            config = json.loads(archive.read("config.json"))
    except (OSError, KeyError, ValueError, zipfile.BadZipFile):
        return []

    def findable(module: str) -> bool:
        try:
            return module.split(".")[0].startswith("keras") and importlib.util.find_spec(module) is not None
        except (ImportError, ValueError):
            return False

    missing: dict[str, str] = {}
    stack = [config]
    while stack:
        node = stack.pop()
        if isinstance(node, list):
            stack.extend(node)
            continue
        if not isinstance(node, dict):
            continue
        stack.extend(node.values())
        if not isinstance(node.get("class_name"), str) or "config" not in node or "module" not in node:
            continue
        module = node.get("module") or ""
        name = node.get("registered_name") or node["class_name"]
        if not findable(module) and keras.saving.get_registered_object(name) is None:
            missing.setdefault(name, module)
    return sorted(missing.items())


def _attnkit_cause(error: BaseException) -> AttnkitError | None:
    """The AttnkitError Keras wrapped while deserialising, if any (it re-raises as TypeError)."""
    seen = set()
    while error is not None and id(error) not in seen:
        if isinstance(error, AttnkitError):
            return error
        seen.add(id(error))
        error = error.__cause__ or error.__context__
    return None


def _token_high(model) -> int:
    """Exclusive upper bound for random token ids: the smallest Embedding vocabulary in the model."""
    import keras

    dims = [layer.input_dim for layer in model._flatten_layers() if isinstance(layer, keras.layers.Embedding)]
    return min(dims) if dims else 100


def output_names(model) -> list[str]:
    """Names of a model's outputs: the keys of a dict output, else Keras's output names."""
    struct = getattr(model, "_outputs_struct", None)
    if isinstance(struct, dict):
        return list(struct)
    return list(model.output_names)


def _axes(name: str, shape, target: bool = False) -> tuple[str | None, ...]:
    """Dynamic axes by position; ``target``: the decoder side of a seq2seq model, whose length is its own (the same
    name would tell ONNX Runtime that source and target lengths are equal)."""
    from ..core.spec import TARGET_AXIS

    axes = []
    for i, dim in enumerate(shape):
        if i == 0:
            axes.append("batch")
        elif dim is None:
            axes.append((TARGET_AXIS if target else "sequence") if i == 1 else f"{name}_dim{i}")
        else:
            axes.append(None)
    return tuple(axes)


def spec_from_model(model, name: str) -> ExportSpec:
    """ExportSpec from a functional model's inputs and outputs (names, dtypes, dynamic axes).

    Raises:
        ModelError: the model has no symbolic inputs (subclassed model never called).
    """
    try:
        inputs = list(model.inputs)
        outputs = list(model.outputs)
    except (AttributeError, ValueError):
        inputs = outputs = []
    if not inputs or not outputs:
        raise ModelError(
            f"cannot read the inputs of model `{name}`: only functional or built models with "
            "symbolic inputs can be exported.",
            flag="MODEL",
            hint="Wrap the model in keras.Model(inputs, outputs) before saving it.",
        )
    high = _token_high(model)
    names = [t.name for t in inputs]
    # a seq2seq model (encoder_* and decoder_* inputs): its decoder inputs and its outputs are over the target
    seq2seq = any(n.startswith("encoder_") for n in names) and any(n.startswith("decoder_") for n in names)
    in_specs = []
    for t in inputs:
        shape = (None,) + tuple(t.shape[1:])
        dtype = str(t.dtype)
        role = "features"
        if "int" in dtype or dtype == "bool":
            role = "padding_mask" if "mask" in t.name or dtype == "bool" else "tokens"
        target = seq2seq and t.name.startswith("decoder_")
        in_specs.append(TensorSpec(t.name, dtype, shape, _axes(t.name, shape, target), role, high))
    out_specs = []
    for n, t in zip(output_names(model), outputs):
        shape = (None,) + tuple(t.shape[1:])
        dtype = "float32" if "float" in str(t.dtype) else str(t.dtype)
        out_specs.append(TensorSpec(n, dtype, shape, _axes(n, shape, seq2seq)))
    longest = _max_positions(model)
    if longest is None:
        return ExportSpec(name=name, inputs=tuple(in_specs), outputs=tuple(out_specs))
    sequence = ShapeRange(1, min(128, longest), longest)
    return ExportSpec(name, tuple(in_specs), tuple(out_specs), sequence=sequence, max_sequence=longest)


def _max_positions(model) -> int | None:
    """The longest sequence a model with a position table takes: the smallest such table (keras-hub's
    ``PositionEmbedding.sequence_length``, e.g. GPT-2's ``max_sequence_length``; attnkit's
    ``TokenAndPositionEmbedding.max_length``, which a saved attnkit decoder brings: without it verify drew 3 x 45
    inputs for a 40-position model and TensorFlow failed); None for models without one (rotary positions)."""
    tables = {"PositionEmbedding": "sequence_length", "TokenAndPositionEmbedding": "max_length"}
    lengths = [
        getattr(layer, tables[type(layer).__name__])
        for layer in model._flatten_layers()
        if type(layer).__name__ in tables and isinstance(getattr(layer, tables[type(layer).__name__], None), int)
    ]
    return min(lengths) if lengths else None
