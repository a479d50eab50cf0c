"""``openvino``: OpenVINO's CPU plugin on ``DIR/openvino/model.xml``, with the precision it really ran.

OpenVINO's CPU plugin picks its own inference precision when left alone (bf16 on CPUs with AMX or
avx512_bf16, silently). attnkit never leaves it alone: fp32 forces ``f32``; bf16 asks for ``bf16``, fp16 for
``f16``. The plugin takes those hints where its own rule allows and otherwise compiles another precision
(2026.4: f32 for both on an AVX2-only EPYC; bf16 for f16 on AMD Zen 4 and Zen 5, which lack AVX512-FP16).
After compiling, the runner reads back ``INFERENCE_PRECISION_HINT`` and reports it as :attr:`ran_as`, so a
row that asked for fp16 and computed in bf16 says ``bf16``, and a row that computed in bf16 is never labelled
fp32. Nothing here predicts the plugin's choice from CPU flags.
"""

from __future__ import annotations

import numpy as np

from ..core.names import OPENVINO_HINTS, OPENVINO_RAN_AS, ROLE_DECODER_STATEFUL, ROLE_ENCODER
from ..exporters.openvino import (
    BEAM_IDX,
    IR_XML,
    POSITION_IDS,
    cache_hint,
    compile_with_fallback,
    positions_from_mask,
)
from .base import Runner, StepRunner, register


def compile_ir(path, precision: str, threads: int | None = None, stateful: bool = False, hint: str | None = None):
    """``(compiled model, precision it runs in)`` for the CPU device, latency-oriented.

    The KV cache of a ``stateful`` model is held in the asked precision too: OpenVINO's CPU plugin otherwise
    keeps it in u8 (``KV_CACHE_PRECISION`` reads back ``u8`` with f32 inference, measured with OpenVINO
    2026.4 on an AVX2 EPYC; decoder-small's logits then drift by rel L2 1.45e-3, 145x the fp32 tolerance).
    Dynamic quantisation of activations is off for fp32 for the same reason. A plugin that does not take
    what was asked is reported in the label: ``fp32 (kv-cache u8)``. ``hint``: the inference precision the
    artifact's record asks (a weight-only fp16 decode step: f32), else the precision's own.
    """
    import openvino as ov

    core = ov.Core()
    model = core.read_model(str(path))  # read once: the int8 branch reads what it pins, then it is compiled
    hint = hint or OPENVINO_HINTS[precision]
    config = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": hint}
    cache = cache_hint(precision, hint)
    if stateful:
        config["KV_CACHE_PRECISION"] = cache
    if precision == "int8":
        # what the IR pins: 0 (f32 compute) unless the export measured dynamic activation quantisation on the
        # CPU it was made for and found it within int8's tolerance and faster (attnkit.exporters.openvino_int8);
        # the rest in f32 unless the export measured full PTQ with the rest in bf16 there (PTQ_BF16)
        from ..exporters.openvino_nncf import pinned_group, pinned_precision

        config["DYNAMIC_QUANTIZATION_GROUP_SIZE"] = pinned_group(model)
        config["INFERENCE_PRECISION_HINT"] = pinned_precision(model)
    elif hint == "f32":
        # OpenVINO would quantise activations on the fly where it has int8 dot products (VNNI/AMX): f32 compute
        # (fp32, and the weight-only fp16 step) means f32 compute on every CPU
        config["DYNAMIC_QUANTIZATION_GROUP_SIZE"] = 0
    if threads:
        config["INFERENCE_NUM_THREADS"] = threads
    compiled, _ = compile_with_fallback(lambda c: core.compile_model(model, "CPU", c), config)
    took = compiled.get_property("INFERENCE_PRECISION_HINT").get_type_name()  # "f32", "bf16", "f16"
    ran_as = OPENVINO_RAN_AS.get(took, took)
    if precision == "int8":
        # int8 weights, decompressed and computed in f32 as asked (see exporters.openvino), or int8 MatMuls with
        # the rest in bf16 (a PTQ_BF16 IR on a CPU that took the hint): never labelled plain bf16 or fp32
        ran_as = "int8" if ran_as == "fp32" else f"int8+{ran_as}"
    elif precision == "fp16" and hint == "f32":
        # f16 weights computed in f32 (a weight-only fp16 decode step): labelled by its weights, as int8's is
        ran_as = "fp16" if ran_as == "fp32" else f"fp16+{ran_as}"
    if stateful:  # the cache is read back only where there is one; said where it is not what the label implies
        kv = compiled.get_property("KV_CACHE_PRECISION").get_type_name()
        implied = "f16" if cache == "f16" and took == "f32" else took
        if OPENVINO_RAN_AS.get(kv, kv) != OPENVINO_RAN_AS.get(implied, implied):
            ran_as += f" (kv-cache {kv})"
    return compiled, ran_as


def _unavailable() -> str | None:
    try:
        import openvino  # noqa: F401
    except ImportError:
        return "openvino is not installed (pip install 'attnkit[openvino]')"
    return None


