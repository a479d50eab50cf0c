"""package(DIR): a Triton model repository and a TF Serving layout, plus request examples.

Every generated config is checked against the artifact's real signature, and every request body
against the signature of the model it is for, before the call returns.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..core.errors import ArtifactError, AttnkitError
from ..core.names import EOS_ID, KSERVE_DTYPES, MAX_NEW_TOKENS, ROLE_ENCODER, SERVING_DEFAULT, SIG_GENERATE
from ..core.spec import ExportSpec
from ..exporters.manifest import Manifest, readable_dir, write_text_atomic
from ..exporters.signatures import IOSpec, signature_of


@dataclass
class PackageResult:
    triton: list[dict] = field(default_factory=list)  # name, platform, path, artifact
    tfserving: list[dict] = field(default_factory=list)  # name, version, path
    requests: dict[str, str] = field(default_factory=dict)  # what -> file
    kserve: str | None = None  # the InferenceService written beside the Triton repository
    warnings: list[str] = field(default_factory=list)  # e.g. an artifact packaged after failing its check


def kserve_inputs(feeds: dict[str, np.ndarray]) -> list[dict]:
    """KServe v2 ``inputs`` of named host arrays."""
    return [
        {"name": n, "shape": list(a.shape), "datatype": KSERVE_DTYPES[a.dtype.name], "data": a.ravel().tolist()}
        for n, a in feeds.items()
    ]


def kserve_request(spec: ExportSpec, seq: int = 8, seed: int = 0) -> dict:
    """A KServe v2 (Triton HTTP/gRPC) inference request for one sequence, from the spec."""
    feeds = spec.sample_feeds(1, seq, seed)
    return {
        "inputs": kserve_inputs(feeds),
        "outputs": [{"name": n} for n in spec.output_names],
    }


def tfserving_request(spec: ExportSpec, seq: int = 8, seed: int = 0) -> dict:
    """A TF Serving REST predict request (columnar ``inputs`` format) for one sequence."""
    feeds = spec.sample_feeds(1, seq, seed)
    return {"signature_name": SERVING_DEFAULT, "inputs": {n: a.tolist() for n, a in feeds.items()}}


def _shape_ok(shape, sig_shape) -> bool:
    return len(shape) == len(sig_shape) and all(s == -1 or s == d for d, s in zip(shape, sig_shape))


def check_kserve_request(body: dict, sig: list[IOSpec]) -> list[str]:
    inputs = {io.name: io for io in sig if io.mode == "input"}
    problems = [f"input `{n}` missing" for n in set(inputs) - {i["name"] for i in body["inputs"]}]
    for item in body["inputs"]:
        io = inputs.get(item["name"])
        if io is None:
            problems.append(f"`{item['name']}` is not an input of the model")
            continue
        if item["datatype"] != KSERVE_DTYPES.get(io.dtype):
            problems.append(f"`{io.name}`: datatype {item['datatype']} but the model takes {io.dtype}")
        if not _shape_ok(item["shape"], io.shape):
            problems.append(f"`{io.name}`: shape {item['shape']} does not fit {list(io.shape)}")
        if len(item["data"]) != int(np.prod(item["shape"])):
            problems.append(f"`{io.name}`: {len(item['data'])} values for shape {item['shape']}")
    outputs = {io.name for io in sig if io.mode == "output"}
    problems += [
        f"`{o['name']}` is not an output of the model" for o in body.get("outputs", []) if o["name"] not in outputs
    ]
    return problems


def check_tfserving_request(body: dict, sig: list[IOSpec]) -> list[str]:
    inputs = {io.name: io for io in sig if io.mode == "input"}
    problems = [f"input `{n}` missing" for n in set(inputs) - set(body["inputs"])]
    for name, value in body["inputs"].items():
        io = inputs.get(name)
        if io is None:
            problems.append(f"`{name}` is not an input of the signature")
            continue
        arr = np.asarray(value)
        if not _shape_ok(list(arr.shape), io.shape):
            problems.append(f"`{name}`: shape {list(arr.shape)} does not fit {list(io.shape)}")
        if np.issubdtype(arr.dtype, np.integer) != np.issubdtype(np.dtype(io.dtype), np.integer):
            problems.append(f"`{name}`: {arr.dtype} values but the signature takes {io.dtype}")
    return problems


def _require_ok(problems: list[str], what: str) -> None:
    if problems:
        raise ArtifactError(f"{what} does not match the artifact's signature: {'; '.join(problems)}.")


def package(
    root: str | Path,
    *,
    triton: str | Path | None = None,
    tfserving: str | Path | None = None,
    version: int = 1,
    name: str | None = None,
    force: bool = False,
    warmup: bool = True,
    pick: str | None = None,
    kserve: str | None = None,
    progress: Callable[[str], None] | None = None,
) -> PackageResult:
    """Lay an export directory's artifacts out for Triton and/or TF Serving.

    About 85 lines: each layout is staged, checked against the artifacts and swapped in version by version; the
    checks and the swaps share the staging directories, which one function holds and always cleans.

    Args:
        root: export directory.
        triton: Triton model repository to write into (created, or added to if it is one).
        tfserving: TF Serving model base directory (``<name>/<version>/`` per SavedModel).
        version: model version (>= 1) for both layouts.
        name: base model name (default: the manifest's model name).
        force: write into a ``--triton`` path that is not a Triton repository, or over an
            existing TF Serving version.
        pick: ``latency`` or ``throughput``: package for Triton only the artifact of that deployment pick
            (recorded by ``attnkit run`` in the manifest), instead of every artifact.
        kserve: the storage URI the Triton repository will be uploaded to: writes ``inferenceservice.yaml``
            (KServe, :mod:`attnkit.serving.manifests`) at the repository's top level, where Triton reads no model.

    Raises:
        AttnkitError: bad version or name; ArtifactError: tampered artifacts or a config mismatch.
    """
    from google.protobuf import text_format

    from ..exporters.triton import build_config, check_config, check_model_name, is_triton_repo, model_name, write_model

    if version < 1:
        raise AttnkitError(f"must be >= 1; got {version}.", flag="--version")
    if pick not in (None, "latency", "throughput"):
        raise AttnkitError(f"`{pick}` is not a goal; give latency or throughput.", flag="--pick")
    if not triton and not tfserving:
        raise AttnkitError("nothing to do.", flag="--triton", hint="Give --triton REPO and/or --tfserving DIR.")
    if kserve is not None:
        from ..serving.manifests import check_storage_uri, dns_name

        if not triton:
            raise AttnkitError("KServe serves the Triton repository.", flag="--kserve", hint="Give --triton REPO too.")
        check_storage_uri(kserve)
        dns_name(name if name is not None else Manifest.load(Path(root)).spec.name, "--name")  # before writing
    say = progress or (lambda _m: None)
    root = Path(root)
    manifest = Manifest.load(root)
    manifest.require_integrity(root)
    spec = manifest.spec
    base = check_model_name(name if name is not None else spec.name.replace("/", "_"))
    result = PackageResult()
    # Triton's OpenVINO backend reads HINT_BF16 and nothing that asks for f16: an fp16 OpenVINO record would be
    # served in the plugin's default precision under an fp16 name, so it is not packaged
    servable = [a for a in manifest.artifacts if a.format in ("onnx", "savedmodel", "tensorrt", "openvino")]
    records = records_ok(servable)
    if pick:
        records = [_picked_record(manifest, pick)]
        if records[0] not in records_ok(servable):
            raise AttnkitError(
                f"the {pick} pick ({records[0].format} {records[0].precision}) cannot be served as picked: Triton's "
                "OpenVINO backend has no f16 hint.",
                flag="--pick",
                hint="Package without --pick, or bench without fp16 and pick again.",
            )
    if triton:
        repo = Path(triton)
        if repo.exists() and (not repo.is_dir() or not is_triton_repo(repo)) and not force:
            raise AttnkitError(
                f"`{repo}` exists and is not a Triton model repository.",
                flag="--triton",
                hint="Choose another path, or pass --force to add the models to it.",
            )
        try:
            repo.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise AttnkitError(f"cannot create `{repo}` ({e.strerror or e}).", flag="--triton") from None
        for record in records:
            model = model_name(base, record)
            say(f"triton model {model}")
            _warn_disagreement(record, model, result)
            _warn_default_precision(record, model, result)
            sig = signature_of(root, record)
            text = text_format.MessageToString(build_config(model, record, spec, sig, warmup))
            _require_ok(check_config(text, sig), f"the generated config of {model}")
            path = write_model(repo, model, root, record, text, version, force)
            result.triton.append(
                {
                    "name": model,
                    "platform": _platform_of(text),
                    "path": str(path),
                    "artifact": record.path,
                    "precision": record.precision,
                }
            )
        onnx_record = manifest.artifact("onnx", "fp32")
        if onnx_record:
            body = kserve_request(spec)
            _require_ok(check_kserve_request(body, signature_of(root, onnx_record)), "the KServe v2 request")
            target = repo / f"request_{model_name(base, onnx_record)}.json"
            write_text_atomic(target, json.dumps(body), flag="--triton")
            result.requests["triton"] = str(target)
        if manifest.generation:
            _package_generation_triton(root, manifest, repo, base, version, force, result, say)
        if kserve is not None:
            result.kserve = _write_inference_service(repo, base, kserve, manifest.pick or {}, say)
    if tfserving:
        _package_tfserving(root, manifest, Path(tfserving), base, version, force, result, say)
    return result


def _write_inference_service(repo: Path, base: str, storage_uri: str, pick: dict, say) -> str:
    """``repo/inferenceservice.yaml``: the repository served by KServe's Triton runtime, with the CPUs its pick
    was measured with (``attnkit run`` records them; else this machine's cores, which ``bench`` uses)."""
    import os

    from ..serving.manifests import dns_name, inference_service, to_yaml

    threads = int(pick.get("threads") or os.cpu_count() or 1)
    doc = inference_service(dns_name(base, "--name"), storage_uri, repo, threads, pick.get("machine"))
    target = repo / "inferenceservice.yaml"
    say(f"kserve: {target} ({threads} CPUs, requests = limits)")
    write_text_atomic(target, to_yaml(doc), flag="--triton")
    note = _validate_manifest(target)
    if note:
        say(note)
    return str(target)


def _validate_manifest(path: Path) -> str | None:
    """Check ``path`` against KServe's and Kubernetes' Python models where the serving venv has them (else say
    so); a manifest they refuse is removed and is an error, never left for ``kubectl`` to find."""
    from ..serving.env import ServingEnvError
    from ..serving.manifests import validate

    try:
        problems = validate([path])[str(path)]
    except ServingEnvError as e:
        return f"{path.name} not checked against KServe's models: {e.message}"
    if problems:
        path.unlink()
        raise ArtifactError(f"{path.name} does not match the official models: {problems[0]}", flag="--kserve")
    return f"{path.name} checked against KServe's and Kubernetes' models"


def _platform_of(text: str) -> str:
    """The platform (or, for a backend such as OpenVINO's, the backend) a config names."""
    for key in ('platform: "', 'backend: "'):
        if key in text:
            return text.split(key)[1].split('"')[0]
    return "?"


def records_ok(records: list) -> list:
    """The records Triton can serve as they were measured (not an fp16 OpenVINO IR: see :func:`package`)."""
    return [a for a in records if not (a.format == "openvino" and a.precision == "fp16")]


def _picked_record(manifest, goal: str):
    """The artifact of the deployment pick ``goal`` (latency or throughput) that ``attnkit run`` recorded."""
    from ..runtimes.registry import format_of

    choice = (manifest.pick or {}).get(goal)
    if not choice:
        raise AttnkitError(
            f"the export has no {goal} pick." if manifest.pick else "the export has no deployment pick.",
            flag="--pick",
            hint="Run `attnkit run MODEL` (it measures and records the pick), or package without --pick.",
        )
    fmt = format_of(choice["backend"])
    fmt = "savedmodel" if fmt == "keras" else fmt  # the traced model is what TF's SavedModel serves
    record = manifest.artifact(fmt, choice["precision"])
    if record is None:
        raise AttnkitError(
            f"the {goal} pick ({choice['backend']} {choice['precision']}) has no {fmt} artifact to serve.",
            flag="--pick",
            hint="Package without --pick.",
        )
    return record


def _warn_disagreement(record, model: str, result: PackageResult) -> None:
    """An artifact whose recorded agreement failed is packaged only with a warning that says so."""
    agreement = record.agreement or {}
    if agreement.get("passed") is False:
        where = (agreement.get("machine") or {}).get("cpu", "the export machine")
        line = (
            f"{model}: {record.path} failed its agreement check on {where} (rel L2 {agreement.get('rel_l2', float('nan')):.3g}); "
            "packaged anyway: verify it on the serving hardware before routing traffic to it"
        )
        if line not in result.warnings:
            result.warnings.append(line)


def _warn_default_precision(record, model: str, result: PackageResult) -> None:
    """An OpenVINO IR attnkit ran with f32 forced, packaged for Triton, says what Triton's backend will compute.

    That backend sets only ``INFERENCE_NUM_THREADS``, ``COMPILATION_NUM_THREADS``, ``HINT_BF16``, ``NUM_STREAMS``
    and ``PERFORMANCE_HINT`` (openvino_backend's ``src/openvino.cc``), and OpenVINO's CPU plugin reads no
    inference precision from the IR (only KV-cache and dynamic-quantisation options), so nothing attnkit can
    write forces f32: where the CPU has avx512_bf16 or AMX the plugin's default, bf16, applies. An int8 IR whose
    scheme the export's search also held to int8's tolerance under OpenVINO's defaults is not warned of."""
    from ..core.targets import BF16_FEATURES

    extra = record.extra or {}
    if record.format != "openvino" or extra.get("inference_precision") != "f32":
        return
    scheme = extra.get("scheme")
    if any(c.get("name") == scheme and c.get("defaults_ran_as") for c in extra.get("candidates", [])):
        return
    line = (
        f"{model}: Triton's OpenVINO backend cannot force f32, so on CPUs with {' or '.join(BF16_FEATURES)} this "
        f"{record.precision} IR computes in bf16 (OpenVINO's default there; measured and agreed here with f32 "
        "forced): serve the ONNX model where fp32 answers matter, or check the IR with OpenVINO's defaults there"
    )
    if line not in result.warnings:
        result.warnings.append(line)


def _package_tfserving(root, manifest, out: Path, base, version, force, result, say) -> None:
    from ..exporters.triton import _link_or_copy

    for record in [a for a in manifest.artifacts if a.format == "savedmodel"]:
        name = base if record.precision == "fp32" else f"{base}_{record.precision}"
        target = out / name / str(version)
        if target.exists() and not force:
            raise AttnkitError(
                f"`{target}` exists.",
                flag="--tfserving",
                hint="Pass --version N for a new version, or --force to replace it.",
            )
        say(f"tf serving model {name} version {version}")
        _warn_disagreement(record, name, result)
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
        except (FileExistsError, NotADirectoryError):
            raise AttnkitError(
                f"`{out}` is not a directory.", flag="--tfserving", hint="Give a directory path."
            ) from None
        staging = Path(tempfile.mkdtemp(prefix=f".{version}.tmp-", dir=target.parent))
        try:  # the new version is complete before the old one (with --force) is swapped out
            _link_or_copy(root / record.path, staging / "x")
            readable_dir(staging / "x")
            if target.exists():
                os.replace(target, staging / "old")
            os.replace(staging / "x", target)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        result.tfserving.append({"name": name, "version": version, "path": str(target), "precision": record.precision})
        if record.precision == "fp32":
            body = tfserving_request(manifest.spec)
            _require_ok(check_tfserving_request(body, signature_of(root, record)), "the TF Serving request")
            req = out / f"request_{name}.json"
            write_text_atomic(req, json.dumps(body), flag="--tfserving")
            result.requests["tfserving"] = str(req)
            if manifest.generation and manifest.generation.has("savedmodel"):
                body = generate_request(manifest)
                _require_ok(
                    check_tfserving_request(body, signature_of(root, record, SIG_GENERATE)), "the generate request"
                )
                req = out / f"request_{name}_generate.json"
                write_text_atomic(req, json.dumps(body), flag="--tfserving")
                result.requests["tfserving_generate"] = str(req)


def generate_request(manifest, max_new_tokens: int = 16, seed: int = 0) -> dict:
    """A TF Serving REST request for the ``generate`` signature: two prompts of different lengths."""
    from ..generation.loop import Prompts

    g = manifest.generation.spec
    prompts = Prompts.random(g, 2, 8, seed, source_length=8)
    inputs = {g.ids: prompts.ids.tolist(), g.mask: prompts.mask.tolist()}
    if g.seq2seq:
        inputs.update({g.encoder_ids: prompts.source_ids.tolist(), g.encoder_mask: prompts.source_mask.tolist()})
    return {"signature_name": SIG_GENERATE, "inputs": {**inputs, MAX_NEW_TOKENS: max_new_tokens, EOS_ID: -1}}


def step_request(g, role: str, seed: int = 0) -> dict:
    """A KServe v2 request for a generation graph: the encoder on one source, or the prefill (a step with
    an empty past, past_sequence 0) on one prompt."""
    from ..generation.loop import Prompts

    prompts = Prompts.random(g, 1, 8, seed, ragged=False, source_length=8)
    if role == ROLE_ENCODER:
        feeds = prompts.source_feeds(g)
        outputs = g.cross_names()
    else:
        feeds = {g.ids: prompts.ids} if g.slot else {g.ids: prompts.ids, g.mask: prompts.mask}
        if g.seq2seq:
            feeds[g.encoder_mask] = prompts.source_mask
            feeds.update({n: np.zeros((1, g.num_heads, 8, g.depth), "float32") for n in g.cross_names()})
        feeds.update({n: np.zeros((1, g.num_heads, 0, g.depth), "float32") for n in g.past_names()})
        outputs = ["logits"] + g.present_names()
    return {
        "inputs": kserve_inputs(feeds),
        "outputs": [{"name": n} for n in outputs],
    }


def _package_generation_triton(root, manifest, repo, base, version, force, result, say) -> None:
    """The encoder and decoder-with-past graphs as Triton models (no dynamic batching: a decode step's
    requests carry caches of different lengths), each with a KServe v2 request example."""
    from google.protobuf import text_format

    from ..exporters.triton import build_config, check_config, check_model_name, write_model
    from ..tracing.decode import step_export_spec

    g = manifest.generation.spec
    for record in manifest.generation.artifacts:
        if record.format != "onnx":
            continue
        role = record.role
        model = check_model_name(f"{base}_{role}_onnx" + ("" if record.precision == "fp32" else f"_{record.precision}"))
        say(f"triton model {model}")
        sig = signature_of(root, record)
        spec = step_export_spec(g, role, encoder=role == ROLE_ENCODER)
        text = text_format.MessageToString(build_config(model, record, spec, sig, batching=False))
        _require_ok(check_config(text, sig), f"the generated config of {model}")
        path = write_model(repo, model, root, record, text, version, force)
        result.triton.append(
            {"name": model, "platform": "onnxruntime_onnx", "path": str(path), "artifact": record.path,
             "precision": record.precision, "role": role}
        )  # fmt: skip
        if record.precision == "fp32":
            body = step_request(g, role)
            _require_ok(check_kserve_request(body, sig), f"the KServe v2 request of {model}")
            target = repo / f"request_{model}.json"
            write_text_atomic(target, json.dumps(body), flag="--triton")
            result.requests[f"triton_{role}"] = str(target)
