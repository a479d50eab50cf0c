"""Per-head attention-weight heatmaps of one attention layer for one input."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..core.errors import AttnkitError
from ..models.attention import attention_layers


@dataclass
class AttentionMaps:
    layer: str
    layer_index: int
    num_layers: int
    weights: np.ndarray  # (heads, query, key), float32
    valid_length: int


def _owner(model, layer):
    """The top-level layer of a functional model that is ``layer`` or holds it, and how to ask it for
    scores: ``("layer", owner)`` for an attention layer, ``("block", owner)`` for an attnkit block,
    ``("inside", owner)`` for any other layer (a keras-hub backbone)."""
    from ..models.transformer import TransformerDecoderBlock, TransformerEncoderBlock

    for top in model.layers:
        if top is layer:
            return "layer", top
        if any(inner is layer for inner in top._flatten_layers(include_self=False)):
            if isinstance(top, (TransformerEncoderBlock, TransformerDecoderBlock)):
                return "block", top
            return "inside", top
    raise AttnkitError(f"`{layer.path}` is not reached from the model's inputs.", flag="--layer")


def capture(model, spec, feeds: dict, layer_index: int = 0) -> AttentionMaps:
    """Run the model eagerly once and return the weights of attention layer ``layer_index``.

    For a layer that is, or sits in an attnkit block at, the top of the functional graph, the graph is
    cloned with the same layers (shared weights) and the owner of the layer is called with
    ``return_attention_scores=True``; its scores become an extra output. Nothing is patched. A layer
    inside another model's call (a keras-hub backbone) is read while the model runs (`_read_inside`).
    """
    layers = attention_layers(model)
    if not layers:
        raise AttnkitError(f"model `{spec.name}` has no attention layer.", flag="MODEL")
    if not -len(layers) <= layer_index < len(layers):
        raise AttnkitError(
            f"layer {layer_index} does not exist; the model has {len(layers)} attention layers (0-{len(layers) - 1}).",
            flag="--layer",
        )
    layer = layers[layer_index]
    kind, owner = _owner(model, layer)
    feeds_in = {name: feeds[name] for name in spec.input_names}
    one = len(feeds_in) == 1 and not isinstance(getattr(model, "_inputs_struct", None), dict)
    args = next(iter(feeds_in.values())) if one else feeds_in  # as tracing.call_model calls it
    if kind == "inside":
        weights = _read_inside(model, layer, owner, args)
    else:
        weights = _read_by_clone(model, layer, kind, owner, args)
    mask = next((v for k, v in feeds.items() if "padding_mask" in k), None)
    valid = int(mask[0].sum()) if mask is not None else weights.shape[-1]
    return AttentionMaps(
        layer.path if hasattr(layer, "path") else layer.name,
        layer_index % len(layers),
        len(layers),
        weights[0],
        valid,
    )


def _read_by_clone(model, layer, kind, owner, args) -> np.ndarray:
    import keras

    # which entry of a block's {"self_attention": w, "cross_attention": w} is `layer`
    key = (
        "cross_attention"
        if kind == "block" and getattr(owner, "cross_attention_layer", None) is layer
        else "self_attention"
    )
    # A fresh copy of the owner (same config and weights) whose *first* call asks for the scores:
    # keras.Function sizes a node's outputs by the layer's first call, so asking an already-called
    # layer for (output, scores) would leave the scores "not connected" (Keras 3.15).
    fresh = type(owner).from_config(owner.get_config())
    scores = []

    def call_function(top, *args, **kwargs):
        if top is not fresh:
            return top(*args, **kwargs)
        out, weights = top(*args, **kwargs, return_attention_scores=True)
        scores.append(weights[key] if kind == "block" else weights)
        return out

    struct = model._inputs_struct
    inputs = keras.tree.map_structure(lambda t: keras.Input(batch_shape=t.shape, dtype=t.dtype, name=t.name), struct)
    clone = keras.models.clone_model(
        model,
        input_tensors=inputs,
        clone_function=lambda top: fresh if top is owner else top,
        call_function=call_function,
    )
    fresh.set_weights(owner.get_weights())
    probe = keras.Model(inputs, {"outputs": clone.outputs, "scores": scores[-1]})
    return np.asarray(keras.ops.cast(probe(args)["scores"], "float32"))


def _read_inside(model, layer, owner, args) -> np.ndarray:
    """The weights of an attention layer that another model calls from its own ``call`` (a keras-hub
    backbone, which takes no ``return_attention_scores`` and offers no hook): for one eager call, the
    layer's *instance* reads the output of its ``_masked_softmax`` (scores to weights, in Keras's
    MultiHeadAttention and in keras-hub's own attention layers) and, on a Keras MultiHeadAttention, asks
    its ``_compute_attention`` (Keras's documented override point) for the scores, which sends it down
    that explicit path instead of the fused kernel. Written here because neither Keras nor keras-hub
    returns a nested layer's weights; both instance attributes are removed before this returns.
    """
    import inspect

    import keras

    if getattr(layer, "_flash_attention", False):
        raise AttnkitError(
            f"attention layer `{layer.path}` runs flash attention, which computes no weights to draw.",
            flag="--layer",
            hint="Call keras.config.disable_flash_attention() before loading the model.",
        )
    kind = type(layer)
    if not callable(getattr(kind, "_masked_softmax", None)):
        raise AttnkitError(
            f"attention layer `{layer.path}` sits inside `{owner.name}` ({type(owner).__name__}), which does not "
            "take return_attention_scores.",
            flag="--layer",
            hint="Choose a layer of attnkit's blocks, or a top-level attention layer.",
        )
    seen = []

    def masked_softmax(*a, **kw):
        weights = kind._masked_softmax(layer, *a, **kw)
        seen.append(weights)
        return weights

    hooks = {"_masked_softmax": masked_softmax}
    compute = inspect.signature(kind._compute_attention)
    if "return_attention_scores" in compute.parameters:

        def compute_attention(*a, **kw):
            bound = compute.bind(layer, *a, **kw)
            bound.arguments["return_attention_scores"] = True
            return kind._compute_attention(*bound.args, **bound.kwargs)

        hooks["_compute_attention"] = compute_attention
    for name, hook in hooks.items():
        object.__setattr__(layer, name, hook)
    try:
        model(args)
    finally:
        for name in hooks:
            object.__delattr__(layer, name)
    if not seen:
        raise AttnkitError(
            f"attention layer `{layer.path}` ({kind.__name__}) computed its attention in a fused kernel, which "
            "returns no weights to draw.",
            flag="--layer",
        )
    return np.asarray(keras.ops.cast(seen[0], "float32"))


def plot(maps: AttentionMaps, path: Path, title: str) -> None:
    """A grid of heatmaps, one per head (query on y, key on x), written atomically as PNG."""
    from ..core.plotting import pyplot, save_png

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

    from ..core.errors import AttnkitError
    from ..models import classify, resolve
    from ..runtimes.base import Source

    if classify(model).is_export:
        source = Source(model, imports=imports)
        keras_model, spec = source.keras_model, source.spec
    else:
        keras_model, spec, _ = resolve(model, seed=seed, imports=imports)
    if spec.max_sequence and seq > spec.max_sequence:
        raise AttnkitError(f"{seq} exceeds the model's maximum position {spec.max_sequence}.", flag="--seq")
    return capture(keras_model, spec, spec.sample_feeds(1, seq, seed), layer)
