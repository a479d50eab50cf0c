"""Load tests of a running KServe v2 endpoint (Triton over HTTP or gRPC), the way perf_analyzer's
concurrency mode measures: at each level N, N clients each keep one request in flight (send, wait for
the answer, send again); after a warm-up, every answer completed inside a fixed window counts. Per level:
requests/s and inferences/s (requests × rows per request), p50/p90/p99 latency, error count, and when the
server is Triton, the average batch its scheduler formed (from its statistics endpoint).

Why not perf_analyzer itself: it ships in Triton's SDK container and in no package these machines can
install. Requests are the package's KServe v2 JSON example (or one built from the model's metadata),
encoded once and sent as is: HTTP over ``http.client`` keep-alive connections (one per client thread),
gRPC through ``tritonclient.grpc`` (one client per thread).
"""

from __future__ import annotations

import http.client
import json
import math
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from urllib.parse import urlparse

import numpy as np

from ..core.errors import AttnkitError
from ..core.names import NUMPY_OF_KSERVE
from .process import ServerError, http_json

LEVELS = (1, 2, 4, 8, 16)
#: perf_analyzer's stability rule: a level is measured in windows until the last three agree; these are its
#: defaults (--stability-percentage 10, --max-trials 10). "Agree": for throughput and for mean latency, the
#: largest and smallest of the three are within STABILITY_PCT % of the three's mean.
STABILITY_PCT = 10.0
MAX_WINDOWS = 10
LOOPBACK_HOSTS = ("127.0.0.1", "localhost")


@dataclass(frozen=True)
class Endpoint:
    protocol: str  # http | grpc
    host: str
    port: int

    @classmethod
    def parse(cls, url: str, flag: str = "--server") -> Endpoint:
        """``http://127.0.0.1:8000`` or ``grpc://127.0.0.1:8001``; loopback only."""
        u = urlparse(url if "://" in url else f"http://{url}")
        if u.scheme not in ("http", "grpc"):
            raise AttnkitError(f"`{url}` has scheme `{u.scheme}`; use http:// or grpc://.", flag=flag)
        if u.hostname not in LOOPBACK_HOSTS:
            raise AttnkitError(
                f"`{url}` is not on this machine; load tests drive 127.0.0.1 only.",
                flag=flag,
                hint="Give http://127.0.0.1:PORT.",
            )
        try:
            port = u.port or (8000 if u.scheme == "http" else 8001)
        except ValueError:
            raise AttnkitError(f"`{url}` has no valid port.", flag=flag) from None
        return cls(u.scheme, "127.0.0.1", port)

    @property
    def http_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def __str__(self) -> str:
        return f"{self.protocol}://{self.host}:{self.port}"


def rows_of(body: dict) -> int:
    """Rows (the batch) of a KServe v2 request: the first dim of its first input."""
    return int(body["inputs"][0]["shape"][0]) if body["inputs"] and body["inputs"][0]["shape"] else 1


def _metadata(endpoint: Endpoint, model: str) -> tuple[dict, dict]:
    """The model's KServe v2 metadata and its Triton config (``{}`` where the server has no config endpoint)."""
    if endpoint.protocol == "grpc":
        import tritonclient.grpc as grpcclient
        from tritonclient.utils import InferenceServerException

        client = grpcclient.InferenceServerClient(f"{endpoint.host}:{endpoint.port}")
        try:
            meta = client.get_model_metadata(model, as_json=True)
            try:
                config = client.get_model_config(model, as_json=True).get("config", {})
            except InferenceServerException:
                config = {}
        except InferenceServerException as e:
            raise ServerError(f"--server: model `{model}` at {endpoint}: {e.message()}") from None
        finally:
            client.close()
        return meta, config
    try:
        status, meta = http_json("GET", f"{endpoint.http_url}/v2/models/{model}", timeout=10)
    except OSError as e:
        raise ServerError(f"--server: nothing answers at {endpoint} ({e}).") from None
    if status != 200:
        raise ServerError(f"--server: model `{model}` at {endpoint}: HTTP {status}: {meta.get('error', meta)}")
    status, config = http_json("GET", f"{endpoint.http_url}/v2/models/{model}/config", timeout=10)
    return meta, config if status == 200 else {}


