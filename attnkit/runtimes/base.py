"""The Runner protocol shared by verify and bench, the export-directory Source, and the registry.

Runners follow Polygraphy's template methods: public ``load``/``infer``/``close`` check state and
inputs, then call ``_load``/``_infer``/``_close``. Heavy work happens in ``load``, never in
``__init__``, and heavy libraries are imported there too.
"""

from __future__ import annotations

import warnings
from abc import ABC, abstractmethod
from functools import cached_property
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from ..errors import BackendError
from ..exporters.manifest import ArtifactRecord, Manifest
from ..spec import ExportSpec


class Source:
    """An export directory as runners see it: manifest, spec, artifact paths, the Keras model."""

    def __init__(
        self,
        root: str | Path,
        manifest: Manifest | None = None,
        *,
        unsafe: bool = False,
        imports: tuple[str, ...] | list[str] = (),
    ):
        self.root = Path(root)
        self.manifest = manifest or Manifest.load(self.root)
        #: unsafe Keras deserialisation comes from the caller's --unsafe only, never from the manifest:
        #: a downloaded export directory must not be able to switch safe_mode off
        self.unsafe = unsafe
        self.imports = tuple(imports)

    @property
    def spec(self) -> ExportSpec:
        return self.manifest.spec

    def artifact(self, fmt: str, precision: str | None = None) -> ArtifactRecord:
        """The manifest record of an artifact, or BackendError saying it was not exported."""
        record = self.manifest.artifact(fmt, precision)
        if record is None:
            have = ", ".join(f"{a.format}/{a.precision}" for a in self.manifest.artifacts) or "nothing"
            what = f"{fmt}/{precision}" if precision else fmt
            hint = (
                f"Add it with: attnkit export {self.root} --format tensorrt --precision {precision or 'fp32'}"
                if fmt == "tensorrt"
                else f"Export it with: attnkit export MODEL --format {fmt} --precision {precision or 'fp32'} --out NEW"
            )
            raise BackendError(f"`{self.root}` has no {what} artifact (it has {have}).", flag="--backends", hint=hint)
        return record

    def path(self, fmt: str, precision: str | None = None) -> Path:
        return self.root / self.artifact(fmt, precision).path

    @cached_property
    def keras_model(self):
        """The float32 Keras model saved in the export (the reference), loaded once."""
        from ..models.loading import import_modules, load_keras_file

        recorded = []
        for mod in self.manifest.model.get("imports", []):
            # .py files are copied into the export (custom_objects/) and recorded relative to it
            local = self.root / mod
            recorded.append(str(local) if mod.endswith(".py") and local.is_file() else mod)
        import_modules([*recorded, *self.imports])
        return load_keras_file(self.path("keras"), unsafe=self.unsafe)


class Loadable(ABC):
    """The life cycle every backend shares (Polygraphy's template methods): a precision check at
    construction, ``unavailable_reason``, heavy work in ``load`` (``_load``), ``close`` (``_close``),
    ``with runner:``. :class:`Runner` adds ``infer``; generation's step runners add encode/prefill/decode."""

    name: ClassVar[str]
    precisions: ClassVar[tuple[str, ...]] = ("fp32",)

    def __init__(self, source: Source, precision: str = "fp32", threads: int | None = None):
        if precision not in self.precisions:
            raise BackendError(
                f"backend `{self.name}` cannot run {precision}; it runs {', '.join(self.precisions)}.",
                flag="--precision",
            )
        self.source = source
        self.precision = precision
        self.threads = threads
        self.loaded = False

    @classmethod
    def unavailable_reason(cls) -> str | None:
        """Why this backend cannot run on this machine, or None when it can."""
        return None

    @property
    def label(self) -> str:
        return self.name if self.precision == "fp32" else f"{self.name}[{self.precision}]"

    def load(self):
        if not self.loaded:
            reason = self.unavailable_reason()
            if reason:
                raise BackendError(f"backend `{self.name}` cannot run here: {reason}.")
            self._load()
            self.loaded = True
        return self

    def close(self) -> None:
        if self.loaded:
            self._close()
            self.loaded = False

    def __enter__(self):
        return self.load()

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __del__(self):
        if getattr(self, "loaded", False):
            warnings.warn(f"runner `{self.label}` was loaded and never closed", ResourceWarning, stacklevel=1)

    @abstractmethod
    def _load(self) -> None: ...

    def _close(self) -> None:  # noqa: B027  (optional hook, not abstract)
        """Release what ``_load`` acquired; by default nothing."""


class Runner(Loadable):
    """One backend running one model. Use as ``with runner: runner.infer(feeds)``.

    Class attributes (the registry's whole knowledge of a backend; nothing else lists backends):
        name: registry key, e.g. ``onnxruntime``.
        needs: artifact format the runner reads from the export directory.
        precisions: precisions this backend can run.
        verifies: the backend ``verify`` checks each artifact of format ``needs`` with (one per format).
        bench_default: measured by ``bench`` when no ``--backends`` is given.
    """

    needs: ClassVar[str]
    verifies: ClassVar[bool] = False
    bench_default: ClassVar[bool] = False

    def infer(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run once; returns host (numpy) arrays keyed by output name."""
        if not self.loaded:
            raise BackendError(f"runner `{self.label}` must be loaded before infer(); use `with runner:`.")
        missing = set(self.source.spec.input_names) - set(feeds)
        if missing:
            raise BackendError(f"runner `{self.label}` is missing inputs {sorted(missing)}.")
        return self._infer(feeds)

    @abstractmethod
    def _infer(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]: ...


RUNNERS: dict[str, type[Runner]] = {}


def register(cls: type[Runner]) -> type[Runner]:
    """Class decorator adding a runner to the registry under ``cls.name``."""
    RUNNERS[cls.name] = cls
    return cls
