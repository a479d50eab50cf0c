"""Where artifacts will run (``export --target``), the int8 scheme each target gets, and the check
that tells verify/bench/run when this machine lacks what an artifact was made for.

The int8 schemes are onnxruntime ``quantize_dynamic`` settings. What decides between them is how
onnxruntime's MLAS kernels accumulate on each CPU class (MLAS ``platform.cpp`` dispatch, and the
onnxruntime quantization docs' note on saturation):

- U8S8 (uint8 activations x int8 weights): with AVX-512 VNNI, AVX-VNNI or AMX-INT8 the products are
  summed in 32 bits (``vpdpbusd`` / tiles): exact. With only AVX2 or AVX-512 Core, MLAS uses
  ``vpmaddubsw``, which sums pairs of products in 16 bits and saturates: measured rel. L2 0.23
  (encoder-tiny) and 0.47 (encoder-base) on an AVX2-only AMD Zen 3.
- U8U8 (uint8 weights): MLAS widens both operands to 16 bits and uses ``vpmaddwd``: exact on every
  x86-64 CPU. Measured on Zen 3 (encoder-base): rel. L2 0.023, 1.45x onnxruntime fp32.
- U8S8 with ``reduce_range`` (7-bit weights): pair sums fit in 16 bits, so exact everywhere, but the
  coarser weights cost accuracy: rel. L2 0.039 on encoder-base (Zen 3), over the int8 tolerance.
  Mixed with U8U8 on the value and output projections (where most of that error comes from) it is within
  the tolerance by 7 % and 1.19x U8U8 on an AVX2 EPYC: too thin a margin for a choice made per CPU class,
  not per model (BENCHMARKS.md).

So each target gets the fastest scheme that is exact there: U8S8 where VNNI/AMX is guaranteed,
U8U8 everywhere else. U8U8 takes per-channel weight scales: as accurate or more on every model measured, at
the same speed (AVX2 EPYC: keras-hub GPT-2 rel L2 0.0299 -> 0.0241, at the tolerance's edge before;
encoder-base 0.0237 -> 0.0234). U8S8 takes them too since the first AMX measurement: per tensor, keras-hub
GPT-2 was outside int8's tolerance there (0.031; per channel 0.0253), at a cost of 0-10 % in speed (10 % on
Zen 4 VNNI for 0.0251 -> 0.0231 on encoder-base). optimum's ``AutoQuantizationConfig`` makes the same split (``avx2()`` uses
QUInt8 weights, ``avx512_vnni()`` QInt8). BENCHMARKS.md has the measurements.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass

from . import machine
from .errors import AttnkitError

VNNI_FEATURES = ("avx512_vnni", "avx_vnni", "amx_int8")
BF16_FEATURES = ("avx512_bf16", "amx_bf16")


@dataclass(frozen=True)
class Int8Scheme:
    """One onnxruntime dynamic-quantisation setting and the CPUs on which it computes exactly."""

    name: str
    activation: str  # onnxruntime QuantType name
    weight: str
    reduce_range: bool
    exact_on: tuple[str, ...]  # CPU features, any of which makes the integer sums exact; () = every x86-64
    why: str
    #: weight scales per output channel (else one per tensor) unless ``--per-channel/--per-tensor`` says
    per_channel: bool = False

    def to_dict(self) -> dict:
        return asdict(self)


INT8_SCHEMES: dict[str, Int8Scheme] = {
    s.name: s
    for s in (
        Int8Scheme(
            "u8s8",
            "QUInt8",
            "QInt8",
            False,
            VNNI_FEATURES,
            "uint8 x int8 summed in 32 bits by VNNI/AMX: exact and the fastest int8 kernel there; per-channel "
            "weight scales",
            # per channel since the first AMX measurement (2026-11-29, measure_int8_schemes.py): keras-hub GPT-2's
            # per-tensor U8S8 file was 0.031 from eager fp32, outside int8's 0.03 (per channel 0.0253); on
            # encoder-base per channel cost 0-10 % (3.02x -> 2.71x onnxruntime fp32 there, on a VM whose speed moved
            # by more; 10 % on Zen 4). A file outside its tolerance is no file: --per-tensor takes the speed back
            per_channel=True,
        ),
        Int8Scheme(
            "u8u8",
            "QUInt8",
            "QUInt8",
            False,
            (),
            "uint8 x uint8 widened to 16 bits before multiplying: exact on every x86-64 CPU, where U8S8 "
            "saturates without VNNI (16-bit pair sums); per-channel weight scales",
            per_channel=True,
        ),
        Int8Scheme(
            "u8s8-reduce-range",
            "QUInt8",
            "QInt8",
            True,
            (),
            "7-bit weights keep U8S8 pair sums inside 16 bits: exact everywhere, less accurate than U8U8",
        ),
    )
}


@dataclass(frozen=True)
class CpuClass:
    """A named CPU class: the features every CPU of it has."""

    name: str
    features: frozenset[str]
    description: str


#: most capable first (``host`` takes the first one this machine satisfies)
CPU_CLASSES: tuple[CpuClass, ...] = (
    CpuClass(
        "cpu-amx",
        frozenset(
            {"avx2", "fma", "avx512f", "avx512bw", "avx512_vnni", "avx512_bf16", "amx_tile", "amx_bf16", "amx_int8"}
        ),
        "Intel Xeon with AMX (Sapphire Rapids and later)",
    ),
    CpuClass(
        "cpu-avx512-vnni",
        frozenset({"avx2", "fma", "avx512f", "avx512bw", "avx512_vnni"}),
        "AVX-512 with VNNI (Intel Cascade Lake and later, AMD Zen 4 and later)",
    ),
    CpuClass(
        "cpu-avx512",
        frozenset({"avx2", "fma", "avx512f", "avx512bw"}),
        "AVX-512 without VNNI (Intel Skylake-SP)",
    ),
    CpuClass("cpu-avx2", frozenset({"avx2", "fma"}), "AVX2 only (AMD Zen 1-3, Intel Haswell to Coffee Lake)"),
)
PORTABLE = "portable"
HOST = "host"
_SM = re.compile(r"^sm\d{2,3}$")


@dataclass(frozen=True)
class Target:
    """What ``--target`` resolved to: the CPU class the ONNX/SavedModel artifacts are made for, the
    int8 scheme chosen for it, and the GPU architecture of TensorRT plans (if the target names one)."""

    name: str
    cpu_class: str
    features: frozenset[str]
    int8: Int8Scheme
    trt_target: str | None = None

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "cpu_class": self.cpu_class,
            "features": sorted(self.features),
            "int8": self.int8.to_dict(),
            "trt_target": self.trt_target,
            "why": self.why(),
        }

    def summary(self) -> str:
        """``--target host (this machine: cpu-avx512-vnni, int8 u8s8)``, for a progress line."""
        where = "this machine: " if self.name == HOST else ""
        return f"--target {self.name} ({where}{self.cpu_class}, int8 {self.int8.name})"

    def why(self) -> str:
        where = (
            "every x86-64 CPU with AVX2 (and the CPU side of GPU servers)"
            if self.cpu_class == PORTABLE
            else f"{self.cpu_class} ({', '.join(sorted(self.features))})"
        )
        return f"int8 {self.int8.name} for {where}: {self.int8.why}"


def target_names() -> list[str]:
    """Valid ``--target`` values (TensorRT ``sm*`` names are also accepted: see :func:`resolve`)."""
    return [PORTABLE, HOST] + [c.name for c in CPU_CLASSES]


def choose_int8(features: frozenset[str] | set[str]) -> Int8Scheme:
    """The fastest scheme that is exact on a CPU with these features."""
    return INT8_SCHEMES["u8s8"] if set(features) & set(VNNI_FEATURES) else INT8_SCHEMES["u8u8"]


def host_class(features: frozenset[str]) -> str:
    """The most capable named class this machine belongs to (``portable`` below AVX2)."""
    for c in CPU_CLASSES:
        if c.features <= features:
            return c.name
    return PORTABLE


def resolve(name: str | None = None, features: frozenset[str] | None = None) -> Target:
    """``--target`` value -> Target.

    Args:
        name: ``portable`` (default), ``host``, a CPU class (``cpu-avx2``...), or a TensorRT GPU
            architecture (``sm89``): artifacts for a GPU server, int8 as ``portable``.
        features: this machine's CPU features for ``host`` (default: probed).

    Raises:
        AttnkitError: unknown name; lists the valid ones.
    """
    name = (name or PORTABLE).strip().lower()
    if name == PORTABLE or _SM.match(name):
        base = next(c for c in CPU_CLASSES if c.name == "cpu-avx2").features
        return Target(name, PORTABLE, base, choose_int8(base), trt_target=name if _SM.match(name) else None)
    if name == HOST:
        have = machine.cpu_features() if features is None else frozenset(features)
        return Target(HOST, host_class(have), have, choose_int8(have))
    for c in CPU_CLASSES:
        if c.name == name:
            return Target(name, name, c.features, choose_int8(c.features))
    raise AttnkitError(
        f"`{name}` is not a target. Valid: {', '.join(target_names())}, or a TensorRT architecture such as sm89.",
        flag="--target",
    )


# ---------------------------------------------------------------------------------------------------
# What an artifact needs, and whether this machine has it


def int8_requirement(scheme: Int8Scheme, target_name: str) -> dict | None:
    if not scheme.exact_on:
        return None
    return {
        "cpu_any": list(scheme.exact_on),
        "runtime": "onnxruntime",
        "what": f"int8 {scheme.name.upper()} made for {target_name}",
        "otherwise": "wrong answers (U8S8 pair sums saturate in 16 bits without VNNI/AMX)",
        "fix": "re-export with --target host (or portable)",
        "affects_answers": True,
    }


BF16_REQUIREMENT = {
    "cpu_any": list(BF16_FEATURES),
    "runtime": "tensorflow",
    "what": "bf16",
    "otherwise": "correct but emulated and slow (no bf16 instructions)",
    "fix": "use fp32 or int8 here",
}
#: The instructions that make OpenVINO's reduced precisions fast (its dot products), once its CPU plugin computes
#: in them. Whether the plugin takes a hint is asked of the plugin (:func:`attnkit.core.machine.openvino_compiles`), not
#: predicted from these: its rule moved between releases and CPUs (2026.4 compiles f16 to bf16 on Zen 4 and 5).
OPENVINO_NATIVE = {"bf16": BF16_FEATURES, "fp16": ("avx512_fp16",)}


def openvino_runs(precision: str, features) -> tuple[str, bool]:
    """``(precision OpenVINO's CPU plugin computes in, the asked one computed natively?)`` for a
    ``precision`` hint on a CPU with ``features``; fp32 and int8 (whose compute is f32) always natively.

    What the plugin computes in is asked of the plugin on this machine (:func:`attnkit.core.machine.openvino_compiles`);
    where openvino is not installed the hint is taken as asked, since nothing here will run it.
    """
    if precision not in OPENVINO_NATIVE:
        return precision, True
    ran = machine.openvino_compiles(precision) or precision
    return ran, ran == precision and bool(set(OPENVINO_NATIVE[precision]) & set(features))


def openvino_how(precision: str, ran: str) -> str:
    """What OpenVINO does here with a ``precision`` hint it computes in ``ran`` without the native instructions."""
    if ran == precision:
        return f"OpenVINO emulates it here ({precision} answers, without the instructions that make it fast)"
    return f"OpenVINO computes it in {ran} here, and its rows say so"


def openvino_defaults(precisions, features) -> tuple[list[str], list[str]]:
    """Of ``run``'s default precisions, those OpenVINO computes natively on a CPU with ``features``, and a note
    for each left out: elsewhere its fp16/bf16 hint compiles to another precision (a row of that computation
    under another name) or is emulated, which is worth measuring only when asked for."""
    kept, notes = [], []
    for precision in precisions:
        ran, native = openvino_runs(precision, features)
        if native:
            kept.append(precision)
            continue
        how = "emulates it" if ran == precision else f"computes it in {ran}"
        needs = " or ".join(OPENVINO_NATIVE[precision])
        notes.append(
            f"openvino {precision} left out: OpenVINO {how} on this CPU (no {needs}); "
            f"ask for it with --openvino-precision ...,{precision} (or an explicit --precision)"
        )
    return kept, notes


def _openvino_requirement(precision: str) -> dict:
    return {
        "cpu_any": list(OPENVINO_NATIVE[precision]),
        "what": f"{precision} (OpenVINO)",
        "openvino": precision,  # mismatch() words the warning by what the plugin does on the running CPU
        "fix": "use fp32 here",
    }


OPENVINO_BF16_REQUIREMENT = _openvino_requirement("bf16")
OPENVINO_FP16_REQUIREMENT = _openvino_requirement("fp16")
#: an int8 IR whose rest attnkit compiles in bf16 (exporters.openvino_int8.PTQ_BF16): its answers were held to int8's
#: tolerance with f32 forced too, so a CPU without bf16 gets only slower, never wrong
OPENVINO_INT8_BF16_REQUIREMENT = {
    **OPENVINO_BF16_REQUIREMENT,
    "what": "int8 with the rest in bf16 (OpenVINO)",
    "otherwise_ran": "OpenVINO computes the rest in {ran} here (held to int8's tolerance at export too), and its rows say so",
    "fix": "",
}


def trt_requirement(target: str) -> dict:
    return {"gpu": target, "what": f"TensorRT plan for {target}", "otherwise": "cannot run (plans are per GPU)"}


def requirement_of(record) -> dict | None:
    """An artifact record's hardware requirement: recorded at export, or inferred for older manifests
    (an int8 ONNX without a recorded scheme was U8S8, the only scheme before targets existed)."""
    extra = record.extra or {}
    if "requires" in extra:
        return extra["requires"]
    if record.format == "onnx" and record.precision == "int8" and extra.get("int8_scheme") in INT8_SCHEMES:
        return int8_requirement(INT8_SCHEMES[extra["int8_scheme"]], extra.get("target", "?"))
    if record.format == "onnx" and record.precision == "int8":
        return int8_requirement(INT8_SCHEMES["u8s8"], "an AVX-512 VNNI CPU (no target recorded)")
    if record.format == "savedmodel" and record.precision == "bf16":
        return BF16_REQUIREMENT
    if record.format == "tensorrt" and str(extra.get("target", "")).startswith("sm"):
        return trt_requirement(extra["target"])
    return None


def mismatch(record) -> str | None:
    """One warning line when this machine lacks what ``record`` was made for, else None."""
    req = requirement_of(record)
    if not req:
        return None
    if "gpu" in req:
        sms = machine.gpu_sms()
        if req["gpu"] in sms:
            return None
        has = f"GPU {', '.join(sms)}" if sms else f"no NVIDIA GPU ({machine.gpu_unavailable_reason() or 'none found'})"
        return f"{record.path}: {req['what']}; this machine has {has}: {req['otherwise']}."
    have = machine.tensorflow_features() if req.get("runtime") == "tensorflow" else machine.cpu_features()
    if set(req["cpu_any"]) & have:
        return None
    otherwise = req.get("otherwise")
    if "openvino" in req:  # asked of the plugin on this machine: emulated, or computed in another precision
        asked = req["openvino"]
        ran = openvino_runs(asked, have)[0]
        taken = ran == asked or "otherwise_ran" not in req
        otherwise = openvino_how(asked, ran) if taken else req["otherwise_ran"].format(ran=ran)
    return (
        f"{record.path}: {req['what']} needs {' or '.join(req['cpu_any'])}; this machine is {machine.cpu().brand} "
        f"({', '.join(sorted(have)) or 'no AVX2'}): {otherwise}; {req.get('fix', '')}".rstrip("; ")
        + "."
    )


def affects_answers(record) -> bool:
    """True when running ``record`` on unfit hardware changes its answers (not only its speed)."""
    req = requirement_of(record) or {}
    return bool(req.get("affects_answers"))


def machine_summary() -> dict:
    """The export/measuring machine as recorded in manifests and agreement results."""
    info = machine.cpu()
    return {"cpu": info.brand, "class": host_class(info.features), "features": sorted(info.features)}


def native_precisions() -> tuple[list[str], list[str]]:
    """The precisions ``run`` uses by default on this machine, and a note for each one left out.

    bf16 needs bf16 instructions (AVX512_BF16 or AMX) to be worth running: without them TensorFlow
    emulates it, slower than fp32, so it is left out unless asked for. fp16 stays: ``model.fp16.onnx``
    is the GPU artifact (half the bytes), and it is checked here like the others.
    """
    have = machine.tensorflow_features()
    if set(BF16_FEATURES) & have:
        return ["fp32", "bf16", "fp16", "int8"], []
    return ["fp32", "fp16", "int8"], [
        f"bf16 left out: this CPU ({machine.cpu().brand}) has no bf16 instructions ({' or '.join(BF16_FEATURES)}), "
        "so TensorFlow would emulate it, slower than fp32; ask for it with --precision fp32,bf16,..."
    ]
