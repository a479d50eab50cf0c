"""Rendering of load tests: the rich table, CSV, JSON, the throughput–latency plot and markdown. Every
function takes a list of :class:`LoadReport` (one sweep, or dynamic batching on and off side by side)."""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path

from rich.markup import escape

from ..core.tables import Column, fitted_table

FILES = ("loadtest.json", "loadtest.csv", "loadtest.png")


def _f(v, fmt: str) -> str:
    return "–" if v is None or (isinstance(v, float) and math.isnan(v)) else format(v, fmt)


COLUMNS = [
    ("run", 0, "left", lambda r, lv: escape(r.label or r.model)),
    ("concurrency", 0, "right", lambda r, lv: str(lv.concurrency)),
    ("req/s", 0, "right", lambda r, lv: _f(lv.requests_per_s, ".1f")),
    ("infer/s", 2, "right", lambda r, lv: _f(lv.inferences_per_s, ".1f")),
    ("p50 ms", 0, "right", lambda r, lv: _f(lv.latency_ms["p50"], ".2f")),
    ("p90 ms", 1, "right", lambda r, lv: _f(lv.latency_ms["p90"], ".2f")),
    ("p95 ms", 1, "right", lambda r, lv: _f(lv.latency_ms["p95"], ".2f")),
    ("p99 ms", 0, "right", lambda r, lv: _f(lv.latency_ms["p99"], ".2f")),
    ("stdev ms", 2, "right", lambda r, lv: _f(lv.latency_ms["stdev"], ".2f")),
    ("windows", 2, "right", lambda r, lv: f"{lv.windows}" + ("" if lv.stable else " [yellow]unstable[/]")),
    ("errors", 0, "right", lambda r, lv: ("[red]" + str(lv.errors) + "[/]") if lv.errors else "0"),
    ("server batch", 1, "right", lambda r, lv: _f(lv.server_batch, ".1f")),
]


def table(reports, width: int | None = None):
    cols = [Column(h, p, j) for h, p, j, _ in COLUMNS]
    rows = [[fn(r, lv) for *_, fn in COLUMNS] for r in reports for lv in r.levels]
    r0 = reports[0]
    shapes = ", ".join(f"{n} {s}" for n, s in r0.request_shapes.items())
    caption = (
        f"{r0.endpoint}: closed loop, N requests in flight; {r0.warmup_s:g} s warm-up, then windows of >= "
        f"{r0.window_s:g} s and >= 4N answers, repeated until the last three agree within {r0.stability_pct:g} % "
        f"in throughput and mean latency (perf_analyzer's rule; at most {r0.max_windows}); the last three are "
        f"reported. Request: {shapes}. server batch: Triton's inferences per execution."
    )
    return fitted_table(f"load test: {r0.model}", cols, rows, width, caption)


def to_csv(reports) -> str:
    buf = io.StringIO()
    fields = ["run", "endpoint", "model", "concurrency", "requests", "errors", "window_s", "requests_per_s",
              "inferences_per_s", "p50_ms", "p90_ms", "p95_ms", "p99_ms", "mean_ms", "stdev_ms", "windows", "stable",
              "server_batch", "first_error"]  # fmt: skip
    w = csv.DictWriter(buf, fieldnames=fields)
    w.writeheader()
    for r in reports:
        for lv in r.levels:
            w.writerow(
                {
                    "run": r.label,
                    "endpoint": r.endpoint,
                    "model": r.model,
                    "concurrency": lv.concurrency,
                    "requests": lv.requests,
                    "errors": lv.errors,
                    "window_s": lv.window_s,
                    "requests_per_s": lv.requests_per_s,
                    "inferences_per_s": lv.inferences_per_s,
                    **{f"{q}_ms": lv.latency_ms[q] for q in ("p50", "p90", "p95", "p99", "mean", "stdev")},
                    "windows": lv.windows,
                    "stable": lv.stable,
                    "server_batch": lv.server_batch,
                    "first_error": lv.first_error,
                }  # fmt: skip
            )
    return buf.getvalue()


def plot(reports, path: Path) -> None:
    """Throughput (x) against p50 and p99 latency (y), one line per run, points labelled by concurrency."""
    from ..core.plotting import pyplot, save_png

    plt = pyplot()
    fig, ax = plt.subplots(figsize=(8, 5))
    for i, r in enumerate(reports):
        x = [lv.inferences_per_s for lv in r.levels]
        for q, style in (("p50", "-o"), ("p99", "--^")):  # one colour per run: p50 solid, p99 dashed
            ax.plot(x, [lv.latency_ms[q] for lv in r.levels], style, color=f"C{i}", label=f"{r.label or r.model} {q}")
        for lv in r.levels:
            ax.annotate(str(lv.concurrency), (lv.inferences_per_s, lv.latency_ms["p50"]), fontsize=7,
                        textcoords="offset points", xytext=(3, 3))  # fmt: skip
    ax.set_xlabel("throughput, inferences/s")
    ax.set_ylabel("latency, ms")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    r0 = reports[0]
    env = r0.environment
    ax.set_title(f"{r0.model} at {r0.endpoint} (numbers: concurrency), {env.get('cores')} cores", fontsize=9)
    fig.tight_layout()
    save_png(fig, path)


def write_all(reports, out: Path) -> list[Path]:
    """loadtest.json, loadtest.csv and loadtest.png in ``out``, each written atomically."""
    from ..exporters.manifest import write_outputs

    return write_outputs(
        out,
        {
            FILES[0]: lambda p: p.write_text(json.dumps({"runs": [r.to_dict() for r in reports]}, indent=2) + "\n"),
            FILES[1]: lambda p: p.write_text(to_csv(reports)),
            FILES[2]: lambda p: plot(reports, p),
        },
    )


def to_markdown(reports) -> str:
    lines = [
        "| run | concurrency | req/s | infer/s | p50 ms | p90 ms | p95 ms | p99 ms | stdev ms | windows | errors "
        "| server batch |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in reports:
        for lv in r.levels:
            lines.append(
                f"| {r.label or r.model} | {lv.concurrency} | {lv.requests_per_s:.1f} | {lv.inferences_per_s:.1f} | "
                f"{_f(lv.latency_ms['p50'], '.2f')} | {_f(lv.latency_ms['p90'], '.2f')} | "
                f"{_f(lv.latency_ms['p95'], '.2f')} | {_f(lv.latency_ms['p99'], '.2f')} | "
                f"{_f(lv.latency_ms['stdev'], '.2f')} | {lv.windows}{'' if lv.stable else ' (unstable)'} | "
                f"{lv.errors} | {_f(lv.server_batch, '.1f')} |"
            )
    return "\n".join(lines) + "\n"