def request_from_metadata(endpoint: Endpoint, model: str, batch: int, seq: int, seed: int = 0) -> dict:
    """A KServe v2 request built from the model's metadata: dynamic dims become ``batch`` (the first, when
    the model batches) and ``seq`` (the others); floats ~ N(0, 1), integers in {0, 1} (token ids 0 and 1
    exist in every vocabulary), inputs named ``*mask*`` all ones. Seeded. Real inputs: a request file."""
    meta, config = _metadata(endpoint, model)
    batched = int(config.get("max_batch_size", 0) or 0) > 0
    rng = np.random.default_rng(seed)
    inputs = []
    for io in meta["inputs"]:
        shape = [int(d) for d in io["shape"]]
        shape = [(batch if i == 0 and (batched or d == -1) else seq) if d == -1 else d for i, d in enumerate(shape)]
        dtype = NUMPY_OF_KSERVE.get(io["datatype"])
        if dtype is None or dtype == "bfloat16":  # numpy has no bfloat16 of its own
            raise AttnkitError(f"input `{io['name']}` has datatype {io['datatype']}.", flag="--request",
                               hint="Give a request file.")  # fmt: skip
        if "mask" in io["name"]:
            data = np.ones(shape, dtype)
        elif np.issubdtype(dtype, np.floating):
            data = rng.standard_normal(shape).astype(dtype)
        else:
            data = rng.integers(0, 2, shape).astype(dtype)
        inputs.append({"name": io["name"], "shape": shape, "datatype": io["datatype"], "data": data.ravel().tolist()})
    return {"inputs": inputs, "outputs": [{"name": o["name"]} for o in meta["outputs"]]}


class _HttpSender:
    def __init__(self, endpoint: Endpoint, model: str, body: dict, timeout: float):
        self.endpoint, self.timeout = endpoint, timeout
        self.path = f"/v2/models/{model}/infer"
        self.payload = json.dumps(body).encode()
        self.conn: http.client.HTTPConnection | None = None

    def __call__(self) -> str | None:
        """One request; None on success, else the error (the server's own message when it sent one)."""
        try:
            if self.conn is None:
                self.conn = http.client.HTTPConnection(self.endpoint.host, self.endpoint.port, timeout=self.timeout)
            self.conn.request("POST", self.path, self.payload, {"Content-Type": "application/json"})
            r = self.conn.getresponse()
            data = r.read()
        except (OSError, http.client.HTTPException) as e:
            self.close()
            return f"{type(e).__name__}: {e}"
        if r.status != 200:
            try:
                return f"HTTP {r.status}: {json.loads(data).get('error', '')}"
            except ValueError:
                return f"HTTP {r.status}"
        return None if b'"outputs"' in data else "an answer without outputs"

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None


class _GrpcSender:
    def __init__(self, endpoint: Endpoint, model: str, body: dict, timeout: float):
        import tritonclient.grpc as grpcclient
        from tritonclient.utils import InferenceServerException

        self.client = grpcclient.InferenceServerClient(f"{endpoint.host}:{endpoint.port}")
        self.model, self.timeout = model, timeout
        self.inputs = []
        for item in body["inputs"]:
            inp = grpcclient.InferInput(item["name"], item["shape"], item["datatype"])
            inp.set_data_from_numpy(np.asarray(item["data"], NUMPY_OF_KSERVE[item["datatype"]]).reshape(item["shape"]))
            self.inputs.append(inp)
        self.outputs = [grpcclient.InferRequestedOutput(o["name"]) for o in body.get("outputs", [])]
        self.error = InferenceServerException

    def __call__(self) -> str | None:
        try:
            self.client.infer(self.model, self.inputs, outputs=self.outputs or None, client_timeout=self.timeout)
        except self.error as e:
            return f"gRPC {e.status() or ''}: {e.message()}"
        return None

    def close(self) -> None:
        self.client.close()


