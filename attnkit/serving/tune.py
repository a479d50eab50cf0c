"""``attnkit tune REPO``: search one Triton model's serving configuration on the real ``tritonserver`` — instance
count, max batch size and dynamic batching's queue delay — for the most inferences/s whose p99 latency stays
within ``--latency-budget`` (Model Analyzer's "max throughput under a latency budget"), within ``--time-budget``.

Strategy (bounded, as Model Analyzer's quick mode): the packaged configuration first (the baseline every ratio
is against), then a coarse sweep — instances {1, 2} x {batching off; max batch = the packaged one and twice it,
each with a queue delay of 0, 500 and 2000 us} — then a local refinement around the best point found (queue
delay halved and doubled, one instance more), cheapest first, until the time budget is spent. Every point is
a real load of the model with that configuration (Triton's load API with a ``config`` override: no restart, the
repository untouched), measured by :func:`attnkit.serving.loadtest.load_test` at each concurrency level with
perf_analyzer's stability rule; a level counts only if it is stable and error-free, and a point's score is its
best counted level within the budget. A configuration Triton refuses is recorded with Triton's own line and
never written.

The best point and the packaged configuration are then measured once more, back to back; the winner is written
as ``config.pbtxt`` only if that confirmed gain is at least ``MIN_GAIN`` (1.10: less is within the stability
rule's own 10 %), so a search on noise writes nothing. The packaged one is kept
as ``configs/packaged.pbtxt`` (Triton's named model configurations: ``--model-config-name=packaged`` serves it
again). The written configuration is loaded from disk once more and its answer to the request must equal the
packaged configuration's (max abs difference 0: the same artifact, another schedule).

Why by hand: Model Analyzer and perf_analyzer ship in Triton's SDK container, in no package these machines reach.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from ..core.errors import AttnkitError
from .process import ServerError

COARSE_INSTANCES = (1, 2)
MAX_INSTANCES = 4
MAX_DELAY_US = 20_000
COARSE_DELAYS_US = (0, 500, 2000)
LEVELS = (1, 4, 16)
#: a winner is written only when it beats the packaged configuration by more than the load test's stability
#: rule can tell apart (its windows agree within 10 %): a smaller gain is noise on this rule's own terms
MIN_GAIN = 1.10


@dataclass(frozen=True)
class Candidate:
    instances: int
    max_batch: int  # 0 or 1: no dynamic batching
    delay_us: int | None  # None: dynamic batching off

    @property
    def label(self) -> str:
        batching = "no batching" if self.delay_us is None else f"batch {self.max_batch}, delay {self.delay_us} us"
        return f"{self.instances} inst, {batching}"


@dataclass
class Point:
    candidate: Candidate
    role: str  # packaged | coarse | refine
    status: str = "ok"  # ok | refused | over budget | failed
    inferences_per_s: float | None = None  # at the best counted level within the budget
    p99_ms: float | None = None
    concurrency: int | None = None
    error: str | None = None
    seconds: float = 0.0
    levels: list[dict] = field(default_factory=list)  # concurrency, inferences/s, p99, stable, errors


@dataclass
class TuneReport:
    repository: str
    model: str
    latency_budget_ms: float
    time_budget_s: float
    levels: tuple[int, ...]
    points: list[Point] = field(default_factory=list)
    confirmed_gain: float | None = None  # the best point over the packaged one, re-measured back to back
    written: str | None = None  # the config.pbtxt written, when the confirmed gain is at least MIN_GAIN
    kept: str | None = None  # where the packaged config was kept
    answers_identical: bool | None = None
    command: str = ""
    environment: dict = field(default_factory=dict)

    @property
    def baseline(self) -> Point | None:
        return next((p for p in self.points if p.role == "packaged"), None)

    @property
    def best(self) -> Point | None:
        ok = [p for p in self.points if p.status == "ok" and p.role != "confirm"]
        return max(ok, key=lambda p: p.inferences_per_s, default=None)

    @property
    def gain(self) -> float | None:
        b, w = self.baseline, self.best
        if not (b and w and b.status == "ok" and b.inferences_per_s):
            return None
        return w.inferences_per_s / b.inferences_per_s

    def to_dict(self) -> dict:
        d = asdict(self)
        d["gain"] = self.gain
        d["best"] = asdict(self.best) if self.best else None
        return d


def _config_of(text: str):
    from google.protobuf import text_format

    from ..exporters.triton import _model_config

    return text_format.Parse(text, _model_config().ModelConfig())


def apply(base, c: Candidate):
    """A copy of the ModelConfig ``base`` with the candidate's instance count, max batch size and batching."""
    cfg = type(base)()
    cfg.CopyFrom(base)
    if cfg.instance_group:
        cfg.instance_group[0].count = c.instances
    else:
        cfg.instance_group.add(count=c.instances)
    if c.delay_us is None:
        cfg.ClearField("dynamic_batching")
        cfg.max_batch_size = max(1, c.max_batch) if base.max_batch_size > 0 else 0
    else:
        cfg.max_batch_size = c.max_batch
        cfg.dynamic_batching.max_queue_delay_microseconds = c.delay_us
        del cfg.dynamic_batching.preferred_batch_size[:]
        cfg.dynamic_batching.preferred_batch_size.extend(b for b in (c.max_batch,) if b > 1)
    for warmup in cfg.model_warmup:
        warmup.batch_size = min(warmup.batch_size, max(1, cfg.max_batch_size))
    return cfg


