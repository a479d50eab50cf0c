"""The next-token seam of every decoding loop, keras-hub style: a loop never changes for a new strategy.

keras-hub's ``samplers/sampler.py`` drives every strategy from one ``while_loop``; a sampler only implements
``get_next_token(probabilities)``. attnkit has two loops that must make the same choices: the numpy loop
around any step runner (:mod:`attnkit.generation.loop`) and the in-graph ``generate`` signature
(:mod:`attnkit.tracing.decode`, a ``tf.while_loop``). Both call :meth:`Sampler.next_token`, which holds
the end-of-sequence rule once; a sampler implements only :meth:`Sampler.get_next_token` against a small
array namespace (numpy or TensorFlow), so the same ten lines serve both loops. Greedy is the one shipped;
top-k or top-p add a subclass (and a seeded random source), not a third copy of a loop.

Foundation layer: numpy only; TensorFlow is imported when a TensorFlow tensor arrives.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np


class _NumpyOps:
    @staticmethod
    def argmax(x):
        return np.argmax(x, axis=-1).astype("int32")

    @staticmethod
    def where(cond, a, b):
        return np.where(cond, a, b).astype("int32")

    @staticmethod
    def equal(a, b):
        return np.equal(a, b)


class _TensorFlowOps:
    @staticmethod
    def argmax(x):
        import tensorflow as tf

        return tf.argmax(x, axis=-1, output_type=tf.int32)

    @staticmethod
    def where(cond, a, b):
        import tensorflow as tf

        return tf.where(cond, a, b)

    @staticmethod
    def equal(a, b):
        import tensorflow as tf

        return tf.equal(a, b)


def ops_for(x: Any):
    """numpy's namespace for host arrays, TensorFlow's for tensors (eager or symbolic)."""
    return _NumpyOps if isinstance(x, np.ndarray | np.generic) else _TensorFlowOps


class Sampler:
    """Chooses each next token from the last position's logits (batch, vocab).

    Shared semantics (:meth:`next_token`): a finished row (``done``) continues with ``eos_id``; a row whose
    chosen token is ``eos_id`` becomes finished; ``eos_id`` -1 never finishes a row.
    """

    name: ClassVar[str]

    def next_token(self, logits, done, eos_id):
        """``(token, done)`` after one step: the sampler's choice, with the end-of-sequence rule applied."""
        ops = ops_for(logits)
        token = ops.where(done, eos_id, self.get_next_token(logits, ops))
        return token, done | ops.equal(token, eos_id)

    def get_next_token(self, logits, ops):
        """The strategy: int32 token ids (batch,) from logits (batch, vocab) using ``ops`` (numpy or tf)."""
        raise NotImplementedError

    def to_dict(self) -> dict:
        return {"name": self.name}


class GreedySampler(Sampler):
    """The most probable token (argmax of the logits; ties go to the lowest id in numpy and TensorFlow alike)."""

    name = "greedy"

    def get_next_token(self, logits, ops):
        return ops.argmax(logits)


SAMPLERS: dict[str, type[Sampler]] = {GreedySampler.name: GreedySampler}


def get_sampler(name: str | Sampler = "greedy") -> Sampler:
    """A sampler by name (``greedy``), or the instance given."""
    if isinstance(name, Sampler):
        return name
    if name not in SAMPLERS:
        from .errors import AttnkitError

        raise AttnkitError(f"`{name}` is not a sampler. Valid samplers: {', '.join(SAMPLERS)}.", flag="sampler")
    return SAMPLERS[name]()


def sequence_lengths(tokens: np.ndarray, eos_id: int) -> np.ndarray:
    """Tokens up to and including the first ``eos_id`` per row (all of them when there is none)."""
    hit = tokens == eos_id
    return np.where(hit.any(1), hit.argmax(1) + 1, tokens.shape[1]).astype("int32")