class _Compiled:
    """One compiled IR and its infer request: named host arrays in, named host arrays out."""

    def __init__(self, path, precision: str, threads: int | None, stateful: bool = False, hint: str | None = None):
        self.compiled, self.ran_as = compile_ir(path / IR_XML, precision, threads, stateful, hint)
        self.request = self.compiled.create_infer_request()
        self.inputs = {i.any_name for i in self.compiled.inputs}
        self.outputs = [(o, o.any_name) for o in self.compiled.outputs]

    def __call__(self, feeds):
        result = self.request.infer({k: v for k, v in feeds.items() if k in self.inputs})
        return {name: result[port].copy() for port, name in self.outputs}


@register
class OpenVINORunner(Runner):
    name = "openvino"
    needs = "openvino"
    verifies = True
    bench_default = True
    precisions = tuple(OPENVINO_HINTS)

    unavailable_reason = staticmethod(_unavailable)

    def _load(self) -> None:
        self.model = _Compiled(self.source.path("openvino", self.precision), self.precision, self.threads)
        self.ran_as = self.model.ran_as
        if self.precision == "int8":
            from ..exporters.openvino_int8 import computes_in

            self.computes_in = computes_in(self.source.artifact("openvino", "int8").extra)

    def _infer(self, feeds):
        return self.model(feeds)

    def _close(self) -> None:
        self.model = None


@register
class OpenVINOStep(StepRunner):
    """The decode step's IR (``openvino_decoder_with_past/``; the prefill is the step with an empty past) and
    the seq2seq encoder's, compiled with f32 forced (bf16 asked for the bf16 row, its cache in bf16 too, and
    the plugin's answer reported as :attr:`ran_as`), driven by the same numpy loop as every step runner."""

    name = "openvino"
    needs = "openvino"
    precisions = ("fp32", "bf16", "fp16", "int8")
    unavailable_reason = staticmethod(_unavailable)

    def _load(self) -> None:
        path = self.source.generation_path(self.role, "openvino", self.precision)
        record = self.source.generation.artifact(self.role, "openvino", self.precision)
        hint = record.extra.get("inference_precision") if record is not None else None
        self.step = _Compiled(path, self.precision, self.threads, stateful=self.keeps_cache, hint=hint)
        self.ran_as = self.step.ran_as
        self.encoder = None
        if self.gspec.seq2seq:
            self.encoder = _Compiled(self.source.generation_path(ROLE_ENCODER, "openvino"), "fp32", self.threads)

    def _encode(self, feeds):
        return self.encoder(feeds)

    def _prefill(self, feeds):
        g = self.gspec
        empty = np.zeros((feeds[g.ids].shape[0], g.num_heads, 0, g.depth), "float32")
        return self._decode({**feeds, **{n: empty for n in g.past_names()}})

    def _decode(self, feeds):
        return self.step(feeds)

    def _close(self) -> None:
        self.step = self.encoder = None


@register
class OpenVINOStatefulStep(OpenVINOStep):
    """The stateful decoder (``openvino_decoder_stateful/``, optimum-intel's layout): the KV cache stays in the
    infer request's state, so a step sends one token and its mask and gets logits back, with no cache
    crossing the API. ``prefill`` resets the state (a new batch of prompts); every row continues its own
    cache (``beam_idx`` = the row's own index: greedy has no beams to reorder). The IR takes ``position_ids``
    (optimum-intel's input, what paged attention needs) where the export found them, fed as the step computed
    them: from the mask (attnkit's decoders) or the cache slot (keras-hub's, counted here as the state fills)."""

    name = "openvino-stateful"
    role = ROLE_DECODER_STATEFUL
    keeps_cache = True
    slots = 0  # cache slots the state holds (a slot-positioned step's next position)
    full_model = "openvino"
    not_for = {"forward": "openvino-stateful is the stateful decode step only (the forward pass: openvino)"}

    @classmethod
    def inapplicable(cls, source) -> str | None:
        if source.generation.artifact(ROLE_DECODER_STATEFUL, "openvino", "fp32") is None:
            return "the export has no stateful OpenVINO decoder (re-export with --generate --format openvino)"
        return None

    def _prefill(self, feeds):
        self.step.request.reset_state()
        self.slots = 0
        return self._decode(feeds)

    def _decode(self, feeds):
        g = self.gspec
        batch, new = feeds[g.ids].shape
        extra = {BEAM_IDX: np.arange(batch, dtype="int32")}
        if POSITION_IDS in self.step.inputs:  # what the step computed, from its mask or its cache slot
            if g.slot:  # the slots the state holds, then the new ones, every row alike
                extra[POSITION_IDS] = np.tile(np.arange(self.slots, self.slots + new, dtype="int64"), (batch, 1))
            else:
                extra[POSITION_IDS] = positions_from_mask(feeds[g.mask], new)
        self.slots += new
        return self.step({**feeds, **extra})
