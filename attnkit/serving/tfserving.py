"""A STAND-IN for TensorFlow Serving's REST API (``tensorflow_model_server`` is in no package these
machines can install). It serves attnkit's ``tfserving/`` layout the way ``tensorflow_model_server
--model_name=NAME --model_base_path=DIR`` does, for the parts attnkit's artifacts use:

- the highest numeric version directory under the base path, tag ``serve``;
- ``GET /v1/models/NAME[/versions/N]`` (version status) and ``.../metadata`` (the SignatureDefs as JSON);
- ``POST /v1/models/NAME[/versions/N]:predict`` in the row format (``instances``) and the columnar format
  (``inputs``), ``signature_name`` defaulting to ``serving_default``; answers ``predictions`` / ``outputs``,
  a bare value when the signature has a single output, as TF Serving does;
- errors as JSON ``{"error": "..."}``: HTTP 400 for a bad request, 404 for an unknown model or version.

Not covered: gRPC, model config files, version policies other than "latest", batching, classify/regress,
base64 ``b64`` values. Run it with ``attnkit serve tfserving DIR`` (``make tfserving``); it is a stand-in,
and every answer carries ``Server: attnkit-tfserving-standin``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np

from .process import LOOPBACK, ServerProcess, free_port, http_json

SERVER_HEADER = "attnkit-tfserving-standin"
GET_PATH = re.compile(r"^/v1/models/([^/:]+)(?:/versions/(\d+))?(/metadata)?$")
POST_PATH = re.compile(r"^/v1/models/([^/:]+)(?:/versions/(\d+))?:([a-z]+)$")


class RequestError(Exception):
    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


def versions_of(base: Path) -> list[int]:
    return sorted(int(p.name) for p in base.iterdir() if p.name.isdigit() and (p / "saved_model.pb").is_file())


def model_bases(directory: Path, name: str | None = None) -> dict[str, Path]:
    """{model name: base path}: DIR itself when it holds versions, else each subdirectory that does."""
    directory = Path(directory)
    if not directory.is_dir():
        raise FileNotFoundError(f"`{directory}` is not a directory")
    if versions_of(directory):
        return {name or directory.name: directory}
    found = {p.name: p for p in sorted(directory.iterdir()) if p.is_dir() and versions_of(p)}
    if name:
        found = {k: v for k, v in found.items() if k == name}
    if not found:
        raise FileNotFoundError(f"no SavedModel version directory (<N>/saved_model.pb) under `{directory}`")
    return found


class Servable:
    """The highest version of one model, tag ``serve``."""

    def __init__(self, name: str, base: Path):
        import tensorflow as tf
        from google.protobuf import json_format
        from tensorflow.python.saved_model import loader_impl

        self.name, self.base = name, base
        self.version = versions_of(base)[-1]
        path = base / str(self.version)
        self.loaded = tf.saved_model.load(str(path), tags=["serve"])
        meta = next(m for m in loader_impl.parse_saved_model(str(path)).meta_graphs if "serve" in m.meta_info_def.tags)
        self.signature_defs = {
            k: json_format.MessageToDict(v, preserving_proto_field_name=True) for k, v in meta.signature_def.items()
        }
        self.tf = tf

    def status(self) -> dict:
        return {"model_version_status": [{"version": str(self.version), "state": "AVAILABLE",
                                          "status": {"error_code": "OK", "error_message": ""}}]}  # fmt: skip

    def metadata(self) -> dict:
        return {
            "model_spec": {"name": self.name, "signature_name": "", "version": str(self.version)},
            "metadata": {"signature_def": {"signature_def": self.signature_defs}},
        }

    def predict(self, body: dict) -> dict:
        key = body.get("signature_name") or "serving_default"
        if key not in self.loaded.signatures:
            raise RequestError(f'Serving signature name: "{key}" not found in signature def')
        fn = self.loaded.signatures[key]
        specs = fn.structured_input_signature[1]
        if ("instances" in body) == ("inputs" in body):
            raise RequestError("Missing 'inputs' or 'instances' key" if "instances" not in body else
                               "Request body has both 'instances' and 'inputs'; use one of them")  # fmt: skip
        row = "instances" in body
        columns = self._columns(body["instances"], specs) if row else self._named(body["inputs"], specs)
        feeds = {}
        for n, spec in specs.items():
            if n not in columns:
                raise RequestError(f"Missing input '{n}' of signature '{key}'")
            feeds[n] = self._tensor(n, columns[n], spec)
        extra = set(columns) - set(specs)
        if extra:
            raise RequestError(f"'{sorted(extra)[0]}' is not an input of signature '{key}'")
        try:
            result = fn(**feeds)
        except (self.tf.errors.OpError, ValueError, TypeError) as e:
            raise RequestError(str(getattr(e, "message", e)).strip().splitlines()[0]) from None
        out = {n: v.numpy().tolist() for n, v in result.items()}
        if row:
            rows = len(next(iter(out.values())))
            if len(out) == 1:
                return {"predictions": next(iter(out.values()))}
            return {"predictions": [{n: v[i] for n, v in out.items()} for i in range(rows)]}
        return {"outputs": next(iter(out.values())) if len(out) == 1 else out}

    @staticmethod
    def _named(value, specs) -> dict:
        if isinstance(value, dict):
            return value
        if len(specs) == 1:
            return {next(iter(specs)): value}
        raise RequestError("The signature has several inputs: 'inputs' must be an object of named inputs")

    @staticmethod
    def _columns(instances, specs) -> dict:
        """Row format: one object (or, for a single input, one value) per instance, stacked per input."""
        if not isinstance(instances, list) or not instances:
            raise RequestError("'instances' must be a non-empty list")
        names = list(specs)
        columns: dict[str, list] = {}
        for i, inst in enumerate(instances):
            if not isinstance(inst, dict):
                if len(names) != 1:
                    raise RequestError(f"instance {i} is not an object; the signature has inputs {', '.join(names)}")
                inst = {names[0]: inst}
            if i and set(inst) != set(columns):
                raise RequestError(
                    f"Failed to process element: {i} of 'instances' list. Error: its keys differ from element 0's"
                )
            for n, v in inst.items():
                columns.setdefault(n, []).append(v)
        for n, values in columns.items():
            shapes = {np.shape(v) for v in values}
            if len(shapes) > 1:
                raise RequestError(
                    f"Failed to process element of 'instances' list for '{n}': instances have different shapes "
                    f"{sorted(shapes)}"
                )
        return columns

    def _tensor(self, name, value, spec):
        dtype = spec.dtype.as_numpy_dtype
        try:
            arr = np.asarray(value)
        except ValueError:
            raise RequestError(f"'{name}' is not a rectangular array") from None
        if arr.dtype == object:
            raise RequestError(f"'{name}' is not a rectangular array of numbers")
        if np.issubdtype(dtype, np.integer) and arr.size and not np.issubdtype(arr.dtype, np.integer):
            if not np.issubdtype(arr.dtype, np.number) or not np.all(np.mod(arr, 1) == 0):
                raise RequestError(f"'{name}' holds non-integer values; the signature takes {spec.dtype.name}")
        want = spec.shape
        if want.rank is not None and (
            arr.ndim != want.rank or any(w is not None and w != d for w, d in zip(want.as_list(), arr.shape))
        ):
            raise RequestError(f"'{name}' has shape {list(arr.shape)}; the signature takes {want.as_list()}")
        return self.tf.constant(arr.astype(dtype))


def make_server(servables: dict[str, Servable], port: int) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        server_version = SERVER_HEADER
        sys_version = ""

        def log_message(self, fmt, *args):  # one line per request on stderr, like a server log
            sys.stderr.write(f"{self.command} {self.path} -> {fmt % args}\n")

        def _send(self, status: int, body: dict) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _servable(self, name, version) -> Servable:
            s = servables.get(name)
            if s is None:
                raise RequestError(f"Servable not found for request: Latest({name})", 404)
            if version is not None and int(version) != s.version:
                raise RequestError(f"Servable not found for request: Specific({name}, {version})", 404)
            return s

        def do_GET(self):  # noqa: N802 - http.server's naming
            try:
                m = GET_PATH.match(self.path)
                if not m:
                    raise RequestError(f"Malformed request: GET {self.path}", 404)
                s = self._servable(m.group(1), m.group(2))
                self._send(200, s.metadata() if m.group(3) else s.status())
            except RequestError as e:
                self._send(e.status, {"error": str(e)})

        def do_POST(self):  # noqa: N802
            try:
                m = POST_PATH.match(self.path)
                if not m:
                    raise RequestError(f"Malformed request: POST {self.path}", 404)
                s = self._servable(m.group(1), m.group(2))
                if m.group(3) != "predict":
                    raise RequestError(f"this stand-in serves :predict only, not :{m.group(3)}")
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                try:
                    body = json.loads(raw)
                except ValueError as e:
                    raise RequestError(f"JSON Parse error: {e}") from None
                if not isinstance(body, dict):
                    raise RequestError("JSON Value is not an object")
                self._send(200, s.predict(body))
            except RequestError as e:
                self._send(e.status, {"error": str(e)})

    return ThreadingHTTPServer((LOOPBACK, port), Handler)


class TFServingStandIn(ServerProcess):
    """The stand-in as a subprocess of this Python, on 127.0.0.1 (stopped by PID like Triton)."""

    what = "TF Serving stand-in"

    def __init__(self, directory: str | Path, *, model_name: str | None = None, port: int = 0, log: Path | None = None):
        self.port = port or free_port()
        self.names = list(model_bases(Path(directory), model_name))
        cmd = [sys.executable, "-m", "attnkit.serving.tfserving", f"--rest_api_port={self.port}",
               f"--model_base_path={Path(directory).absolute()}"] + ([f"--model_name={model_name}"] if model_name else [])  # fmt: skip
        env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
        super().__init__(cmd, env=env, log=log)

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    def ready(self) -> bool:
        return all(http_json("GET", f"{self.url}/v1/models/{n}", timeout=2)[0] == 200 for n in self.names)

    def start(self, timeout: float = 120.0) -> TFServingStandIn:
        super().start()
        self.wait_until(self.ready, timeout)
        return self


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="attnkit's TF Serving REST stand-in (not tensorflow_model_server).")
    p.add_argument("--rest_api_port", type=int, default=8501)
    p.add_argument("--model_name", default=None)
    p.add_argument("--model_base_path", required=True)
    a = p.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
        bases = model_bases(Path(a.model_base_path), a.model_name)
    except FileNotFoundError as e:
        print(f"error: --model_base_path: {e}", file=sys.stderr)
        return 2
    servables = {}
    for name, base in bases.items():
        servables[name] = Servable(name, base)
        print(f"loaded {name} version {servables[name].version} from {base}", file=sys.stderr, flush=True)
    server = make_server(servables, a.rest_api_port)
    print(f"attnkit TF Serving REST stand-in (not tensorflow_model_server) at http://{LOOPBACK}:{a.rest_api_port}",
          file=sys.stderr, flush=True)  # fmt: skip
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