def _sender(endpoint: Endpoint, model: str, body: dict, timeout: float):
    return (_HttpSender if endpoint.protocol == "http" else _GrpcSender)(endpoint, model, body, timeout)


@dataclass
class Level:
    concurrency: int
    requests: int  # completed inside the reported windows, with or without error
    errors: int
    window_s: float  # the reported windows' total length
    requests_per_s: float
    inferences_per_s: float
    latency_ms: dict  # count, mean, stdev, p50, p90, p95, p99, min, max of the successful requests
    server_batch: float | None = None  # Triton: inferences / executions in the reported windows
    first_error: str | None = None
    windows: int = 1  # windows measured at this level (the last three are reported)
    stable: bool = True  # the last three windows agreed within the stability percentage
    window_throughputs: list[float] = field(default_factory=list)  # inferences/s of every window, in order


@dataclass
class LoadReport:
    endpoint: str
    model: str
    rows_per_request: int
    request_shapes: dict
    warmup_s: float
    window_s: float
    label: str = ""
    levels: list[Level] = field(default_factory=list)
    stability_pct: float = STABILITY_PCT
    max_windows: int = MAX_WINDOWS
    environment: dict = field(default_factory=dict)

    @property
    def errors(self) -> int:
        return sum(lv.errors for lv in self.levels)

    def to_dict(self) -> dict:
        return asdict(self)


def _stats(endpoint: Endpoint, model: str) -> tuple[int, int] | None:
    """Triton's (inference_count, execution_count) of ``model``; None where the server has no such endpoint."""
    try:
        status, body = http_json("GET", f"{endpoint.http_url}/v2/models/{model}/stats", timeout=5)
        s = body["model_stats"][0]
        return (int(s.get("inference_count", 0)), int(s.get("execution_count", 0))) if status == 200 else None
    except (OSError, KeyError, IndexError, ValueError):
        return None


def probe(endpoint: Endpoint, model: str, body: dict, timeout: float = 30.0) -> None:
    """One request before the sweep: a server that is not there or refuses the request is a one-line error."""
    sender = _sender(endpoint, model, body, timeout)
    try:
        error = sender()
    finally:
        sender.close()
    if error:
        raise ServerError(f"--server: `{model}` at {endpoint} did not answer the request: {error}")


def stable(windows: list[tuple[float, float]], pct: float) -> bool:
    """True when the last three ``(inferences/s, mean latency ms)`` windows agree within ``pct`` %."""
    if len(windows) < 3:
        return False
    for values in zip(*windows[-3:]):
        mean = float(np.mean(values))
        if not (mean > 0 and (max(values) - min(values)) / mean <= pct / 100):
            return False
    return True


