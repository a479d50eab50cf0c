"""ExportSpec: the one description of a model's interface that travels from export to bench.

Export writes it into ``manifest.json``; verify, bench and packaging read it back, so nothing
downstream re-derives input names, dtypes or dynamic axes.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .errors import AttnkitError

#: the dynamic axis of a seq2seq model's decoder side (its encoder side is "sequence")
TARGET_AXIS = "target_sequence"


@dataclass(frozen=True)
class TensorSpec:
    """One named input or output.

    Args:
        name: tensor name, identical in Keras, SavedModel signature, ONNX and Triton.
        dtype: numpy dtype name (``float32``, ``int32``...).
        shape: dimensions, ``None`` for dynamic ones.
        axes: a name per dimension (``batch``, ``sequence``) or ``None`` for static ones.
        role: ``features`` (float), ``tokens`` (int ids in ``[low, high)``) or ``padding_mask``
            (1 = real token, 0 = padding).
        high: exclusive upper bound of token ids.
    """

    name: str
    dtype: str
    shape: tuple[int | None, ...]
    axes: tuple[str | None, ...] = ()
    role: str = "features"
    high: int = 2

    def concrete_shape(self, sizes: dict[str, int]) -> tuple[int, ...]:
        """Shape with each named dynamic axis replaced by ``sizes[axis]``."""
        out = []
        for dim, axis in zip(self.shape, self.axes or (None,) * len(self.shape)):
            if dim is not None:
                out.append(int(dim))
            elif axis in sizes:
                out.append(int(sizes[axis]))
            else:
                raise AttnkitError(f"input `{self.name}` has a dynamic axis {axis!r} with no size given.")
        return tuple(out)


@dataclass(frozen=True)
class ShapeRange:
    """Minimum, optimum and maximum of a dynamic axis (TensorRT profiles, Triton limits)."""

    min: int
    opt: int
    max: int

    def __post_init__(self) -> None:
        if not 1 <= self.min <= self.opt <= self.max:
            raise AttnkitError(f"a shape range needs 1 <= min <= opt <= max; got {self.min}:{self.opt}:{self.max}.")

    def as_list(self) -> list[int]:
        return [self.min, self.opt, self.max]


@dataclass(frozen=True)
class ExportSpec:
    """Interface of one model: named inputs/outputs, dynamic axes and their ranges.

    Every non-batch dynamic axis is a sequence axis and takes its size from ``sequence``.
    """

    name: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    batch: ShapeRange = ShapeRange(1, 8, 32)
    sequence: ShapeRange = ShapeRange(16, 128, 512)
    opset: int = 17
    max_sequence: int | None = None
    extra: dict[str, Any] = field(default_factory=dict, compare=False)

    @property
    def input_names(self) -> list[str]:
        return [t.name for t in self.inputs]

    @property
    def output_names(self) -> list[str]:
        return [t.name for t in self.outputs]

    def sizes(self, batch: int, seq: int) -> dict[str, int]:
        """Sizes of every named dynamic axis for one workload shape."""
        sizes = {"batch": batch}
        for t in self.inputs + self.outputs:
            for axis in t.axes:
                if axis and axis != "batch":
                    sizes[axis] = seq
        return sizes

    def sample_draws(
        self, shapes: list[tuple[int, int]], seed: int, draws: int = 1
    ) -> dict[tuple[int, int], list[dict[str, np.ndarray]]]:
        """``draws`` input draws of each (batch, seq) shape, one seed each: draw k of shape i has seed
        ``seed + k * len(shapes) + i``, so draw 0 is what a one-draw check of the same shapes sees, and the
        draws of ``verify`` and ``bench`` are numbered alike."""
        return {
            (b, s): [self.sample_feeds(b, s, seed + k * len(shapes) + i, self.check_target(s)) for k in range(draws)]
            for i, (b, s) in enumerate(shapes)
        }

    def check_target(self, seq: int) -> int:
        """The target length a check draws beside a source of ``seq`` (a seq2seq model's decoder side): a third
        shorter, within the spec's range, so that source and target lengths differ wherever the range allows. Equal
        lengths hid an int8 ONNX whose shape inference had tied the two (a translator failed on its first real
        data, issue 35)."""
        return max(min(self.sequence.min, seq), seq - seq // 3)

    def sample_feeds(self, batch: int, seq: int, seed: int, target: int | None = None) -> dict[str, np.ndarray]:
        """Fresh random inputs for one shape: normal floats, token ids >= 1, ragged padding masks.

        The first row of every padding mask is full length and the others have random valid
        lengths in ``[seq // 2, seq]``, so masked positions are exercised but no row is empty. ``target``: the
        length of a seq2seq model's :data:`TARGET_AXIS` (default ``seq``).
        """
        rng = np.random.default_rng(seed)
        sizes = self.sizes(batch, seq)
        if target is not None and TARGET_AXIS in sizes:
            sizes[TARGET_AXIS] = target
        feeds = {}
        for t in self.inputs:
            shape = t.concrete_shape(sizes)
            if t.role == "padding_mask":
                lengths = rng.integers(max(1, shape[-1] // 2), shape[-1] + 1, size=shape[:-1])
                lengths.reshape(-1)[:1] = shape[-1]
                arr = np.arange(shape[-1]) < lengths[..., None]
            elif t.role == "tokens":
                arr = rng.integers(1, max(2, t.high), size=shape)
            else:
                arr = rng.standard_normal(shape)
            feeds[t.name] = arr.astype(t.dtype)
        return feeds

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["batch"] = self.batch.as_list()
        d["sequence"] = self.sequence.as_list()
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ExportSpec:
        def tensor(t: dict[str, Any]) -> TensorSpec:
            return TensorSpec(**{**t, "shape": tuple(t["shape"]), "axes": tuple(t["axes"])})

        return cls(
            name=d["name"],
            inputs=tuple(tensor(t) for t in d["inputs"]),
            outputs=tuple(tensor(t) for t in d["outputs"]),
            batch=ShapeRange(*d["batch"]),
            sequence=ShapeRange(*d["sequence"]),
            opset=d.get("opset", 17),
            max_sequence=d.get("max_sequence"),
            extra=d.get("extra", {}),
        )
