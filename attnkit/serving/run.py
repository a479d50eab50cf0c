"""``attnkit run --serve``: the packaged ONNX model in Triton's own server, its answer checked against
onnxruntime on the same file, then load-tested with dynamic batching on (the config as packaged) and off
(the same model file, the config without ``dynamic_batching``), so the report shows what batching buys."""

from __future__ import annotations

import json
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..core.errors import ArtifactError
from .process import ServerError, http_json

#: served answers must match onnxruntime on the same file to this max abs difference
SERVED_ATOL = 1e-5


@dataclass
class ServeResult:
    model: str
    reports: list = field(default_factory=list)  # LoadReport, batching on then off
    max_abs_diff: float = float("nan")
    log: str = ""


def kserve_outputs(body: dict) -> dict[str, np.ndarray]:
    """The outputs of a KServe v2 JSON answer as arrays of their shapes."""
    return {o["name"]: np.asarray(o["data"]).reshape(o["shape"]) for o in body["outputs"]}


def kserve_feeds(request: dict) -> dict[str, np.ndarray]:
    from ..core.names import NUMPY_OF_KSERVE

    return {
        i["name"]: np.asarray(i["data"], NUMPY_OF_KSERVE[i["datatype"]]).reshape(i["shape"]) for i in request["inputs"]
    }


def served(server, model: str, request: dict) -> dict[str, np.ndarray]:
    """``model``'s answer to the KServe v2 ``request`` from a running server, as arrays of their shapes."""
    status, answer = http_json("POST", f"{server.http_url}/v2/models/{model}/infer", request, timeout=60)
    if status != 200:
        raise server.fail(f"answered `{model}` with HTTP {status}: {answer.get('error', answer)}")
    return kserve_outputs(answer)


def served_vs_onnxruntime(server, model: str, onnx_path: Path, request: dict) -> float:
    """Send ``request`` to ``model`` and return the largest |served - onnxruntime| over its outputs."""
    from ..runtimes.onnxruntime import session

    served_ = served(server, model, request)
    sess = session(onnx_path)
    names = list(served_)
    expected = dict(zip(names, sess.run(names, kserve_feeds(request))))
    return max(float(np.max(np.abs(served_[n] - expected[n]))) for n in names)


def unbatched_config(text: str, name: str) -> str:
    """The same config without dynamic batching (max_batch_size kept, so requests still carry a batch dim)."""
    from google.protobuf import text_format

    from ..exporters.triton import _model_config

    cfg = text_format.Parse(text, _model_config().ModelConfig())
    cfg.name = name
    cfg.ClearField("dynamic_batching")
    return text_format.MessageToString(cfg)


def serve_load_tests(
    out: Path,
    packaged,
    *,
    concurrency: tuple[int, ...] = (1, 2, 4, 8, 16),
    warmup_s: float = 0.5,
    window_s: float = 2.0,
    progress=None,
) -> ServeResult:
    from ..exporters.triton import _link_or_copy
    from .loadtest import load_test
    from .triton import TritonServer

    say = progress or (lambda _m: None)
    onnx = [
        m
        for m in packaged.triton
        if m["platform"] == "onnxruntime_onnx" and m["precision"] == "fp32" and "role" not in m
    ]
    if not onnx or "triton" not in packaged.requests:
        raise ArtifactError("--serve: the Triton repository has no fp32 ONNX model to load-test.")
    model = onnx[0]["name"]
    request = json.loads(Path(packaged.requests["triton"]).read_text())
    src = Path(onnx[0]["path"])
    off = f"{model}_nobatch"
    with tempfile.TemporaryDirectory(prefix="attnkit-serve-") as tmp:
        repo = Path(tmp) / "repository"
        repo.mkdir()
        version = max((p for p in src.iterdir() if p.name.isdigit()), key=lambda p: int(p.name))
        for name in (model, off):  # the weights hard-linked, each config a file of its own
            (repo / name).mkdir()
            _link_or_copy(version, repo / name / version.name)
        shutil.copy2(src / "config.pbtxt", repo / model / "config.pbtxt")
        (repo / off / "config.pbtxt").write_text(unbatched_config((src / "config.pbtxt").read_text(), off))
        result = ServeResult(model)
        say(f"tritonserver: {model} with dynamic batching on and off")
        with TritonServer(repo, models=(model, off), log=Path(tmp) / "tritonserver.log") as server:
            server.start()
            onnx_file = next(p for p in version.iterdir() if p.suffix == ".onnx")
            result.max_abs_diff = served_vs_onnxruntime(server, model, onnx_file, request)
            if not result.max_abs_diff <= SERVED_ATOL:
                raise ServerError(
                    f"--serve: `{model}` served answers differ from onnxruntime on the same file by "
                    f"{result.max_abs_diff:.3g} (> {SERVED_ATOL:g}); no load test of a wrong answer."
                )
            for name, label in ((model, "dynamic batching on"), (off, "dynamic batching off")):
                report = load_test(
                    server.http_url, name, request, concurrency=concurrency, warmup_s=warmup_s, window_s=window_s,
                    label=label, progress=say,
                )  # fmt: skip
                if not server.alive():
                    server.check_alive()
                result.reports.append(report)
            result.log = server.last_log_line()
    return result