def run_level(
    endpoint: Endpoint,
    model: str,
    body: dict,
    concurrency: int,
    warmup_s: float,
    window_s: float,
    max_requests: int,
    timeout: float,
    stats_endpoint: Endpoint | None = None,
    min_answers: int = 0,
    max_window_s: float = 60.0,
    stability_pct: float = STABILITY_PCT,
    max_windows: int = MAX_WINDOWS,
) -> Level:
    """One concurrency level, measured as perf_analyzer measures one: ``concurrency`` closed-loop clients;
    after ``warmup_s``, consecutive windows, each at least ``window_s`` seconds and until ``min_answers``
    (default 4 x concurrency) answers completed in it (a slow model's batches finish in bursts: a window
    holding one burst would be noise), at most ``max_window_s``. Windows repeat until the last three agree
    within ``stability_pct`` % (:func:`stable`), at most ``max_windows``; the last three are reported, pooled
    (an unstable level says so). It also ends when ``max_requests`` have been sent.

    Long (about 90 lines) on purpose: the clients, the window clock and the stopping rule share one lock and one
    set of counters; split into functions they would pass the same six mutable cells around."""
    from ..benchmark.stats import summarise

    min_answers = min_answers or 4 * concurrency
    start = time.perf_counter()
    records: list[tuple[float, float, str | None]] = []
    lock = threading.Lock()
    budget = [max_requests]
    current = [start + warmup_s, 0]  # the current window's start, answers completed in it
    stop = threading.Event()

    def client():
        sender = _sender(endpoint, model, body, timeout)
        try:
            while not stop.is_set():
                with lock:
                    if budget[0] <= 0:
                        return
                    budget[0] -= 1
                t0 = time.perf_counter()
                error = sender()
                t1 = time.perf_counter()
                with lock:
                    records.append((t0, t1, error))
                    current[1] += t1 >= current[0]
        finally:
            sender.close()

    threads = [threading.Thread(target=client, daemon=True) for _ in range(concurrency)]
    for t in threads:
        t.start()
    time.sleep(max(0.0, current[0] - time.perf_counter()))
    bounds = [current[0]]
    stats = [_stats(stats_endpoint, model) if stats_endpoint is not None else None]
    summaries: list[tuple[float, float]] = []
    throughputs: list[float] = []
    rows = rows_of(body)
    exhausted = False
    while not exhausted and len(summaries) < max_windows and not stable(summaries, stability_pct):
        while True:
            time.sleep(0.05)
            now = time.perf_counter()
            exhausted = budget[0] <= 0 and not any(t.is_alive() for t in threads)
            elapsed = now - bounds[-1]
            if exhausted or elapsed >= max_window_s or (elapsed >= window_s and current[1] >= min_answers):
                break
        with lock:
            current[0], current[1] = now, 0
            done = list(records)
        bounds.append(now)
        stats.append(_stats(stats_endpoint, model) if stats_endpoint is not None else None)
        ok = [e - s for s, e, err in done if bounds[-2] <= e <= bounds[-1] and err is None]
        throughputs.append(len(ok) * rows / (bounds[-1] - bounds[-2]))
        summaries.append((throughputs[-1], 1e3 * float(np.mean(ok)) if ok else float("nan")))
    stop.set()
    for t in threads:
        t.join(timeout + 5)
    first, last = bounds[max(0, len(bounds) - 4)], bounds[-1]  # the last three windows (or all, if fewer)
    window = last - first
    inside = [r for r in records if first <= r[1] <= last]
    ok = [r for r in inside if r[2] is None]
    errors = [r for r in inside if r[2] is not None]
    before, after = stats[max(0, len(stats) - 4)], stats[-1]
    server_batch = None
    if before and after and after[1] > before[1]:
        server_batch = (after[0] - before[0]) / (after[1] - before[1])
    return Level(
        concurrency=concurrency,
        requests=len(inside),
        errors=len(errors),
        window_s=window,
        requests_per_s=len(ok) / window,
        inferences_per_s=len(ok) * rows / window,
        latency_ms=summarise([(e - s) * 1e3 for s, e, _ in ok]),
        server_batch=server_batch,
        first_error=errors[0][2] if errors else None,
        windows=len(summaries),
        stable=stable(summaries, stability_pct),
        window_throughputs=throughputs,
    )


