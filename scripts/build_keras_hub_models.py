"""Build the keras-hub models BENCHMARKS.md measures, from config with random weights (no download), and save
them as ``.keras`` files: ``llama3-small.keras`` (Llama3CausalLM, 4 layers, hidden 512, 8 query heads over 2
key/value heads, FFN 1408, vocab 8192) and ``gpt2-small.keras`` (GPT2CausalLM, 4 layers, hidden 512, 8 heads,
FFN 2048, vocab 8192, 512 positions).

    python scripts/build_keras_hub_models.py [--out DIR] [--seed 0]
"""

from __future__ import annotations

import argparse
from pathlib import Path


def build(name: str, seed: int):
    import keras
    import keras_hub

    keras.utils.set_random_seed(seed)
    m = keras_hub.models
    if name == "llama3-small":
        backbone = m.Llama3Backbone(vocabulary_size=8192, num_layers=4, num_query_heads=8, num_key_value_heads=2,
                                    hidden_dim=512, intermediate_dim=1408)  # fmt: skip
        return m.Llama3CausalLM(backbone=backbone, preprocessor=None)
    backbone = m.GPT2Backbone(vocabulary_size=8192, num_layers=4, num_heads=8, hidden_dim=512,
                              intermediate_dim=2048, max_sequence_length=512)  # fmt: skip
    return m.GPT2CausalLM(backbone=backbone, preprocessor=None)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("."))
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    for name in ("llama3-small", "gpt2-small"):
        model = build(name, args.seed)
        path = args.out / f"{name}.keras"
        model.save(path)
        print(f"{path}: {model.count_params() / 1e6:.1f} M parameters")


if __name__ == "__main__":
    main()
