"""Decoding loops in numpy around any step runner, and the full-recompute reference.

The loop is the one a serving client runs (optimum's and ONNX Runtime GenAI's): encode once (seq2seq),
prefill the prompt, then one token per step, feeding each step's ``present.*`` back as ``past_key_values.*``.
The same loop drives eager Keras, ``tf.function``, SavedModel signatures and onnxruntime, so verify and
bench compare backends, not loops.

Semantics shared with the SavedModel ``generate`` signature: a row that produced ``eos_id`` is finished
and continues with ``eos_id``; the loop stops when every row is finished or after ``max_new_tokens``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from ..core.genspec import GenerationSpec
from ..core.sampling import get_sampler, sequence_lengths  # noqa: F401  (re-exported)


@dataclass
class Prompts:
    """A batch of prompts, padded on the right (1 = token in ``mask``), and the source for seq2seq."""

    ids: np.ndarray
    mask: np.ndarray
    source_ids: np.ndarray | None = None
    source_mask: np.ndarray | None = None

    @property
    def batch(self) -> int:
        return int(self.ids.shape[0])

    @property
    def lengths(self) -> np.ndarray:
        return self.mask.sum(axis=1).astype("int32")

    @classmethod
    def from_data(cls, g: GenerationSpec, data, max_new_tokens: int, rows: int = 8) -> Prompts:
        """The first ``rows`` held-out rows of the user's data (:class:`attnkit.core.data.UserData`) as prompts,
        each cut to what the model's positions allow beside ``max_new_tokens`` (its padding mask kept). For a
        seq2seq model the rows' source (encoder ids and mask) is translated from the first decoder token of each
        row (its start token): what a translation service is asked."""
        held = data.batches("held_out", batch=rows)[0]
        if g.seq2seq:
            src_mask = held[g.encoder_mask].astype("int32") if g.encoder_mask in held \
                else np.ones_like(held[g.encoder_ids])  # fmt: skip
            src = np.where(src_mask == 1, held[g.encoder_ids], 0).astype("int32")
            ids = held[g.ids][:, :1].astype("int32")
            return cls(ids, np.ones_like(ids), src, src_mask)
        keep = max(1, min(held[g.ids].shape[1], g.max_length - max_new_tokens))
        mask = held[g.mask][:, :keep].astype("int32") if g.mask in held else np.ones_like(held[g.ids][:, :keep])
        mask[:, 0] = 1  # a prompt has at least one token
        ids = np.where(mask == 1, held[g.ids][:, :keep], 0).astype("int32")
        return cls(ids, mask)

    @classmethod
    def random(
        cls, g: GenerationSpec, batch: int, length: int, seed: int, ragged: bool = True, source_length: int = 0
    ) -> Prompts:
        """Fresh random prompts: token ids in [1, vocab); with ``ragged`` the rows after the first have random
        lengths in [max(1, length // 2), length], so one batch holds different prompt lengths."""
        rng = np.random.default_rng(seed)
        ids = rng.integers(1, g.vocab_size, size=(batch, length)).astype("int32")
        lengths = np.full(batch, length)
        if ragged and batch > 1:
            lengths[1:] = rng.integers(max(1, length // 2), length + 1, size=batch - 1)
            if length > 1 and (lengths[1:] == length).all():
                lengths[-1] = max(1, length // 2)  # at least two different lengths in the batch
        mask = (np.arange(length)[None, :] < lengths[:, None]).astype("int32")
        ids = np.where(mask == 1, ids, 0).astype("int32")
        src = src_mask = None
        if g.seq2seq:
            n = source_length or length
            src = rng.integers(1, g.vocab_size, size=(batch, n)).astype("int32")
            src_len = np.full(batch, n)
            if ragged and batch > 1:
                src_len[1:] = rng.integers(max(1, n // 2), n + 1, size=batch - 1)
            src_mask = (np.arange(n)[None, :] < src_len[:, None]).astype("int32")
            src = np.where(src_mask == 1, src, 0).astype("int32")
        return cls(ids, mask, src, src_mask)

    def source_feeds(self, g: GenerationSpec) -> dict[str, np.ndarray]:
        return {g.encoder_ids: self.source_ids, g.encoder_mask: self.source_mask} if g.seq2seq else {}


@dataclass
class Generation:
    """Greedy tokens of one batch, the logits each was chosen from, and the time of each step."""

    tokens: np.ndarray  # (batch, n) int32
    logits: list[np.ndarray] = field(default_factory=list)  # per step, (batch, vocab) float32
    first_token_seconds: float = 0.0  # encode + prefill + the first argmax
    step_seconds: list[float] = field(default_factory=list)  # each later token


def check_request(g: GenerationSpec, prompts: Prompts, max_new_tokens: int) -> None:
    """:meth:`GenerationSpec.check_request` for a batch of prompts."""
    source = None if prompts.source_ids is None else int(prompts.source_ids.shape[1])
    g.check_request(int(prompts.ids.shape[1]), max_new_tokens, source)


def decode(
    runner, prompts: Prompts, max_new_tokens: int, eos_id: int = -1, keep_logits: bool = True, sampler="greedy"
) -> Generation:
    """Decoding with the KV cache through ``runner`` (a decode-step runner), each token chosen by ``sampler``
    (:mod:`attnkit.core.sampling`; greedy by default)."""
    sampler = get_sampler(sampler)
    g: GenerationSpec = runner.gspec
    check_request(g, prompts, max_new_tokens)
    if g.slot:
        return _decode_slots(runner, prompts, max_new_tokens, eos_id, keep_logits, sampler)
    clock = time.perf_counter
    t0 = clock()
    fixed = {}
    if g.seq2seq:
        fixed = {g.encoder_mask: prompts.source_mask, **runner.encode(prompts.source_feeds(g))}
    out = runner.prefill({g.ids: prompts.ids, g.mask: prompts.mask, **fixed})
    last = (prompts.mask * np.arange(prompts.ids.shape[1])[None, :]).max(axis=1)
    logits = out["logits"][np.arange(prompts.batch), last]
    token, done = sampler.next_token(logits, np.zeros(prompts.batch, bool), eos_id)
    result = Generation(np.zeros((prompts.batch, 0), "int32"), [logits] if keep_logits else [])
    tokens = [token]
    result.first_token_seconds = clock() - t0
    mask = prompts.mask
    names = {} if runner.keeps_cache else g.past_from_present()
    while len(tokens) < max_new_tokens and not done.all():
        t = clock()
        mask = np.concatenate([mask, np.ones((prompts.batch, 1), "int32")], axis=1)
        feeds = {g.ids: token[:, None], g.mask: mask, **fixed, **{p: out[q] for p, q in names.items()}}
        out = runner.decode(feeds)
        logits = out["logits"][:, -1]
        token, done = sampler.next_token(logits, done, eos_id)
        tokens.append(token)
        if keep_logits:
            result.logits.append(logits)
        result.step_seconds.append(clock() - t)
    result.tokens = _pad(np.stack(tokens, axis=1), max_new_tokens, eos_id)
    return result


def _decode_slots(runner, prompts: Prompts, max_new_tokens: int, eos_id: int, keep_logits: bool, sampler):
    """keras-hub's loop (``positions="slot"``, see :mod:`attnkit.core.genspec`): prefill the slots every prompt
    fills, then one slot per step for the whole batch; a row still inside its prompt is fed its next prompt
    token, a row past it the token it chose. Every row gets ``max_new_tokens`` tokens after its own prompt."""
    g: GenerationSpec = runner.gspec
    clock = time.perf_counter
    t0 = clock()
    lengths, batch = prompts.lengths, prompts.batch
    slot = int(lengths.min())
    fixed = {}
    if g.seq2seq:
        fixed = {g.encoder_mask: prompts.source_mask, **runner.encode(prompts.source_feeds(g))}
    out = runner.prefill({g.ids: np.ascontiguousarray(prompts.ids[:, :slot]), **fixed})
    logits = out["logits"][:, -1]  # predicts slot `slot`
    tokens: list[list[int]] = [[] for _ in range(batch)]
    chosen_from: list[list[np.ndarray]] = [[] for _ in range(batch)]
    done = np.zeros(batch, bool)
    names = {} if runner.keeps_cache else g.past_from_present()
    result = Generation(np.zeros((batch, 0), "int32"))
    t = t0
    while True:
        generating = slot >= lengths
        nxt, next_done = sampler.next_token(logits, done, eos_id)
        token = np.where(generating, nxt, prompts.ids[:, min(slot, prompts.ids.shape[1] - 1)]).astype("int32")
        done = np.where(generating, next_done, done)
        for b in np.flatnonzero(generating):
            if len(tokens[b]) < max_new_tokens:
                tokens[b].append(int(nxt[b]))
                chosen_from[b].append(logits[b])
        if result.first_token_seconds == 0.0:
            result.first_token_seconds = clock() - t0
        else:
            result.step_seconds.append(clock() - t)
        if min(len(r) for r in tokens) >= max_new_tokens or done.all():
            break
        t = clock()
        out = runner.decode({g.ids: token[:, None], **fixed, **{p: out[q] for p, q in names.items()}})
        logits = out["logits"][:, -1]
        slot += 1
    width = max(len(r) for r in tokens)
    result.tokens = _pad(np.array([r + [eos_id] * (width - len(r)) for r in tokens]), max_new_tokens, eos_id)
    if keep_logits:
        n = min(len(r) for r in chosen_from)
        result.logits = [np.stack([chosen_from[b][k] for b in range(batch)]) for k in range(n)]
    return result


def _pad(tokens: np.ndarray, n: int, eos_id: int) -> np.ndarray:
    if tokens.shape[1] < n:
        tokens = np.pad(tokens, ((0, 0), (0, n - tokens.shape[1])), constant_values=eos_id)
    return tokens.astype("int32")


def full_logits(outputs: dict) -> np.ndarray:
    """The logits among a full-model runner's outputs: ``logits``, or the model's only output (keras-hub's
    CausalLM names it after its reverse-embedding layer, ``token_embedding``)."""
    if "logits" in outputs:
        return outputs["logits"]
    if len(outputs) == 1:
        return next(iter(outputs.values()))
    raise KeyError(f"no `logits` among the model's outputs {sorted(outputs)}")


def recompute(
    full: Callable[[dict], np.ndarray],
    g: GenerationSpec,
    prompts: Prompts,
    max_new_tokens: int,
    eos_id: int = -1,
    keep_logits: bool = True,
    sampler="greedy",
) -> Generation:
    """Decoding with no cache: the whole sequence through the full model at every step.

    ``full(feeds)`` runs the full-sequence model (its own input names) and returns its logits
    (batch, seq, vocab). Rows are packed on the right (prompt, then generated tokens), the model's own
    padding convention, so this reference never uses the cache's per-row positions.
    """
    check_request(g, prompts, max_new_tokens)
    sampler = get_sampler(sampler)
    clock = time.perf_counter
    rows = [list(prompts.ids[b, prompts.mask[b] == 1]) for b in range(prompts.batch)]
    done = np.zeros(prompts.batch, bool)
    result = Generation(np.zeros((prompts.batch, 0), "int32"))
    tokens = []
    while len(tokens) < max_new_tokens and not (tokens and done.all()):
        t = clock()
        width = max(len(r) for r in rows)
        ids = np.zeros((prompts.batch, width), "int32")
        mask = np.zeros((prompts.batch, width), "int32")
        for b, r in enumerate(rows):
            ids[b, : len(r)], mask[b, : len(r)] = r, 1
        feeds = {g.ids: ids, g.mask: mask, **prompts.source_feeds(g)}
        if g.position_ids:  # rows packed on the right: each token's position is its column (keras-hub's own)
            feeds[g.position_ids] = np.broadcast_to(np.arange(width, dtype="int32"), ids.shape).copy()
        if g.seq2seq:
            feeds = {g.encoder_ids: prompts.source_ids, g.encoder_mask: prompts.source_mask, **feeds}
        logits = np.asarray(full(feeds))[np.arange(prompts.batch), [len(r) - 1 for r in rows]]
        token, done = sampler.next_token(logits, done, eos_id)
        for b in range(prompts.batch):
            rows[b].append(int(token[b]))
        tokens.append(token)
        if keep_logits:
            result.logits.append(logits.astype("float32"))
        if len(tokens) == 1:
            result.first_token_seconds = clock() - t
        else:
            result.step_seconds.append(clock() - t)
    result.tokens = _pad(np.stack(tokens, axis=1), max_new_tokens, eos_id)
    return result