def read_request(path: Path) -> dict:
    """A KServe v2 JSON request file (e.g. the package's request_<model>.json), or a one-line error."""
    try:
        body = json.loads(Path(path).read_text())
    except OSError as e:
        raise AttnkitError(f"cannot read `{path}` ({e.strerror or e}).", flag="--request") from None
    except ValueError as e:
        raise AttnkitError(f"`{path}` is not JSON ({e}).", flag="--request") from None
    if not isinstance(body, dict) or not isinstance(body.get("inputs"), list) or not body["inputs"]:
        raise AttnkitError(f"`{path}` is not a KServe v2 request (no \"inputs\" list).", flag="--request",
                           hint="Use the request_<model>.json that attnkit package wrote.")  # fmt: skip
    for item in body["inputs"]:
        if not {"name", "shape", "datatype", "data"} <= set(item):
            raise AttnkitError(f"an input of `{path}` lacks name/shape/datatype/data.", flag="--request")
    return body


def load_test(
    url: str,
    model: str,
    body: dict | None = None,
    *,
    concurrency: tuple[int, ...] = LEVELS,
    warmup_s: float = 1.0,
    window_s: float = 3.0,
    max_requests: int = 100_000,
    timeout: float = 30.0,
    batch: int = 1,
    seq: int = 128,
    seed: int = 0,
    label: str = "",
    stats_url: str | None = None,
    stability_pct: float = STABILITY_PCT,
    max_windows: int = MAX_WINDOWS,
    progress=None,
) -> LoadReport:
    """Sweep the concurrency levels against ``model`` at ``url`` (http:// or grpc://, 127.0.0.1 only).

    ``body`` is a KServe v2 JSON request (default: built from the model's metadata, ``batch`` × ``seq``).
    ``stats_url`` is Triton's HTTP endpoint for the batch statistics when ``url`` is gRPC (default: ``url``
    itself when it is HTTP). Each level is measured in windows until the last three agree within
    ``stability_pct`` % (perf_analyzer's rule, :func:`run_level`), at most ``max_windows``. Bounded: at most
    ``max_requests`` per level, ``timeout`` seconds per request, ``max_windows`` x 60 s per level.
    """
    from ..benchmark.environment import collect

    endpoint = Endpoint.parse(url)
    if any(c < 1 for c in concurrency):
        raise AttnkitError(f"levels must be >= 1; got {','.join(map(str, concurrency))}.", flag="--concurrency")
    if not (math.isfinite(window_s) and window_s > 0):
        raise AttnkitError(
            f"the measured window must be a finite number of seconds > 0; got {window_s}.", flag="--min-seconds"
        )
    if not (math.isfinite(warmup_s) and warmup_s >= 0):
        raise AttnkitError(f"must be a finite number of seconds >= 0; got {warmup_s}.", flag="--warmup")
    if not (math.isfinite(stability_pct) and stability_pct > 0):
        raise AttnkitError(f"must be a finite percentage > 0; got {stability_pct}.", flag="--stability")
    if max_windows < 3:
        raise AttnkitError(f"must be >= 3 (stability compares the last three); got {max_windows}.",
                           flag="--max-windows")  # fmt: skip
    stats_endpoint = Endpoint.parse(stats_url) if stats_url else (endpoint if endpoint.protocol == "http" else None)
    if body is None:
        body = request_from_metadata(endpoint, model, batch, seq, seed)
    say = progress or (lambda _m: None)
    probe(endpoint, model, body, timeout)
    report = LoadReport(
        endpoint=str(endpoint),
        model=model,
        rows_per_request=rows_of(body),
        request_shapes={i["name"]: i["shape"] for i in body["inputs"]},
        warmup_s=warmup_s,
        window_s=window_s,
        label=label,
        environment=collect(),
        stability_pct=stability_pct,
        max_windows=max_windows,
    )
    for c in concurrency:
        say(f"load test {model} concurrency {c}")
        level = run_level(endpoint, model, body, c, warmup_s, window_s, max_requests, timeout, stats_endpoint,
                          stability_pct=stability_pct, max_windows=max_windows)  # fmt: skip
        report.levels.append(level)
        if level.requests and level.errors == level.requests and "Connection" in (level.first_error or ""):
            raise ServerError(f"--server: {endpoint} stopped answering at concurrency {c}: {level.first_error}")
    return report
