"""A trained translator from data every machine has: attnkit's own seq2seq model trained for a few minutes to turn
English number words into French ones (``num2words``), the seed scenario of a translation service.

    python scripts/train_translator.py --out /tmp/translator --seconds 180
    attnkit export /tmp/translator/translator.keras --format onnx,openvino --precision fp32,int8 --target host \\
        --data /tmp/translator/heldout.npz --out /tmp/translator/exp
    attnkit verify /tmp/translator/exp --data /tmp/translator/heldout.npz

Word-level tokens (``-`` and ``,`` are tokens of their own, so a translation is rebuilt exactly): 0 pads, 1 starts
and 2 ends a sentence. The numbers 0 to 9999 are split once, seeded: one in ten is held out, never trained on.
``heldout.npz`` holds the held-out pairs teacher-forced, as ``--data`` takes them: the four model inputs and
``labels``, the next French token at every decoder position (0 where padded), so verify and bench judge every
artifact by token accuracy against the true translation, not only against fp32.
"""

from __future__ import annotations

import argparse
import json
import re
import time
from functools import cache
from pathlib import Path

import numpy as np

PAD, BOS, EOS = 0, 1, 2
NUMBERS = 10_000
#: every tenth number (seeded permutation) is held out
HELD_OUT_EVERY = 10
CONFIG = {"max_length": 32, "encoder_layers": 2, "decoder_layers": 2, "d_model": 128, "num_heads": 4, "ffn_dim": 256,
          "activation": "relu", "dropout": 0.0, "norm_first": True}  # fmt: skip


def words(text: str) -> list[str]:
    """``"vingt-trois"`` -> ``["vingt", "-", "trois"]``; spaces dropped, hyphens and commas kept as tokens."""
    return re.findall(r"[^\s,-]+|[,-]", text)


def join(tokens: list[str]) -> str:
    return re.sub(r" ?([,-]) ?", lambda m: m.group(1) + (" " if m.group(1) == "," else ""), " ".join(tokens))


@cache
def pairs() -> list[tuple[str, str]]:
    from num2words import num2words

    return [(num2words(n, lang="en"), num2words(n, lang="fr")) for n in range(NUMBERS)]


@cache
def vocabulary() -> list[str]:
    """Specials, then every English and French word in order of first use (one shared id space)."""
    seen = dict.fromkeys(["<pad>", "<s>", "</s>"])
    for en, fr in pairs():
        seen.update(dict.fromkeys(words(en) + words(fr)))
    return list(seen)


