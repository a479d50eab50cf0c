"""What attnkit's stand-in backends share: the model-vs-config check of Triton's C++ backends, and their
batched execution.

Runs inside Triton's Python backend stub (the serving venv: numpy < 2, no attnkit), so it imports
nothing but numpy. Written by hand because no package provides it: Triton's onnxruntime and tensorflow
backends are C++ (``ValidateInputs``/``ValidateOutputs`` with backend_common's ``CompareDimsSupported``),
and their checks are reproduced here with the same rules and the same wording, so a config that Triton's
own backend would refuse is refused here too.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass

import numpy as np

WILDCARD = -1

#: Triton config data types <-> numpy
NUMPY = {
    "TYPE_BOOL": np.bool_,
    "TYPE_INT8": np.int8,
    "TYPE_INT16": np.int16,
    "TYPE_INT32": np.int32,
    "TYPE_INT64": np.int64,
    "TYPE_UINT8": np.uint8,
    "TYPE_FP16": np.float16,
    "TYPE_FP32": np.float32,
    "TYPE_FP64": np.float64,
}


@dataclass(frozen=True)
class Tensor:
    """A model's own view of one input or output: Triton data type and shape (-1 where dynamic)."""

    name: str
    dtype: str  # TYPE_FP32, ... ; TYPE_INVALID for a type Triton has no name for
    shape: tuple[int, ...]


class ConfigMismatch(Exception):
    """The config does not describe the model; the message is the one Triton's C++ backend gives."""


def _shape(dims) -> str:
    return "[" + ",".join(str(d) for d in dims) + "]"


def _compare_dims(model: str, tensor: str, model_shape, dims, max_batch_size: int, exact: bool) -> None:
    """backend_common's CompareDimsSupported: with batching the model's first dim must be -1 and the
    rest must match ``dims``; without, the whole shape must. Inputs allow a -1 on either side
    (``exact`` False), outputs need the same dims (a -1 only where the model has one)."""
    model_shape, dims = list(model_shape), list(dims)
    if max_batch_size > 0:
        if not model_shape or model_shape[0] != WILDCARD:
            raise ConfigMismatch(
                f"model '{model}', tensor '{tensor}': for the model to support batching the shape should have at "
                f"least 1 dimension and the first dimension must be -1; but shape expected by the model is "
                f"{_shape(model_shape)}"
            )
        full = [WILDCARD, *dims]
    else:
        full = dims
    same = len(full) == len(model_shape) and all(
        m == c or (not exact and WILDCARD in (m, c)) for m, c in zip(model_shape, full)
    )
    if not same:
        if max_batch_size > 0:
            raise ConfigMismatch(
                f"model '{model}', tensor '{tensor}': the model expects {len(model_shape)} dimensions (shape "
                f"{_shape(model_shape)}) but the model configuration specifies {len(full)} dimensions (an initial "
                f"batch dimension because max_batch_size > 0 followed by the explicit tensor shape, making complete "
                f"shape {_shape(full)})"
            )
        raise ConfigMismatch(
            f"model '{model}', tensor '{tensor}': the model expects {len(model_shape)} dimensions (shape "
            f"{_shape(model_shape)}) but the model configuration specifies {len(full)} dimensions (shape "
            f"{_shape(full)})"
        )


def check_config(config: dict, inputs: list[Tensor], outputs: list[Tensor]) -> None:
    """Refuse a config that does not match the model, as ValidateInputs/ValidateOutputs do."""
    name, max_batch = config["name"], int(config.get("max_batch_size", 0))
    if len(config.get("input", [])) != len(inputs):
        raise ConfigMismatch(
            f"unable to load model '{name}', configuration expects {len(config.get('input', []))} inputs, "
            f"model provides {len(inputs)}"
        )
    for mode, entries, tensors in (
        ("input", config.get("input", []), inputs),
        ("output", config.get("output", []), outputs),
    ):
        by_name = {t.name: t for t in tensors}
        for io in entries:
            t = by_name.get(io["name"])
            if t is None:
                raise ConfigMismatch(
                    f"unable to load model '{name}', unexpected inference {mode} '{io['name']}', allowed {mode}s "
                    f"are: {', '.join(sorted(by_name))}"
                )
            if io["data_type"] != t.dtype:
                raise ConfigMismatch(
                    f"unable to load model '{name}', configuration expects datatype {io['data_type']} for {mode} "
                    f"'{io['name']}', model provides {t.dtype}"
                )
            dims = io.get("reshape", {}).get("shape", io.get("dims", []))
            if t.shape:
                _compare_dims(name, io["name"], t.shape, [int(d) for d in dims], max_batch, exact=mode == "output")
            elif any(int(d) != 1 for d in dims):
                raise ConfigMismatch(
                    f"unable to load model '{name}', scalar tensor '{io['name']}', should only provide 1 in the model "
                    f"configuration when the model doesn't support batching. Model configuration provided: "
                    f"{_shape(dims)}."
                )


