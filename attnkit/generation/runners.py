"""Step runners: the encode / prefill / decode-step functions of one backend over an export directory.

They follow the :class:`attnkit.runtimes.base.Runner` template (heavy work in ``load``, ``with runner:``,
``unavailable_reason``), with the three generation entry points in place of ``infer``. A separate
registry (``STEP_RUNNERS``) keeps them out of the full-forward backends of verify and bench.
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

import numpy as np

from ..errors import ArtifactError, BackendError
from ..runtimes.base import Loadable, Source
from .spec import GenerationSpec


def generation_section(source: Source) -> dict:
    """The manifest's ``generation`` section, or ArtifactError saying how to export one."""
    section = source.manifest.generation
    if not section:
        raise ArtifactError(
            f"`{source.root}` has no generation export (decode step with a KV cache).",
            flag="DIR",
            hint="Export one with: attnkit export MODEL --generate",
        )
    return section


def generation_artifact(source: Source, role: str, fmt: str, precision: str = "fp32") -> Path:
    for record in generation_section(source)["artifacts"]:
        if record["role"] == role and record["format"] == fmt and record["precision"] == precision:
            return source.root / record["path"]
    have = ", ".join(f"{a['role']}/{a['format']}/{a['precision']}" for a in generation_section(source)["artifacts"])
    raise BackendError(
        f"`{source.root}` has no {role} {fmt}/{precision} generation artifact (it has {have}).",
        flag="--backends",
        hint=f"Export it with: attnkit export MODEL --generate --precision {precision} --out NEW",
    )


class StepRunner(Loadable):
    """One backend's generation functions. Subclasses implement ``_load`` and ``_encode``/``_prefill``/``_decode``."""

    #: runs the greedy loop in one call (``generate``) instead of step by step
    in_graph: ClassVar[bool] = False

    def __init__(self, source: Source, precision: str = "fp32", threads: int | None = None):
        super().__init__(source, precision, threads)
        self.gspec = GenerationSpec.from_dict(generation_section(source)["spec"])

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

    def encode(self, feeds):
        return self._encode(feeds)

    def prefill(self, feeds):
        return self._prefill(feeds)

    def decode(self, feeds):
        self.check_cache(feeds)
        return self._decode(feeds)

    def _encode(self, feeds):
        raise NotImplementedError


STEP_RUNNERS: dict[str, type[StepRunner]] = {}


def register(cls):
    STEP_RUNNERS[cls.name] = cls
    return cls


def _numpy(out: dict) -> dict[str, np.ndarray]:
    return {k: np.asarray(v) for k, v in out.items()}


@register
class EagerStep(StepRunner):
    """The Keras model's layers called eagerly with their cache arguments (``keras`` with a KV cache)."""

    name = "keras"

    def _load(self):
        from ..models.decoding import Decoding

        self.decoding = Decoding(self.source.keras_model)

    def _encode(self, feeds):
        g = self.gspec
        out = {}
        for i, (k, v) in enumerate(self.decoding.encode(feeds[g.encoder_ids], feeds[g.encoder_mask])):
            out[g.cross(i)[0]], out[g.cross(i)[1]] = np.asarray(k), np.asarray(v)
        return out

    def _run(self, feeds, with_past):
        from .tracing import _step_outputs

        g = self.gspec
        past = [(feeds[k], feeds[v]) for k, v in map(g.past, range(g.num_layers))] if with_past else None
        cross = [(feeds[k], feeds[v]) for k, v in map(g.cross, range(g.num_layers))] if g.seq2seq else None
        logits, presents = self.decoding.step(feeds[g.ids], feeds[g.mask], past, cross, feeds.get(g.encoder_mask))
        return _numpy(_step_outputs(g, logits, presents))

    def _prefill(self, feeds):
        return self._run(feeds, False)

    def _decode(self, feeds):
        return self._run(feeds, True)


class _TFStep(StepRunner):
    """Functions of named tensors (traced, or signatures of a loaded SavedModel), called positionally."""

    def _call(self, fn, specs, feeds):
        return _numpy(fn(*[feeds[t.name] for t in specs]))

    def _encode(self, feeds):
        return self._call(self.fns["encode"], self.gspec.encoder_inputs(), feeds)

    def _prefill(self, feeds):
        return self._call(self.fns["prefill"], self.gspec.step_inputs(False), feeds)

    def _decode(self, feeds):
        return self._call(self.fns["decode_step"], self.gspec.step_inputs(True), feeds)


