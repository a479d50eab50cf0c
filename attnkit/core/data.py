"""The user's own inputs (``--data FILE.npz``): resolved once, checked against the model's inputs, checksummed and
split into calibration rows and held-out rows. Every service reads this object, never the file.

An ``.npz`` holds one array per model input (the names the manifest's spec and ``attnkit verify`` show), rows on
axis 0, and optionally ``labels`` (one class per row, or one per position). A ``padding_mask`` input may be left
out: every position is then real. The first :func:`calibration_rows` rows calibrate (NNCF's post-training
quantisation in the OpenVINO int8 search); the rest are held out, and agreement and task metrics are measured on
them only, so a quantiser is never judged on the rows it was fitted to. Random draws stay beside them: they find
shape bugs that one data set's lengths never reach.

Texts (``.txt``: one per non-empty line; ``.jsonl``: one ``{"text": ..., "label": ...}`` object per line, the
label optional) are tokenised with the model's own tokenizer (a keras-hub preprocessor saved with the model), a
start token prepended where its preprocessor adds one, cut to the longest sequence the model takes and padded on
the right with a padding mask, as its preprocessor does. A model without a tokenizer takes an ``.npz``.

Written here because no library does it for attnkit's inputs: NNCF's ``Dataset`` and onnxruntime's
``CalibrationDataReader`` take batches they are handed, and neither checks them against a model's interface.
"""

from __future__ import annotations

import hashlib
import json
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import AttnkitError

LABELS = "labels"
#: suffixes read as texts (tokenised with the model's tokenizer) rather than arrays
TEXT_SUFFIXES = (".txt", ".jsonl")
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
    texts: dict | None = None  # for texts: how they became ids (tokenizer, texts, truncated)

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
            **({"texts": self.texts} if self.texts else {}),
        }


def load_data(path: str | Path, spec, flag: str = "--data", tokenizer: Callable[[], tuple] | None = None) -> UserData:
    """Read and check ``path`` against ``spec`` (an :class:`attnkit.core.spec.ExportSpec`).

    Args:
        tokenizer: for texts, called once: ``(tokenizer, start token id or None)`` of the model
            (:func:`attnkit.models.keras_hub.tokenizer_of`), or ``(None, None)`` where it has none.

    Raises:
        AttnkitError: missing or unreadable file, no rows, a missing or unknown array, a wrong dtype or rank,
            rows that disagree between arrays, token ids outside the vocabulary, a sequence longer than the
            model takes, or too few rows to hold some out; texts for a model without a tokenizer, or a line that
            is not a text. Each names ``flag`` and says what was found.
    """
    path = Path(path)
    if not path.is_file():
        raise AttnkitError(f"file `{path}` does not exist.", flag=flag,
                           hint="Give an .npz with one array per input, or a .txt/.jsonl of texts.")  # fmt: skip
    if path.suffix in TEXT_SUFFIXES:
        return _load_texts(path, spec, flag, tokenizer)
    if path.suffix != ".npz" or not zipfile.is_zipfile(path):
        raise AttnkitError(
            f"`{path}` is not an .npz file (nor .txt/.jsonl texts).", flag=flag,
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
    return _user_data(path, hashlib.sha256(raw).hexdigest(), arrays, labels, flag)


def _user_data(path: Path, sha256: str, arrays: dict, labels, flag: str, texts: dict | None = None) -> UserData:
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
    return UserData(str(path), sha256, arrays, labels, calibration_rows(rows), texts)


def _read_texts(path: Path, raw: bytes, flag: str) -> tuple[list[str], list[int] | None]:
    """The texts of a ``.txt`` (one per non-empty line) or ``.jsonl`` (``text``, optional ``label``) file."""
    try:
        lines = raw.decode("utf-8").splitlines()
    except UnicodeDecodeError as e:
        raise AttnkitError(f"`{path}` is not UTF-8 text ({e.reason} at byte {e.start}).", flag=flag) from None
    numbered = [(i, line) for i, line in enumerate(lines, 1) if line.strip()]
    if path.suffix == ".txt":
        return [line for _, line in numbered], None
    texts, labels = [], []
    for i, line in numbered:
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise AttnkitError(f"`{path}` line {i} is not JSON ({e.msg}).", flag=flag,
                               hint='Write one object per line: {"text": "...", "label": 0}.') from None  # fmt: skip
        if not isinstance(row, dict) or not isinstance(row.get("text"), str):
            raise AttnkitError(f"`{path}` line {i} has no string `text`.", flag=flag,
                               hint='Write one object per line: {"text": "...", "label": 0}.')  # fmt: skip
        label = row.get("label")
        if label is not None and (not isinstance(label, int) or isinstance(label, bool)):
            raise AttnkitError(f"`{path}` line {i}: `label` must be an integer class; got {label!r}.", flag=flag)
        texts.append(row["text"])
        labels.append(label)
    given = [x is not None for x in labels]
    if any(given) and not all(given):
        first = given.index(False) if given[0] else given.index(True)
        raise AttnkitError(f"`{path}`: some lines have a `label` and some do not (first differing: text {first + 1}).",
                           flag=flag)  # fmt: skip
    return texts, (labels if all(given) and labels else None)


def _load_texts(path: Path, spec, flag: str, tokenizer) -> UserData:
    """Texts tokenised with the model's own tokenizer into ``token_ids`` and ``padding_mask`` rows."""
    tokens = [t for t in spec.inputs if t.role == "tokens"]
    masks = [t for t in spec.inputs if t.role == "padding_mask"]
    if len(tokens) != 1 or len(spec.inputs) != len(tokens) + len(masks):
        raise AttnkitError(
            f"`{path}` holds texts; this model takes {', '.join(spec.input_names)}, which one text per row does not "
            "fill.", flag=flag, hint="Give an .npz with one array per input.",
        )  # fmt: skip
    raw = path.read_bytes()
    texts, labels = _read_texts(path, raw, flag)
    if not texts:
        raise AttnkitError(f"`{path}` holds no text.", flag=flag, hint="Write one text per line.")
    model_tokenizer, start = tokenizer() if tokenizer is not None else (None, None)
    if model_tokenizer is None:
        raise AttnkitError(
            f"`{path}` holds texts, and this model carries no tokenizer (a keras-hub preprocessor saved with it) to "
            "turn them into ids.", flag=flag,
            hint="Tokenise them with the model's tokenizer and give an .npz (token_ids, padding_mask).",
        )  # fmt: skip
    longest = spec.max_sequence or spec.sequence.max
    ids, truncated = [], 0
    for text in texts:
        row = [int(x) for x in np.asarray(model_tokenizer(text)).reshape(-1)]
        row = ([int(start)] if start is not None else []) + row
        truncated += len(row) > longest
        ids.append(row[:longest] or [int(start) if start is not None else 0])
    width = max(len(r) for r in ids)
    token_ids = np.zeros((len(ids), width), tokens[0].dtype)
    mask = np.zeros((len(ids), width), masks[0].dtype if masks else "int32")
    for i, r in enumerate(ids):
        token_ids[i, : len(r)], mask[i, : len(r)] = r, 1
    arrays = {tokens[0].name: token_ids, **({masks[0].name: mask} if masks else {})}
    arrays = {t.name: _checked_array(path, arrays[t.name], t, spec, flag) for t in spec.inputs}
    record = {"tokenizer": type(model_tokenizer).__name__, "texts": len(texts), "longest": width,
              "truncated": truncated, "start_token": start}  # fmt: skip
    return _user_data(path, hashlib.sha256(raw).hexdigest(), arrays,
                      np.asarray(labels, np.int64) if labels is not None else None, flag, record)  # fmt: skip


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
