"""The Runner protocol shared by verify, bench and generation, the export-directory Source, and the registry.

Runners follow Polygraphy's template methods: public ``load``/``infer``/``close`` check state and
inputs, then call ``_load``/``_infer``/``_close``. Heavy work happens in ``load``, never in
``__init__``, and heavy libraries are imported there too.

One registry, keyed by backend and task (:data:`attnkit.core.names.TASKS`): a backend module registers a
runner class per thing it can do (``forward``: :class:`Runner`; ``decode_step``: :class:`StepRunner`;
``generate``: :class:`GenerateRunner`). A backend that cannot do a task registers nothing for it, and may
say why (``not_for``), so tables and ``env`` can tell the user once instead of listing empty rows.
"""

from __future__ import annotations

import warnings
from abc import ABC, abstractmethod
from functools import cached_property
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from ..core.errors import ArtifactError, BackendError
from ..core.genspec import GenerationSpec
from ..core.names import DECODE_STEP, FORWARD, GENERATE, ROLE_DECODER_WITH_PAST, ROLE_SIGNATURES
from ..core.spec import ExportSpec
from ..exporters.manifest import ArtifactRecord, GenerationSection, Manifest


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

    @property
    def generation(self) -> GenerationSection:
        """The typed generation section, or ArtifactError saying how to export one."""
        if self.manifest.generation is None:
            raise ArtifactError(
                f"`{self.root}` has no generation export (decode step with a KV cache).",
                flag="DIR",
                hint="Export one with: attnkit export MODEL --generate",
            )
        return self.manifest.generation

    def generation_path(self, role: str, fmt: str, precision: str = "fp32") -> Path:
        """Path of a generation artifact, or BackendError naming what the export has."""
        section = self.generation
        record = section.artifact(role, fmt, precision)
        if record is None:
            have = ", ".join(f"{a.role}/{a.format}/{a.precision}" for a in section.artifacts)
            raise BackendError(
                f"`{self.root}` has no {role} {fmt}/{precision} generation artifact (it has {have}).",
                flag="--backends",
                hint=f"Export it with: attnkit export MODEL --generate --precision {precision} --out NEW",
            )
        return self.root / record.path

    def data(self, data, flag: str = "--data"):
        """The user's ``--data`` (a path, or :class:`~attnkit.core.data.UserData` as is) checked against this
        export's inputs; texts are tokenised with the saved model's own tokenizer (loaded only for texts)."""
        from ..core.data import UserData, load_data

        if isinstance(data, UserData):
            return data

        def tokenizer():
            from ..models.keras_hub import tokenizer_of

            return tokenizer_of(self.keras_model)

        return load_data(data, self.spec, flag, tokenizer=tokenizer)

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
    task: ClassVar[str]
    #: the artifact format the runner reads from the export directory (``keras``: model.keras itself)
    needs: ClassVar[str]
    precisions: ClassVar[tuple[str, ...]] = ("fp32",)
    #: tasks this backend cannot do, with the reason (shown once under a table and in ``env``)
    not_for: ClassVar[dict[str, str]] = {}
    #: the backend whose forward runner runs this one's full model (the generation bench's recompute
    #: baseline); None: this backend's own
    full_model: ClassVar[str | None] = None

    def __init__(self, source: Source, precision: str = "fp32", threads: int | None = None):
        if precision not in self.precisions:
            raise BackendError(
                f"backend `{self.name}` cannot run {precision}; it runs {', '.join(self.precisions)}.",
                flag="--precision",
            )
        self.source = source
        self.precision = precision
        #: the precision the backend really computes in, as it reports it after load (OpenVINO may not take
        #: what was asked); rows are labelled with it when it differs
        self.ran_as = precision
        #: the arithmetic its matmuls run in, when not ``ran_as``'s (weight-only int8 decompresses to f32): the
        #: peak a row is measured against
        self.computes_in: str | None = None
        self.threads = threads
        self.loaded = False
        #: what ``load`` moved onto 2 MiB pages (:class:`attnkit.core.hugepages.Collapsed`), after load
        self.huge_pages = None

    @classmethod
    def unavailable_reason(cls) -> str | None:
        """Why this backend cannot run on this machine, or None when it can."""
        return None

    @classmethod
    def inapplicable(cls, source: Source) -> str | None:
        """Why this runner has nothing to run for ``source`` (e.g. keras-hub's own ``generate()`` on a model
        that is not keras-hub's), or None. A runner that does not apply gets no row; named, it is refused."""
        return None

    @classmethod
    def applies(cls, source: Source) -> bool:
        return cls.inapplicable(source) is None

    @property
    def label(self) -> str:
        return label(self.name, self.precision, self.task)

    def load(self):
        if not self.loaded:
            reason = self.unavailable_reason()
            if reason:
                raise BackendError(f"backend `{self.name}` cannot run here: {reason}.")
            from ..core.hugepages import huge_pages_after

            # the weights it loaded, onto 2 MiB pages (every backend alike; why and how: core.hugepages)
            with huge_pages_after() as self.huge_pages:
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

    task = FORWARD
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


