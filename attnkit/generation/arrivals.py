"""Generation under arrivals: requests that arrive while others decode, served by continuous batching and by
static batching on the same export, in one run — what continuous batching is for, and what bench-generate
(one batch of one shape at a time) does not show.

Requests arrive as a Poisson process at ``rate`` per second (seeded), each a prompt of random token ids with a
length drawn in [prompt_length // 2, prompt_length]. Two servers, each a loop in this process (no HTTP, so
what is measured is the scheduling, not a network):

- **continuous batching** (``openvino-genai-cb``: OpenVINO GenAI's ``ContinuousBatchingPipeline``, OpenVINO
  Model Server's engine): a request joins as soon as it arrives, and every step advances all of them;
- **static batching** (any ``generate`` runner, default ``openvino-genai``): when the server is idle, every
  request that has arrived (up to ``max_batch``) is generated to its end as one batch; those arriving
  meanwhile wait for the next.

Per request: latency from arrival to its last token; for continuous batching also to its first token (a
static ``generate`` returns the batch whole). Per server: tokens/s over the whole run (first arrival to last
token), latency percentiles. Greedy decoding in fp32 gives the same tokens whoever serves a request: each
request's tokens are compared between the servers, and a server's figures count only where they agree.

No library here does this: GenAI's own benchmark (``benchmark_genai``) times one batch; OpenVINO Model
Server (which drives the pipeline this way) is not on PyPI.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from ..core.errors import AttnkitError
from ..core.names import OUTPUT_IDS

CONTINUOUS = "openvino-genai-cb"


def _percentile(values, q: float) -> float | None:
    values = [v for v in values if v is not None]
    return float(np.percentile(values, q)) if values else None


@dataclass
class Served:
    """One server's run: per request its latency (and time to first token where it streams)."""

    server: str
    mode: str  # "continuous" or "static"
    latency_s: list[float]
    first_token_s: list[float | None]
    tokens: int
    makespan_s: float
    batches: int | None = None  # static batching: how many generate calls
    agrees: bool | None = None  # every request's tokens equal the other server's

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.makespan_s

    def to_dict(self) -> dict:
        d = asdict(self)
        d.update(
            tokens_per_s=self.tokens_per_s,
            latency_p50_s=_percentile(self.latency_s, 50),
            latency_p90_s=_percentile(self.latency_s, 90),
            first_token_p50_s=_percentile(self.first_token_s, 50),
            first_token_p90_s=_percentile(self.first_token_s, 90),
        )
        return d


@dataclass
class ArrivalsReport:
    root: str
    rate: float
    requests: int
    prompt_length: int
    new_tokens: int
    max_batch: int
    precision: str
    seed: int
    arrivals_s: list[float]
    servers: list[Served] = field(default_factory=list)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["servers"] = [s.to_dict() for s in self.servers]
        return d


def schedule(requests: int, rate: float, seed: int) -> np.ndarray:
    """Arrival times (s): a Poisson process at ``rate`` per second, the first request at 0."""
    gaps = np.random.default_rng(seed).exponential(1.0 / rate, size=requests)
    gaps[0] = 0.0
    return np.cumsum(gaps)