class BatchedModel:
    """Execution as Triton's C++ backends do it: the requests the scheduler hands over in one call (one
    dynamic batch) are concatenated along the batch axis, run once, and the outputs split back. Requests
    whose non-batch shapes differ (the dynamic batcher keeps them apart; this guards the invariant) run
    as separate groups. Without batching (max_batch_size 0) each request runs alone."""

    def __init__(self, config: dict, run, input_names: list[str], output_names: list[str], pb_utils):
        self.config, self.run, self.pb = config, run, pb_utils
        self.input_names, self.output_names = input_names, output_names
        self.batching = int(config.get("max_batch_size", 0)) > 0
        self.dtypes = {io["name"]: NUMPY.get(io["data_type"]) for io in config.get("input", [])}

    def _feeds(self, request) -> dict[str, np.ndarray]:
        feeds = {}
        for n in self.input_names:
            t = self.pb.get_input_tensor_by_name(request, n)
            if t is None:
                raise ValueError(f"expected input '{n}' is missing from the request")
            feeds[n] = t.as_numpy()
        return feeds

    def execute(self, requests):
        responses: list = [None] * len(requests)
        groups: dict[tuple, list[tuple[int, dict]]] = {}
        for i, request in enumerate(requests):
            try:
                feeds = self._feeds(request)
            except Exception as e:  # noqa: BLE001 - reported to the client, as Triton does
                responses[i] = self._error(e)
                continue
            key = tuple((n, a.shape[1:] if self.batching else (i,)) for n, a in feeds.items())
            groups.setdefault(key, []).append((i, feeds))
        for members in groups.values():
            try:
                if len(members) == 1:
                    outs = self.run(members[0][1])
                    splits = [outs]
                else:
                    stacked = {n: np.concatenate([f[n] for _, f in members]) for n in self.input_names}
                    outs = self.run(stacked)
                    bounds = np.cumsum([f[self.input_names[0]].shape[0] for _, f in members])[:-1]
                    parts = {n: np.split(o, bounds) for n, o in outs.items()}
                    splits = [{n: parts[n][k] for n in outs} for k in range(len(members))]
                for (i, _), out in zip(members, splits):
                    tensors = [self.pb.Tensor(n, np.ascontiguousarray(out[n])) for n in self.output_names]
                    responses[i] = self.pb.InferenceResponse(output_tensors=tensors)
            except Exception as e:  # noqa: BLE001
                for i, _ in members:
                    responses[i] = self._error(e)
        return responses

    def _error(self, e: Exception):
        return self.pb.InferenceResponse(output_tensors=[], error=self.pb.TritonError(str(e).splitlines()[0]))


class StandIn:
    """Base of the stand-in ``TritonPythonModel`` classes. A subclass names its default model file and
    implements ``load(path, config) -> (inputs, outputs)`` (the model's own view, a list of :class:`Tensor`
    each; a ConfigMismatch it raises refuses the model) and ``run(feeds) -> {output name: array}``."""

    default_filename = ""

    def initialize(self, args):
        import triton_python_backend_utils as pb_utils

        config = json.loads(args["model_config"])
        filename = config.get("default_model_filename") or self.default_filename
        path = os.path.join(args["model_repository"], args["model_version"], filename)
        if not os.path.exists(path):
            raise pb_utils.TritonModelException(f"unable to load model '{config['name']}': {path} not found")
        try:
            inputs, outputs = self.load(path, config)
            check_config(config, inputs, outputs)
        except ConfigMismatch as e:
            raise pb_utils.TritonModelException(str(e)) from None
        self.outputs = [o["name"] for o in config["output"]]
        self.model = BatchedModel(config, self.run, [i["name"] for i in config["input"]], self.outputs, pb_utils)

    def load(self, path: str, config: dict):
        raise NotImplementedError

    def run(self, feeds: dict):
        raise NotImplementedError

    def execute(self, requests):
        return self.model.execute(requests)
