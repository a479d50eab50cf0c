"""A trained fixture from data every machine has: a byte-level causal LM (attnkit's own decoder) trained for a few
minutes on the Python standard library's source files, and held-out windows of other stdlib files as ``--data``.

    python scripts/train_byte_lm.py --out /tmp/bytelm --seconds 180
    attnkit export /tmp/bytelm/lm.keras --format onnx,openvino --precision fp32,int8,q8,q4 --target host \\
        --data /tmp/bytelm/heldout.npz --out /tmp/bytelm/exp
    attnkit verify /tmp/bytelm/exp --data /tmp/bytelm/heldout.npz

Random weights make every logit a near-tie, so a reduced precision's top-1 answers are judged on noise; a model
that learned something has peaked distributions, as the models users bring do. Files whose name starts with a
letter before ``n`` train; the others are held out (no file is in both). Token id = byte + 1 (0 is padding).
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np

CONFIG = {"vocab_size": 257, "max_length": 128, "num_layers": 2, "d_model": 128, "num_heads": 4, "ffn_dim": 512,
          "activation": "gelu", "dropout": 0.0, "norm_first": True}  # fmt: skip


def corpus(held_out: bool) -> bytes:
    files = sorted(Path(os.__file__).parent.glob("*.py"))
    return b"".join(f.read_bytes() for f in files if (f.name[0].lower() >= "n") == held_out)


def windows(text: bytes, rows: int, seq: int, seed: int) -> np.ndarray:
    data = np.frombuffer(text, np.uint8).astype("int32") + 1
    starts = np.random.default_rng(seed).integers(0, len(data) - seq - 1, size=rows)
    return np.stack([data[s : s + seq + 1] for s in starts])


def train(seconds: float | None = None, steps: int | None = None, config: dict | None = None, seq: int = 64,
          batch: int = 32, say=print):  # fmt: skip
    """attnkit's decoder trained on the training files' bytes for ``seconds`` or ``steps`` (seeded)."""
    import keras

    from attnkit.models.presets import _BASE
    from attnkit.models.transformer import build_decoder_lm

    keras.utils.set_random_seed(0)
    model = build_decoder_lm({**_BASE, **(config or CONFIG)}, name="bytelm")
    model.compile(optimizer=keras.optimizers.Adam(1e-3),
                  loss={"logits": keras.losses.SparseCategoricalCrossentropy(from_logits=True)})  # fmt: skip
    text = corpus(held_out=False)
    start, step = time.perf_counter(), 0
    while (steps is None or step < steps) and (seconds is None or time.perf_counter() - start < seconds):
        rows = windows(text, batch, seq, seed=step)
        x = {"token_ids": rows[:, :-1], "padding_mask": np.ones_like(rows[:, :-1])}
        loss = model.train_on_batch(x, {"logits": rows[:, 1:]})
        step += 1
        if step % 200 == 0:
            say(f"step {step}: loss {float(np.asarray(loss).ravel()[0]):.3f} ({time.perf_counter() - start:.0f} s)")
    return model, step


def held_out(rows: int, seq: int) -> np.ndarray:
    """``rows`` windows of ``seq`` byte ids from the held-out files."""
    return windows(corpus(held_out=True), rows, seq, seed=10_000)[:, :-1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--seconds", type=float, default=180.0, help="training time")
    parser.add_argument("--seq", type=int, default=64)
    parser.add_argument("--rows", type=int, default=256, help="held-out windows written to heldout.npz")
    args = parser.parse_args()

    model, step = train(seconds=args.seconds, seq=args.seq)
    args.out.mkdir(parents=True, exist_ok=True)
    model.save(args.out / "lm.keras")
    held = held_out(args.rows, args.seq)
    np.savez(args.out / "heldout.npz", token_ids=held, padding_mask=np.ones_like(held))
    logits = np.asarray(model({"token_ids": held, "padding_mask": np.ones_like(held)})["logits"])
    accuracy = float((logits[:, :-1].argmax(-1) == held[:, 1:]).mean())
    print(f"{step} steps; held-out next-byte accuracy {accuracy:.3f}; wrote {args.out}/lm.keras, heldout.npz")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
