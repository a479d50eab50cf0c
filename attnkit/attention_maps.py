"""Per-head attention-weight heatmaps of one attention layer for one input."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import AttnkitError


@dataclass
class AttentionMaps:
    layer: str
    layer_index: int
    num_layers: int
    weights: np.ndarray  # (heads, query, key), float32
    valid_length: int


def attention_layers(model) -> list:
    """Attention layers of a model, in call order: attnkit's classic layer and Keras's."""
    import keras

    from .models.attention import MultiHeadAttention

    kinds = (MultiHeadAttention, keras.layers.MultiHeadAttention)
    return [layer for layer in model._flatten_layers(include_self=False) if isinstance(layer, kinds)]


def capture(model, spec, feeds: dict, layer_index: int = 0) -> AttentionMaps:
    """Run the model eagerly once and capture the weights of attention layer ``layer_index``.

    The layer's ``call`` is wrapped for the duration of the run to ask for
    ``return_attention_scores=True`` (both implementations support it) and restored afterwards.
    """
    from .tracing import call_model

    layers = attention_layers(model)
    if not layers:
        raise AttnkitError(f"model `{spec.name}` has no attention layer.", flag="MODEL")
    if not -len(layers) <= layer_index < len(layers):
        raise AttnkitError(
            f"layer {layer_index} does not exist; the model has {len(layers)} attention layers (0-{len(layers) - 1}).",
            flag="--layer",
        )
    layer = layers[layer_index]
    captured = []
    original = layer.call

    def call(*args, **kwargs):
        out, weights = original(*args, **{**kwargs, "return_attention_scores": True})
        captured.append(np.asarray(weights, dtype=np.float32))
        return out

    layer.call = call
    try:
        call_model(model, spec, feeds)
    finally:
        del layer.call  # back to the class method
    mask = next((v for k, v in feeds.items() if "padding_mask" in k), None)
    valid = int(mask[0].sum()) if mask is not None else captured[0].shape[-1]
    return AttentionMaps(
        layer.path if hasattr(layer, "path") else layer.name,
        layer_index % len(layers),
        len(layers),
        captured[0][0],
        valid,
    )


def plot(maps: AttentionMaps, path: Path, title: str) -> None:
    """A grid of heatmaps, one per head (query on y, key on x), written atomically as PNG."""
    from .plotting import pyplot, save_png

    plt = pyplot()
    heads = maps.weights.shape[0]
    cols = min(4, heads)
    rows = -(-heads // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 3.0 * rows + 0.6), dpi=110, squeeze=False)
    for h, ax in enumerate(axes.flat):
        if h >= heads:
            ax.axis("off")
            continue
        im = ax.imshow(maps.weights[h], cmap="viridis", vmin=0.0, aspect="auto")
        ax.set_title(f"head {h}", fontsize=9)
        ax.set_xlabel("key position", fontsize=8)
        ax.set_ylabel("query position", fontsize=8)
        fig.colorbar(im, ax=ax, fraction=0.046)
    fig.suptitle(
        f"{title} — {maps.layer} (attention layer {maps.layer_index + 1} of {maps.num_layers}); "
        f"{maps.valid_length} valid keys",
        fontsize=10,
    )
    fig.tight_layout()
    save_png(fig, path)


def maps_for(model: str, *, layer: int, seq: int, seed: int, imports: tuple[str, ...] = (), capture=capture):
    """Attention maps of one layer for MODEL: a preset, a .keras file or an export directory.

    Raises:
        AttnkitError: ``seq`` beyond the model's maximum position (names ``--seq``).
    """

    from .errors import AttnkitError
    from .models import classify, resolve
    from .runtimes.base import Source

    if classify(model).is_export:
        source = Source(model, imports=imports)
        keras_model, spec = source.keras_model, source.spec
    else:
        keras_model, spec, _ = resolve(model, seed=seed, imports=imports)
    if spec.max_sequence and seq > spec.max_sequence:
        raise AttnkitError(f"{seq} exceeds the model's maximum position {spec.max_sequence}.", flag="--seq")
    return capture(keras_model, spec, spec.sample_feeds(1, seq, seed), layer)