def split(held_out: bool) -> np.ndarray:
    order = np.random.default_rng(0).permutation(NUMBERS)
    return np.sort(order[: NUMBERS // HELD_OUT_EVERY] if held_out else order[NUMBERS // HELD_OUT_EVERY :])


def encode(numbers) -> dict[str, np.ndarray]:
    """Teacher-forced rows for ``numbers``: the four model inputs and ``labels`` (next French token; 0 padded)."""
    ids = {w: i for i, w in enumerate(vocabulary())}
    src = [[ids[w] for w in words(pairs()[n][0])] for n in numbers]
    tgt = [[ids[w] for w in words(pairs()[n][1])] for n in numbers]
    s_len, t_len = max(map(len, src)), max(map(len, tgt)) + 1
    out = {k: np.zeros((len(src), n), "int32") for k, n in (("encoder_token_ids", s_len), ("encoder_padding_mask", s_len),
           ("decoder_token_ids", t_len), ("decoder_padding_mask", t_len), ("labels", t_len))}  # fmt: skip
    for i, (s, t) in enumerate(zip(src, tgt)):
        out["encoder_token_ids"][i, : len(s)], out["encoder_padding_mask"][i, : len(s)] = s, 1
        out["decoder_token_ids"][i, : len(t) + 1], out["decoder_padding_mask"][i, : len(t) + 1] = [BOS] + t, 1
        out["labels"][i, : len(t) + 1] = t + [EOS]
    return out


def train(seconds: float | None = None, steps: int | None = None, batch: int = 64, say=print):
    """attnkit's seq2seq model trained on the training numbers for ``seconds`` or ``steps`` (seeded)."""
    import keras

    from attnkit.models.presets import _BASE
    from attnkit.models.transformer import build_seq2seq

    keras.utils.set_random_seed(0)
    model = build_seq2seq({**_BASE, **CONFIG, "vocab_size": len(vocabulary())}, name="translator")
    model.compile(optimizer=keras.optimizers.Adam(1e-3),
                  loss={"logits": keras.losses.SparseCategoricalCrossentropy(from_logits=True, ignore_class=PAD)})  # fmt: skip
    train_numbers = split(held_out=False)
    rng = np.random.default_rng(1)
    start, step = time.perf_counter(), 0
    while (steps is None or step < steps) and (seconds is None or time.perf_counter() - start < seconds):
        rows = encode(rng.choice(train_numbers, size=batch, replace=False))
        labels = rows.pop("labels")
        loss = model.train_on_batch(rows, {"logits": labels})
        step += 1
        if step % 200 == 0:
            say(f"step {step}: loss {float(np.asarray(loss).ravel()[0]):.3f} ({time.perf_counter() - start:.0f} s)")
    return model, step


def token_accuracy(model, rows: dict[str, np.ndarray]) -> float:
    """Teacher-forced next-token accuracy over the real decoder positions."""
    feeds = {k: v for k, v in rows.items() if k != "labels"}
    logits = np.asarray(model(feeds)["logits"])
    real = rows["decoder_padding_mask"].astype(bool)
    return float((logits.argmax(-1) == rows["labels"])[real].mean())


def greedy(model, rows: dict[str, np.ndarray], max_new: int = 20) -> list[list[int]]:
    """Greedy translations (full recompute each step; the reference, not the fast path), cut at EOS."""
    n = len(rows["encoder_token_ids"])
    out = np.full((n, 1), BOS, "int32")
    done = np.zeros(n, bool)
    for _ in range(max_new):
        feeds = {"encoder_token_ids": rows["encoder_token_ids"], "encoder_padding_mask": rows["encoder_padding_mask"],
                 "decoder_token_ids": out, "decoder_padding_mask": np.ones_like(out)}  # fmt: skip
        nxt = np.asarray(model(feeds)["logits"])[:, -1].argmax(-1).astype("int32")
        nxt[done] = PAD
        done |= nxt == EOS
        out = np.concatenate([out, nxt[:, None]], 1)
        if done.all():
            break
    return [[int(t) for t in row[1:] if t not in (PAD,)][: list(row[1:]).index(EOS) if EOS in row[1:] else None]
            for row in out]  # fmt: skip


def exact_match(model, numbers) -> float:
    """Share of ``numbers`` whose greedy translation is the true French, word for word."""
    vocab = vocabulary()
    got = greedy(model, encode(numbers))
    return float(np.mean([join([vocab[t] for t in g]) == pairs()[n][1] for g, n in zip(got, numbers)]))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--seconds", type=float, default=180.0, help="training time")
    args = parser.parse_args()

    model, step = train(seconds=args.seconds)
    args.out.mkdir(parents=True, exist_ok=True)
    model.save(args.out / "translator.keras")
    held = encode(split(held_out=True))
    np.savez(args.out / "heldout.npz", **held)
    (args.out / "vocabulary.json").write_text(json.dumps(vocabulary(), ensure_ascii=False) + "\n")
    accuracy, exact = token_accuracy(model, held), exact_match(model, split(held_out=True))
    print(f"{step} steps; held-out ({len(held['labels'])} numbers): next-token accuracy {accuracy:.4f}, "
          f"greedy translations exactly right {exact:.4f}; wrote {args.out}/translator.keras, heldout.npz")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