@register
class TFFunctionStep(_TFStep):
    name = "tf-function"

    def _load(self):
        from ..models.decoding import Decoding
        from .tracing import trace_encode, trace_step

        d = Decoding(self.source.keras_model)
        self.fns = {"prefill": trace_step(d, False), "decode_step": trace_step(d, True)}
        if self.gspec.seq2seq:
            self.fns["encode"] = trace_encode(d)


@register
class SavedModelStep(_TFStep):
    """The ``encode`` / ``prefill`` / ``decode_step`` signatures of ``savedmodel/1``, step by step."""

    name = "savedmodel"

    def _load(self):
        import tensorflow as tf

        path = generation_artifact(self.source, "signatures", "savedmodel")
        self.loaded_model = tf.saved_model.load(str(path))
        sigs = self.loaded_model.signatures
        self.fns = {name: sigs[name] for name in ("prefill", "decode_step", "encode") if name in sigs}

    def _call(self, fn, specs, feeds):
        import tensorflow as tf

        return _numpy(fn(**{t.name: tf.constant(feeds[t.name]) for t in specs}))

    def _close(self):
        self.loaded_model = self.fns = None


@register
class SavedModelGenerate(StepRunner):
    """The in-graph ``generate`` signature (``tf.while_loop``): one call returns every token."""

    name = "savedmodel-generate"
    in_graph = True

    def _load(self):
        import tensorflow as tf

        path = generation_artifact(self.source, "signatures", "savedmodel")
        self.loaded_model = tf.saved_model.load(str(path))
        self.fn = self.loaded_model.signatures["generate"]

    def generate(self, prompts, max_new_tokens: int, eos_id: int = -1) -> dict[str, np.ndarray]:
        import tensorflow as tf

        from .loop import check_request
        from .tracing import EOS_ID, MAX_NEW_TOKENS

        g = self.gspec
        check_request(g, prompts, max_new_tokens)
        feeds = {g.ids: prompts.ids, g.mask: prompts.mask, **prompts.source_feeds(g)}
        feeds = {k: tf.constant(v) for k, v in feeds.items()}
        out = self.fn(**feeds, **{MAX_NEW_TOKENS: tf.constant(max_new_tokens), EOS_ID: tf.constant(eos_id)})
        return _numpy(out)

    def _close(self):
        self.loaded_model = self.fn = None


@register
class OnnxRuntimeStep(StepRunner):
    """``decoder_with_past[.fp16|.int8].onnx`` (and ``encoder*.onnx``) on onnxruntime's CPU provider.

    One decode-step graph serves both phases: the prefill is the step with an empty past
    (past_sequence = 0), the documented switch of this layout.
    """

    name = "onnxruntime"
    precisions = ("fp32", "fp16", "int8")

    @classmethod
    def unavailable_reason(cls):
        from ..runtimes.onnxruntime import OnnxRuntimeRunner

        return OnnxRuntimeRunner.unavailable_reason()

    def _session(self, path):
        from ..runtimes.onnxruntime import session

        return session(path, self.threads)

    def _load(self):
        self.step = self._session(generation_artifact(self.source, "decoder_with_past", "onnx", self.precision))
        self.step_outputs = [o.name for o in self.step.get_outputs()]
        self.encoder = None
        if self.gspec.seq2seq:
            self.encoder = self._session(generation_artifact(self.source, "encoder", "onnx", self.precision))

    def _close(self):
        self.step = self.encoder = None

    def _encode(self, feeds):
        names = [o.name for o in self.encoder.get_outputs()]
        g = self.gspec
        return dict(
            zip(
                names,
                self.encoder.run(names, {g.encoder_ids: feeds[g.encoder_ids], g.encoder_mask: feeds[g.encoder_mask]}),
            )
        )

    def _prefill(self, feeds):
        g = self.gspec
        empty = np.zeros((feeds[g.ids].shape[0], g.num_heads, 0, g.depth), "float32")
        return self._decode({**feeds, **{n: empty for n in g.past_names()}})

    def _decode(self, feeds):
        wanted = {t.name for t in self.gspec.step_inputs(True)}
        return dict(
            zip(self.step_outputs, self.step.run(self.step_outputs, {k: v for k, v in feeds.items() if k in wanted}))
        )


@register
class TensorRTStep(StepRunner):
    """TensorRT plans of the decode step run on an NVIDIA GPU only."""

    name = "tensorrt"
    precisions = ("fp32", "fp16")

    @classmethod
    def unavailable_reason(cls):
        from ..machine import gpu_unavailable_reason

        return gpu_unavailable_reason() or "TensorRT decode-step plans are not built by this version"