def draw_prompts(vocab_size: int, requests: int, prompt_length: int, seed: int) -> list[np.ndarray]:
    """Unpadded prompts: token ids in [1, vocab), lengths in [prompt_length // 2, prompt_length]."""
    rng = np.random.default_rng(seed + 1)
    lengths = rng.integers(max(1, prompt_length // 2), prompt_length + 1, size=requests)
    return [rng.integers(1, vocab_size, size=int(n)).astype("int32") for n in lengths]


def serve_static(runner, g, prompts, arrivals, max_new_tokens: int, max_batch: int,
                 clock: Callable[[], float] = time.perf_counter, sleep=time.sleep) -> tuple[list, int]:  # fmt: skip
    """Static batching with a ``generate`` runner: ``(per request (None, done_s, tokens), batches)``."""
    served: list = [None] * len(prompts)
    batches, start, i = 0, clock(), 0
    while i < len(prompts):
        now = clock() - start
        if arrivals[i] > now:
            sleep(arrivals[i] - now)
            now = clock() - start
        j = i
        while j < len(prompts) and arrivals[j] <= now and j - i < max_batch:
            j += 1
        rows = prompts[i:j]
        width = max(len(p) for p in rows)
        ids = np.zeros((len(rows), width), "int32")
        mask = np.zeros((len(rows), width), "int32")
        for b, p in enumerate(rows):  # attnkit's right padding (1 = token)
            ids[b, : len(p)], mask[b, : len(p)] = p, 1
        out = runner.generate({g.ids: ids, g.mask: mask}, max_new_tokens, -1)
        done = clock() - start
        for b in range(len(rows)):
            served[i + b] = (None, done, [int(t) for t in out[OUTPUT_IDS][b]])
        batches, i = batches + 1, j
    return served, batches


def bench_arrivals(
    root: str | Path,
    *,
    rate: float,
    requests: int = 16,
    prompt_length: int = 32,
    new_tokens: int = 32,
    max_batch: int = 8,
    static: str = "openvino-genai",
    precision: str = "fp32",
    seed: int = 0,
    threads: int | None = None,
    progress: Callable[[str], None] | None = None,
) -> ArrivalsReport:
    """Serve the same arrivals with continuous batching and with static batching (``static``); see the module
    docstring. Raises AttnkitError naming the flag for bad values, or where a server cannot run this export."""
    from ..core.names import GENERATE
    from ..runtimes.base import Source
    from ..runtimes.registry import runner_class, runner_names

    say = progress or (lambda _m: None)
    if not (np.isfinite(rate) and rate > 0):
        raise AttnkitError(f"must be a number > 0 (requests per second); got {rate}.", flag="--rate")
    for flag, value in (("--requests", requests), ("--max-batch", max_batch), ("--new-tokens", new_tokens)):
        if value < 1:
            raise AttnkitError(f"must be >= 1; got {value}.", flag=flag)
    valid = [n for n in runner_names(GENERATE) if n != CONTINUOUS]
    if static not in valid:
        raise AttnkitError(f"`{static}` is not a generate backend. Valid: {', '.join(valid)}.", flag="--static")
    source = Source(root)
    source.manifest.require_integrity(root)
    g = source.generation.spec
    if g.seq2seq:
        raise AttnkitError("continuous batching serves decoder-only models; this export is seq2seq.", flag="DIR")
    g.check_request(prompt_length, new_tokens)
    arrivals = schedule(requests, rate, seed)
    prompts = draw_prompts(g.vocab_size, requests, prompt_length, seed)
    report = ArrivalsReport(str(root), rate, requests, prompt_length, new_tokens, max_batch, precision, seed,
                            [float(a) for a in arrivals])  # fmt: skip
    servers = [
        (CONTINUOUS, "continuous", runner_class(CONTINUOUS, GENERATE)),
        (static, "static", runner_class(static, GENERATE)),
    ]
    for name, mode, cls in servers:  # every refusal before any work
        why = cls.unavailable_reason() or cls.inapplicable(source)
        if why:
            raise AttnkitError(
                f"{name} cannot serve this export: {why}", flag="--static" if mode == "static" else "DIR"
            )
    tokens = {}
    for name, mode, cls in servers:
        say(f"{mode} batching: {name}, {requests} requests at {rate:g}/s")
        with cls(source, precision, threads) as runner:
            if mode == "continuous":
                runner.serve(prompts[:1], [0.0], new_tokens)  # warm-up: compile and first allocation
                served, batches = runner.serve(prompts, arrivals, new_tokens), None
            else:
                serve_static(runner, g, prompts[:1], [0.0], new_tokens, max_batch)  # warm-up
                served, batches = serve_static(runner, g, prompts, arrivals, new_tokens, max_batch)
        tokens[name] = [t for _, _, t in served]
        report.servers.append(
            Served(
                name,
                mode,
                latency_s=[done - a for (_, done, _), a in zip(served, arrivals)],
                first_token_s=[None if first is None else first - a for (first, _, _), a in zip(served, arrivals)],
                tokens=sum(len(t) for t in tokens[name]),
                makespan_s=max(done for _, done, _ in served),
                batches=batches,
            )  # fmt: skip
        )
    agree = tokens[CONTINUOUS] == tokens[static]
    for s in report.servers:
        s.agrees = agree
    return report


def arrivals_tables(data: dict, width: int | None = None) -> list:
    """The report as a table (``--json`` gives the same numbers): one row per server."""
    from ..core.tables import Column, fitted_table

    def ms(v) -> str:
        return "-" if v is None else f"{1e3 * v:.0f}"

    rows = [
        [
            s["server"],
            s["mode"],
            f"{s['tokens_per_s']:.1f}",
            ms(s["latency_p50_s"]),
            ms(s["latency_p90_s"]),
            ms(s["first_token_p50_s"]),
            ms(s["first_token_p90_s"]),
            str(s["batches"] or "-"),
            "yes" if s["agrees"] else "NO",
        ]  # fmt: skip
        for s in data["servers"]
    ]
    columns = [Column("server"), Column("batching"), Column("tok/s", justify="right"),
               Column("p50 ms", justify="right"), Column("p90 ms", justify="right"),
               Column("TTFT p50 ms", justify="right"), Column("TTFT p90 ms", 1, "right"),
               Column("batches", 2, "right"), Column("same tokens")]  # fmt: skip
    title = (f"{data['requests']} requests arriving at {data['rate']:g}/s (Poisson, seed {data['seed']}), prompts "
             f"<= {data['prompt_length']}, {data['new_tokens']} new tokens, {data['precision']}")  # fmt: skip
    caption = (
        "p50/p90: from a request's arrival to its last token; TTFT: to its first (a static generate returns whole)"
    )
    return [fitted_table(title, columns, rows, width, caption)]