def packaged_candidate(cfg) -> Candidate:
    count = cfg.instance_group[0].count if cfg.instance_group else 1
    if cfg.HasField("dynamic_batching"):
        return Candidate(count, cfg.max_batch_size, cfg.dynamic_batching.max_queue_delay_microseconds)
    return Candidate(count, cfg.max_batch_size, None)


def coarse(packaged: Candidate) -> list[Candidate]:
    big = max(packaged.max_batch, 2)
    out = []
    for n in COARSE_INSTANCES:
        out.append(Candidate(n, 1, None))
        out += [Candidate(n, b, d) for b in (big, 2 * big) for d in COARSE_DELAYS_US]
    return [c for c in dict.fromkeys(out) if c != packaged]


def refine(best: Candidate, seen: set[Candidate]) -> list[Candidate]:
    """The neighbours of ``best`` not measured yet: one instance more, the queue delay halved and doubled
    (bounded by MAX_INSTANCES and MAX_DELAY_US, so the search ends)."""
    near = [Candidate(best.instances + 1, best.max_batch, best.delay_us)] if best.instances < MAX_INSTANCES else []
    if best.delay_us is not None:
        delays = (best.delay_us // 2, best.delay_us * 2 or 100)
        near += [Candidate(best.instances, best.max_batch, d) for d in delays if d <= MAX_DELAY_US]
    return [c for c in dict.fromkeys(near) if c not in seen]


def _score(point: Point, report, budget_ms: float) -> None:
    counted = []
    for lv in report.levels:
        p99 = lv.latency_ms.get("p99") if lv.latency_ms else None
        point.levels.append({"concurrency": lv.concurrency, "inferences_per_s": lv.inferences_per_s, "p99_ms": p99,
                             "stable": lv.stable, "errors": lv.errors})  # fmt: skip
        if lv.stable and not lv.errors and p99 is not None and p99 <= budget_ms:
            counted.append(lv)
    if not counted:
        point.status = "over budget"
        return
    top = max(counted, key=lambda lv: lv.inferences_per_s)
    point.inferences_per_s, point.p99_ms, point.concurrency = (
        top.inferences_per_s,
        top.latency_ms["p99"],
        top.concurrency,
    )


def tune(
    repo: str | Path,
    model: str,
    *,
    latency_budget_ms: float,
    time_budget_s: float = 600.0,
    levels: tuple[int, ...] = LEVELS,
    body: dict | None = None,
    batch: int | None = None,
    seq: int | None = None,
    warmup_s: float = 0.5,
    window_s: float = 1.0,
    write: bool = True,
    env=None,
    progress=None,
) -> TuneReport:
    """Search ``model``'s configuration in the Triton repository ``repo`` (see the module docstring).

    The request is ``body`` (KServe v2 JSON), else one of ``batch`` x ``seq`` built from the model's metadata
    (seeded) when either is given, else the repository's ``request_<model>.json``, else 1 x 128 from metadata."""
    from google.protobuf import json_format, text_format

    from ..benchmark.environment import collect
    from ..exporters.manifest import write_text_atomic
    from .loadtest import load_test, read_request
    from .run import served
    from .triton import TritonServer

    say = progress or (lambda _m: None)
    repo = Path(repo)
    config_path = repo / model / "config.pbtxt"
    if not repo.is_dir():
        raise AttnkitError(
            f"`{repo}` is not a directory.", flag="REPO", hint="Give a Triton repository (attnkit package --triton)."
        )
    if not config_path.is_file():
        names = sorted(p.parent.name for p in repo.glob("*/config.pbtxt"))
        raise AttnkitError(f"`{repo}` has no model `{model}`; it has {', '.join(names) or 'none'}.", flag="--model")
    if not (latency_budget_ms > 0):
        raise AttnkitError(f"must be a number of milliseconds > 0; got {latency_budget_ms}.", flag="--latency-budget")
    if not (time_budget_s > 0):
        raise AttnkitError(f"must be a number of seconds > 0; got {time_budget_s}.", flag="--time-budget")
    packaged_text = config_path.read_text()
    base = _config_of(packaged_text)
    if body is None and batch is None and seq is None and (repo / f"request_{model}.json").is_file():
        body = read_request(repo / f"request_{model}.json")
    batch, seq = batch or 1, seq or 128
    report = TuneReport(str(repo), model, latency_budget_ms, time_budget_s, tuple(levels), environment=collect())
    started = time.perf_counter()
    seen: set[Candidate] = set()
    with TritonServer(repo, models=(), env=env) as server:
        server.start()

        def measure(c: Candidate, role: str) -> Point:
            seen.add(c)
            point = Point(c, role)
            t0 = time.perf_counter()
            say(f"{role}: {c.label}")
            config = json_format.MessageToJson(apply(base, c), preserving_proto_field_name=True)
            try:
                server.load(model, config=config)
                result = load_test(server.http_url, model, body, concurrency=tuple(levels), warmup_s=warmup_s,
                                   window_s=window_s, batch=batch, seq=seq)  # fmt: skip
                _score(point, result, latency_budget_ms)
            except ServerError as e:
                point.status = "refused" if "refused to load" in str(e) else "failed"
                point.error = str(e)
            point.seconds = time.perf_counter() - t0
            report.points.append(point)
            return point

        def time_left() -> bool:
            """Room for one more point (the mean point so far) and the confirmation pair within the budget."""
            spent = time.perf_counter() - started
            mean = spent / max(1, len(report.points))
            return spent + 3 * mean <= time_budget_s

        packaged = packaged_candidate(base)
        measure(packaged, "packaged")
        if body is None and report.points[0].status == "ok":  # the same request every point was measured with
            from .loadtest import Endpoint, request_from_metadata

            body = request_from_metadata(Endpoint.parse(server.http_url), model, batch, seq)
        reference = served(server, model, body) if body else None
        queue = coarse(packaged)
        while queue and time_left():
            measure(queue.pop(0), "coarse")
        nxt = refine(report.best.candidate, seen) if report.best else []
        while nxt and time_left():
            measure(nxt.pop(0), "refine")
            if not nxt:  # a round done: refine around whatever is best now
                nxt = refine(report.best.candidate, seen)
        best = report.best
        if best and best.role != "packaged":
            # the winner and the packaged configuration once more, back to back: the gain written is this pair's
            again = [measure(best.candidate, "confirm"), measure(packaged, "confirm")]
            report.confirmed_gain = (
                again[0].inferences_per_s / again[1].inferences_per_s
                if all(p.status == "ok" for p in again) else None
            )  # fmt: skip
        gain = report.confirmed_gain
        if write and gain and gain >= MIN_GAIN:
            kept = repo / model / "configs" / "packaged.pbtxt"
            if not kept.exists():
                kept.parent.mkdir(exist_ok=True)
                write_text_atomic(kept, packaged_text, flag="REPO")
            report.kept = str(kept)
            write_text_atomic(config_path, text_format.MessageToString(apply(base, best.candidate)), flag="REPO")
            report.written = str(config_path)
            say(
                f"wrote {config_path} ({gain:.2f}x the packaged configuration, confirmed); kept the packaged one as {kept}"
            )
            server.load(model)  # from disk, as a server started on the repository will
            if reference is not None:
                got = served(server, model, body)
                report.answers_identical = all(np.array_equal(got[k], reference[k]) for k in reference)
    return report


def table_lines(report: TuneReport) -> list[str]:
    """Every point measured, as a markdown table (the order measured)."""
    lines = [f"| role | configuration | status | inferences/s within p99 <= {report.latency_budget_ms:g} ms | p99 ms | "
             "at concurrency | seconds |", "|---|---|---|---:|---:|---:|---:|"]  # fmt: skip
    for p in report.points:
        ips = f"{p.inferences_per_s:.1f}" if p.inferences_per_s else "-"
        p99 = f"{p.p99_ms:.2f}" if p.p99_ms is not None else "-"
        status = p.status if not p.error else f"{p.status}: {p.error}"
        lines.append(f"| {p.role} | {p.candidate.label} | {status} | {ips} | {p99} | {p.concurrency or '-'} | "
                     f"{p.seconds:.0f} |")  # fmt: skip
    return lines


def plot(report: TuneReport, path: Path) -> Path:
    """Throughput against p99 latency, every level of every point (a point's levels joined), the budget a line."""
    from ..core.plotting import pyplot, save_png

    plt = pyplot()
    fig, ax = plt.subplots(figsize=(8, 5))
    for p in report.points:
        xs = [lv["p99_ms"] for lv in p.levels if lv["p99_ms"] is not None]
        ys = [lv["inferences_per_s"] for lv in p.levels if lv["p99_ms"] is not None]
        if xs:
            style = "-o" if p.role != "packaged" else "-s"
            ax.plot(xs, ys, style, label=f"{p.role}: {p.candidate.label}", linewidth=2 if p.role == "packaged" else 1)
    ax.axvline(report.latency_budget_ms, color="red", linestyle="--", label="p99 budget")
    ax.set_xlabel("p99 latency (ms)")
    ax.set_ylabel("inferences/s")
    ax.set_title(f"{report.model}: every configuration measured (levels {', '.join(map(str, report.levels))})")
    ax.legend(fontsize=6, loc="best")
    return save_png(fig, path)
