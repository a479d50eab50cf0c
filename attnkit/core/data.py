"""The user's own inputs (``--data FILE.npz``): resolved once, checked against the model's inputs, checksummed and
split into calibration rows and held-out rows. Every service reads this object, never the file.

An ``.npz`` holds one array per model input (the names the manifest's spec and ``attnkit verify`` show), rows on
axis 0, and optionally ``labels`` (one class per row, or one per position). A ``padding_mask`` input may be left
out: every position is then real. The first :func:`calibration_rows` rows calibrate (NNCF's post-training
quantisation in the OpenVINO int8 search); the rest are held out, and agreement and task metrics are measured on
them only, so a quantiser is never judged on the rows it was fitted to. Random draws stay beside them: they find
shape bugs that one data set's lengths never reach.

Written here because no library does it for attnkit's inputs: NNCF's ``Dataset`` and onnxruntime's
``CalibrationDataReader`` take batches they are handed, and neither checks them against a model's interface.
"""

from __future__ import annotations

import hashlib
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import AttnkitError

LABELS = "labels"
#: rows held out at least (agreement and task metrics need some), and calibration rows at most
MIN_HELD_OUT = 2
MAX_CALIBRATION = 64


def calibration_rows(rows: int) -> int:
    """Half of the rows, at most :data:`MAX_CALIBRATION`, at least one (the rest are held out)."""
    return max(1, min(MAX_CALIBRATION, rows // 2))


@dataclass(frozen=True)
class UserData:
    """Checked arrays of the user's data, split: rows ``[:calibration]`` calibrate, the rest are held out."""

    path: str
    sha256: str
    arrays: dict[str, np.ndarray]
    labels: np.ndarray | None
    calibration: int

    @property
    def rows(self) -> int:
        return len(next(iter(self.arrays.values())))

    def batches(self, part: str, batch: int = 8) -> list[dict[str, np.ndarray]]:
        """``part`` (``calibration`` or ``held_out``) in feeds of at most ``batch`` rows, in file order."""
        lo, hi = (0, self.calibration) if part == "calibration" else (self.calibration, self.rows)
        return [{k: v[i : min(i + batch, hi)] for k, v in self.arrays.items()} for i in range(lo, hi, batch)]

    def held_out_labels(self, batch: int = 8) -> list[np.ndarray] | None:
        if self.labels is None:
            return None
        return [self.labels[i : min(i + batch, self.rows)] for i in range(self.calibration, self.rows, batch)]

    def record(self) -> dict:
        """What the manifest and the reports record of it."""
        return {
            "path": self.path,
            "sha256": self.sha256,
            "rows": self.rows,
            "calibration_rows": self.calibration,
            "held_out_rows": self.rows - self.calibration,
            "labels": self.labels is not None,
            "split": f"rows [0, {self.calibration}) calibrate, rows [{self.calibration}, {self.rows}) are held out",
        }


def load_data(path: str | Path, spec, flag: str = "--data") -> UserData:
    """Read and check ``path`` against ``spec`` (an :class:`attnkit.core.spec.ExportSpec`).

    Raises:
        AttnkitError: missing or unreadable file, no rows, a missing or unknown array, a wrong dtype or rank,
            rows that disagree between arrays, token ids outside the vocabulary, a sequence longer than the
            model takes, or too few rows to hold some out. Each names ``flag`` and says what was found.
    """
    path = Path(path)
    if not path.is_file():
        raise AttnkitError(f"file `{path}` does not exist.", flag=flag, hint="Give an .npz with one array per input.")
    if path.suffix != ".npz" or not zipfile.is_zipfile(path):
        raise AttnkitError(
            f"`{path}` is not an .npz file.", flag=flag,
            hint="Write it with numpy.savez(path, token_ids=..., padding_mask=...), one array per model input.",
        )  # fmt: skip
    raw = path.read_bytes()
    try:
        with np.load(path, allow_pickle=False) as npz:
            loaded = {k: npz[k] for k in npz.files}
    except (ValueError, OSError, zipfile.BadZipFile) as e:
        raise AttnkitError(f"`{path}` could not be read: {str(e).splitlines()[0][:160]}.", flag=flag) from None
    if not loaded:
        raise AttnkitError(f"`{path}` holds no arrays.", flag=flag, hint=f"Give {', '.join(spec.input_names)}.")
    labels = loaded.pop(LABELS, None)
    arrays = _checked_inputs(path, loaded, spec, flag)
    rows = len(next(iter(arrays.values())))
    if labels is not None and (labels.ndim < 1 or len(labels) != rows or not np.issubdtype(labels.dtype, np.integer)):
        raise AttnkitError(
            f"`{path}`: `labels` must be integers with one entry per row ({rows}); got {labels.dtype} {labels.shape}.",
            flag=flag,
        )
    if rows < 1 + MIN_HELD_OUT:
        raise AttnkitError(
            f"`{path}` has {rows} row(s); at least {1 + MIN_HELD_OUT} are needed (1 to calibrate, "
            f"{MIN_HELD_OUT} held out to check on).",
            flag=flag,
        )
    return UserData(str(path), hashlib.sha256(raw).hexdigest(), arrays, labels, calibration_rows(rows))


def _checked_inputs(path: Path, loaded: dict[str, np.ndarray], spec, flag: str) -> dict[str, np.ndarray]:
    unknown = sorted(set(loaded) - set(spec.input_names))
    if unknown:
        raise AttnkitError(
            f"`{path}` has array(s) {', '.join(unknown)} that are not model inputs; the inputs are "
            f"{', '.join(spec.input_names)} (and `{LABELS}`).",
            flag=flag,
        )
    arrays: dict[str, np.ndarray] = {}
    others = [t for t in spec.inputs if t.role != "padding_mask"]
    for t in spec.inputs:
        if t.name not in loaded:
            if t.role == "padding_mask" and others:
                continue  # filled below: every position real
            raise AttnkitError(
                f"`{path}` has no array `{t.name}`; the model's inputs are {', '.join(spec.input_names)}.",
                flag=flag,
            )
        arrays[t.name] = _checked_array(path, loaded[t.name], t, spec, flag)
    rows = {name: len(a) for name, a in arrays.items()}
    if len(set(rows.values())) != 1:
        raise AttnkitError(f"`{path}`: the arrays have different numbers of rows: {rows}.", flag=flag)
    if not next(iter(rows.values())):
        raise AttnkitError(f"`{path}` has no rows.", flag=flag)
    for t in spec.inputs:
        if t.name not in arrays:  # a left-out padding mask, the shape of the tokens it masks
            tokens = next(a for n, a in arrays.items() if n != t.name)
            arrays[t.name] = np.ones(tokens.shape[: len(t.shape)], dtype=t.dtype)
    return {t.name: arrays[t.name] for t in spec.inputs}


def _checked_array(path: Path, a: np.ndarray, t, spec, flag: str) -> np.ndarray:
    if a.ndim != len(t.shape):
        raise AttnkitError(
            f"`{path}`: `{t.name}` has {a.ndim} dimension(s) {a.shape}; the model takes {len(t.shape)} "
            f"({', '.join(x or '?' for x in t.axes)}).",
            flag=flag,
        )
    for dim, want, axis in zip(a.shape[1:], t.shape[1:], t.axes[1:]):
        if want is not None and dim != want:
            raise AttnkitError(f"`{path}`: `{t.name}` has {dim} on axis {axis}; the model takes {want}.", flag=flag)
    if spec.max_sequence and a.ndim > 1 and a.shape[1] > spec.max_sequence:
        raise AttnkitError(
            f"`{path}`: `{t.name}` has sequences of {a.shape[1]}; the model takes at most {spec.max_sequence}.",
            flag=flag,
        )
    integer = np.issubdtype(a.dtype, np.integer) or a.dtype == np.bool_
    if t.role in ("tokens", "padding_mask") and not integer:
        raise AttnkitError(f"`{path}`: `{t.name}` is {a.dtype}; token ids and masks must be integers.", flag=flag)
    if t.role == "features" and not np.issubdtype(a.dtype, np.floating):
        raise AttnkitError(f"`{path}`: `{t.name}` is {a.dtype}; the model takes {t.dtype}.", flag=flag)
    if t.role == "tokens" and a.size and (a.min() < 0 or a.max() >= t.high):
        raise AttnkitError(
            f"`{path}`: `{t.name}` has ids from {a.min()} to {a.max()}; the vocabulary is [0, {t.high}).",
            flag=flag,
            hint="Tokenise with the model's own tokenizer.",
        )
    return a.astype(t.dtype)