class StepRunner(Loadable):
    """One backend's generation functions (``decode_step``): ``encode`` (seq2seq), ``prefill`` and ``decode``,
    each host arrays in, host arrays out. The numpy loop (:func:`attnkit.generation.loop.decode`) drives them.
    Subclasses implement ``_load`` and ``_prefill``/``_decode`` (``_encode`` for seq2seq)."""

    task = DECODE_STEP
    #: the generation artifact's role the runner reads (with ``needs``, its format)
    role: ClassVar[str] = ROLE_DECODER_WITH_PAST
    #: the runner keeps the KV cache itself (a stateful model): ``prefill`` starts a new one, ``decode``
    #: takes no ``past_key_values.*`` and returns no ``present.*``; the loop then hands none back
    keeps_cache: ClassVar[bool] = False

    def __init__(self, source: Source, precision: str = "fp32", threads: int | None = None):
        super().__init__(source, precision, threads)
        self.gspec: GenerationSpec = source.generation.spec

    def check_cache(self, feeds: dict[str, np.ndarray]) -> None:
        """A cache from another model (other layers, heads or depth) is refused before it reaches a kernel."""
        g = self.gspec
        expected = (g.num_heads, g.depth)
        for name in g.past_names() + (g.cross_names() if g.seq2seq else []):
            arr = feeds.get(name)
            if arr is None:
                raise BackendError(
                    f"the cache has no `{name}`: a cache from another model (this one has {g.num_layers} layers)."
                )
            if arr.ndim != 4 or tuple(arr.shape[1::2]) != expected:
                raise BackendError(
                    f"`{name}` has shape {tuple(arr.shape)}, not (batch, {g.num_heads}, past, {g.depth}): "
                    "a cache from another model."
                )

    def _check_loaded(self) -> None:
        if not self.loaded:
            raise BackendError(f"runner `{self.label}` must be loaded first; use `with runner:`.")

    def encode(self, feeds):
        self._check_loaded()
        return self._encode(feeds)

    def prefill(self, feeds):
        self._check_loaded()
        return self._prefill(feeds)

    def decode(self, feeds):
        self._check_loaded()
        if not self.keeps_cache:
            self.check_cache(feeds)
        return self._decode(feeds)

    def _encode(self, feeds):
        raise NotImplementedError(f"`{self.name}` has no encoder")

    @abstractmethod
    def _prefill(self, feeds): ...

    @abstractmethod
    def _decode(self, feeds): ...


class GenerateRunner(Loadable):
    """The whole decoding loop in one call (``generate``): the prompt (and source) in, every token out."""

    task = GENERATE
    role: ClassVar[str] = ROLE_SIGNATURES

    def __init__(self, source: Source, precision: str = "fp32", threads: int | None = None):
        super().__init__(source, precision, threads)
        self.gspec: GenerationSpec = source.generation.spec

    def generate(self, feeds: dict[str, np.ndarray], max_new_tokens: int, eos_id: int = -1) -> dict[str, np.ndarray]:
        """``feeds``: the prompt's ids and padding mask (and the seq2seq source) by the spec's names."""
        if not self.loaded:
            raise BackendError(f"runner `{self.label}` must be loaded first; use `with runner:`.")
        ids = feeds[self.gspec.ids]
        source = feeds.get(self.gspec.encoder_ids)
        self.gspec.check_request(ids.shape[1], max_new_tokens, None if source is None else source.shape[1])
        return self._generate(feeds, max_new_tokens, eos_id)

    @abstractmethod
    def _generate(self, feeds, max_new_tokens: int, eos_id: int) -> dict[str, np.ndarray]: ...


def by_prompt_length(ids: np.ndarray, mask: np.ndarray, max_new_tokens: int, fill: int, run) -> np.ndarray:
    """The new tokens (batch, max_new_tokens) of a generation library that takes unpadded prompts of one length
    per batch (onnxruntime-genai, OpenVINO GenAI): ``run(rows)`` on each group of equal-length prompts, their
    padding removed, returns each row's new tokens (up to its stop); ``fill`` follows a row's last token.
    attnkit pads prompts on the right; these libraries expect left padding or none (onnxruntime-genai 0.18
    gives a left-padded batch an all-ones mask, measured), so a ragged batch runs one length at a time."""
    lengths = mask.sum(axis=1)
    rows: list = [()] * len(ids)
    for n in sorted(set(lengths.tolist())):
        group = np.flatnonzero(lengths == n)
        for b, row in zip(group, run(np.stack([ids[b, mask[b] == 1] for b in group]))):
            rows[b] = row
    return token_array(rows, max_new_tokens, fill)


def token_array(rows, max_new_tokens: int, fill: int) -> np.ndarray:
    """(batch, max_new_tokens) int32 of each row's new tokens as a generation library returned them (up to its
    stop, perhaps longer than asked), ``fill`` after a row's last token."""
    tokens = np.full((len(rows), max_new_tokens), fill, "int32")
    for b, row in enumerate(rows):
        row = np.asarray(row)[:max_new_tokens]
        tokens[b, : len(row)] = row
    return tokens


def label(name: str, precision: str = "fp32", task: str = FORWARD) -> str:
    """How a row names a runner: ``onnxruntime``, ``onnxruntime[int8]``, ``savedmodel/generate``."""
    base = name if task != GENERATE else f"{name}/{GENERATE}"
    return base if precision == "fp32" else f"{base}[{precision}]"


def ran_label(text: str, precision: str, ran_as: str | None) -> str:
    """``text`` with what the runtime really computed in where that is not ``precision`` (OpenVINO's plugin takes
    a bf16 hint as f32 on a CPU without bf16, or keeps its cache in u8): ``openvino-genai[bf16] (ran fp32)``."""
    return text if not ran_as or ran_as == precision else f"{text} (ran {ran_as})"


#: backend name -> task -> runner class; filled by @register in each backend module, read by the registry
REGISTRY: dict[str, dict[str, type[Loadable]]] = {}


def register(cls: type[Loadable]) -> type[Loadable]:
    """Class decorator adding a runner to the registry under ``(cls.name, cls.task)``."""
    REGISTRY.setdefault(cls.name, {})[cls.task] = cls
    return cls
