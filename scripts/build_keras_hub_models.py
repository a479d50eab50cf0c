"""Build the keras-hub models BENCHMARKS.md measures, from config with random weights (no download), and save
them as ``.keras`` files: ``llama3-small.keras`` (Llama3CausalLM, 4 layers, hidden 512, 8 query heads over 2
key/value heads, FFN 1408, vocab 8192) and ``gpt2-small.keras`` (GPT2CausalLM, 4 layers, hidden 512, 8 heads,
FFN 2048, vocab 8192, 512 positions); with ``--large``, models whose weights do not fit in any CPU's cache, so
their decode meets the DRAM wall (issue 36): ``llama3-124m`` (12 layers, hidden 768, 12 query heads over 4
key/value heads, FFN 2048, vocab 32000) and ``gpt2-124m`` (GPT-2 small's own shape: 12 layers, hidden 768,
12 heads, FFN 3072, vocab 50257, 1024 positions). Every weight is drawn on its own
(:func:`attnkit.models.keras_hub.independent_weights`): keras-hub's own initialisation gives Llama equal key and
value kernels, which OpenVINO merges into one projection (files built before 2026-12-07 have them).

    python scripts/build_keras_hub_models.py [--out DIR] [--seed 0] [--large] [--only qwen2-150m]

``qwen2-150m`` (QwenCausalLM, 12 layers, hidden 896, 14 query heads over 2 key/value heads, FFN 2432, vocab
32000, untied output) is a third family and size, built only when asked; so is ``gemma3-270m`` (Gemma 3 270M's
own shape: Gemma3CausalLM, 18 layers, hidden 640, 4 query heads over 1 key/value head of 256, FFN 2048, vocab
262144 tied, five sliding-window layers (512) to one global, q/k norms); and ``mistral-160m`` (MistralCausalLM,
8 layers, hidden 1024, 16 query heads over 8 key/value heads, FFN 2816, vocab 32768, untied output).
"""

from __future__ import annotations

import argparse
from pathlib import Path


def build(name: str, seed: int):
    import keras
    import keras_hub

    keras.utils.set_random_seed(seed)
    m = keras_hub.models
    if name == "llama3-124m":
        backbone = m.Llama3Backbone(vocabulary_size=32000, num_layers=12, num_query_heads=12, num_key_value_heads=4,
                                    hidden_dim=768, intermediate_dim=2048)  # fmt: skip
        return m.Llama3CausalLM(backbone=backbone, preprocessor=None)
    if name == "gpt2-124m":
        backbone = m.GPT2Backbone(vocabulary_size=50257, num_layers=12, num_heads=12, hidden_dim=768,
                                  intermediate_dim=3072, max_sequence_length=1024)  # fmt: skip
        return m.GPT2CausalLM(backbone=backbone, preprocessor=None)
    if name == "qwen2-150m":  # another family and size than the two above (Qwen 2: q/k/v biases, 14 heads over 2)
        backbone = m.QwenBackbone(vocabulary_size=32000, num_layers=12, num_query_heads=14, num_key_value_heads=2,
                                  hidden_dim=896, intermediate_dim=2432, tie_word_embeddings=False)  # fmt: skip
        return m.QwenCausalLM(backbone=backbone, preprocessor=None)
    if name == "mistral-160m":  # a fourth family and size: wider and shallower (8 layers of 1024, 16 heads over 8)
        backbone = m.MistralBackbone(vocabulary_size=32768, num_layers=8, num_query_heads=16, num_key_value_heads=8,
                                     hidden_dim=1024, intermediate_dim=2816)  # fmt: skip
        return m.MistralCausalLM(backbone=backbone, preprocessor=None)
    if name == "gemma3-270m":  # Gemma 3 270M's config; text only (no vision encoder)
        backbone = m.Gemma3Backbone(vocabulary_size=262144, image_size=896, num_layers=18, num_query_heads=4,
                                    num_key_value_heads=1, hidden_dim=640, intermediate_dim=2048, head_dim=256,
                                    use_post_ffw_norm=True, use_post_attention_norm=True,
                                    use_sliding_window_attention=True, sliding_window_size=512)  # fmt: skip
        return m.Gemma3CausalLM(backbone=backbone, preprocessor=None)
    if name == "llama3-small":
        backbone = m.Llama3Backbone(vocabulary_size=8192, num_layers=4, num_query_heads=8, num_key_value_heads=2,
                                    hidden_dim=512, intermediate_dim=1408)  # fmt: skip
        return m.Llama3CausalLM(backbone=backbone, preprocessor=None)
    backbone = m.GPT2Backbone(vocabulary_size=8192, num_layers=4, num_heads=8, hidden_dim=512,
                              intermediate_dim=2048, max_sequence_length=512)  # fmt: skip
    return m.GPT2CausalLM(backbone=backbone, preprocessor=None)


def main() -> None:
    from attnkit.models.keras_hub import independent_weights

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("."))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--large", action="store_true", help="the ~124 M models instead of the small ones")
    parser.add_argument("--only", help="comma list of model names to build instead (e.g. qwen2-150m)")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    names = ("llama3-124m", "gpt2-124m") if args.large else ("llama3-small", "gpt2-small")
    for name in args.only.split(",") if args.only else names:
        model = build(name, args.seed)
        # keras-hub's cloned initializers give equal key and value kernels, which OpenVINO merges (see there)
        independent_weights(model, args.seed)
        path = args.out / f"{name}.keras"
        model.save(path)
        print(f"{path}: {model.count_params() / 1e6:.1f} M parameters")


if __name__ == "__main__":
    main()
