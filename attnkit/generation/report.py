"""Rendering of generation verify and bench reports: rich tables, CSV, JSON, the plot, markdown."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

from rich.markup import escape

from ..core.tables import Column, fitted_table

FILES = ("generation.json", "generation.csv", "generation.png")


def _f(v, fmt: str) -> str:
    return "–" if v is None else format(v, fmt)


def verify_table(report, width: int | None = None):
    cols = [
        Column("backend"),
        Column("tokens", justify="right"),
        Column("first diff", 2, "right"),
        Column("rows identical", 2, "right"),
        Column("steps", 3, "right"),
        Column("max abs", 1, "right"),
        Column("rel L2", 1, "right"),
        Column("status"),
    ]
    rows = []
    for c in report.checks:
        lead = [escape(c.label)]
        if c.skipped or c.error:
            rows.append((lead, f"[yellow]skipped[/]: {c.skipped}" if c.skipped else f"[red]error[/]: {c.error}"))
            continue
        status = "[green]PASS[/]" if c.passed else "[red]FAIL[/]: " + "; ".join(c.failures)
        if c.stopped_early:
            status += f" ({c.stopped_early} row(s) stopped on the runtime's own eos_token_id; compared up to it)"
        rows.append(
            lead
            + [
                f"{c.token_match:.1%}",
                "none" if c.first_mismatch is None else str(c.first_mismatch),
                f"{c.sequences_identical:.0%} (~{c.identical_prefix:.1f})",
                str(c.steps_compared),
                f"{c.max_abs:.2e}" if c.steps_compared else "–",
                f"{c.rel_l2:.2e}" if c.steps_compared else "–",
                status,
            ]
        )
    lengths = ", ".join(map(str, report.prompt_lengths))
    title = (
        f"greedy generation vs eager full recompute: batch {report.batch}, prompt lengths {lengths}, "
        f"{report.max_new_tokens} new tokens"
    )
    return fitted_table(title, cols, rows, width)


BENCH_COLUMNS = [
    ("backend", 0, "left", lambda r: escape(r.label)),
    ("batch", 2, "right", lambda r: str(r.batch)),
    ("prompt", 2, "right", lambda r: str(r.prompt_length)),
    ("new", 0, "right", lambda r: str(r.new_tokens)),
    ("TTFT ms", 0, "right", lambda r: _f(r.ttft_ms, ".1f")),
    ("ITL p50 ms", 0, "right", lambda r: _f(r.itl_ms.get("p50"), ".2f")),
    ("ITL p90", 3, "right", lambda r: _f(r.itl_ms.get("p90"), ".2f")),
    ("ITL p99", 3, "right", lambda r: _f(r.itl_ms.get("p99"), ".2f")),
    ("tok/s", 0, "right", lambda r: _f(r.tokens_per_s, ".1f")),
    ("× recompute", 1, "right", lambda r: _f(r.speedup_vs_recompute, ".1f")),
    ("% mem BW", 1, "right", lambda r: _f(r.pct_of_bandwidth, ".0f")),
    ("agrees", 0, "left", lambda r: ("[green]yes[/]" if r.agrees else "[red]NO[/]") + f" ({escape(r.agreement)})"),
]


def bench_table(report, width: int | None = None):
    # a setting the rows differ in is never dropped to fit the terminal: rows would be told apart by nothing
    varies = {
        "batch": len({r.batch for r in report.rows}) > 1,
        "prompt": len({r.prompt_length for r in report.rows}) > 1,
    }
    cols = [Column(h, 0 if varies.get(h) else p, j) for h, p, j, _ in BENCH_COLUMNS]
    rows = []
    for r in report.rows:
        if r.skipped or r.error:
            rows.append(([escape(r.label)], f"skipped: {r.skipped}" if r.skipped else f"[red]error[/]: {r.error}"))
        else:
            rows.append([fn(r) for *_, fn in BENCH_COLUMNS])
    bw = report.bandwidth
    caption = (
        f"memory bandwidth {bw['gbps']:.1f} GB/s (highest of {len(bw.get('probes', [])) or 1} probes of this run: "
        f"{bw.get('kind', 'copy')}, {bw.get('bound_by', 'start')}; {bw['threads']} threads); "
        "× recompute: cached decode vs full recompute on the same backend's full model"
    )
    return fitted_table(f"{report.model}: generation", cols, rows, width, caption)


def to_csv(report) -> str:
    buf = io.StringIO()
    fields = [
        "backend", "precision", "batch", "prompt_length", "new_tokens", "repeats", "ttft_ms", "itl_p50_ms",
        "itl_p90_ms", "itl_p99_ms", "tokens_per_s", "recompute_s", "speedup_vs_recompute", "bytes_per_step",
        "achieved_gbps", "pct_of_bandwidth", "pct_of_working_set", "token_match", "first_mismatch", "agrees", "skipped", "error",
    ]  # fmt: skip
    w = csv.DictWriter(buf, fieldnames=fields)
    w.writeheader()
    for r in report.rows:
        d = {k: getattr(r, k, None) for k in fields}
        for q in ("p50", "p90", "p99"):
            d[f"itl_{q}_ms"] = r.itl_ms.get(q)
        w.writerow(d)
    return buf.getvalue()


def plot(report, path: Path) -> None:
    from ..core.plotting import pyplot, save_png

    plt = pyplot()
    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 5))
    rows = [r for r in report.rows if r.tokens_per_s]
    longest = max((r.new_tokens for r in rows), default=0)
    bars = [r for r in rows if r.new_tokens == longest]
    labels = [f"{r.label}\nb{r.batch} p{r.prompt_length}" for r in bars]
    colors = ["tab:blue" if r.agrees else "tab:red" for r in bars]
    left.barh(labels, [r.tokens_per_s for r in bars], color=colors)
    for i, r in enumerate(bars):
        if not r.agrees:
            left.text(r.tokens_per_s, i, "  WRONG ANSWERS", va="center", color="red", fontsize=7)
    left.set_xlabel(f"tokens/s ({longest} new tokens; red = disagrees with full recompute)")
    left.tick_params(axis="y", labelsize=7)
    for r in bars:
        if r.per_position_ms:
            start = r.prompt_length + 1
            right.plot(range(start, start + len(r.per_position_ms)), r.per_position_ms, label=r.label, lw=1)
    right.set_xlabel("sequence position of the token fed to the step")
    right.set_ylabel("latency per token, ms (median over repeats)")
    right.set_yscale("log")
    right.grid(True, which="both", alpha=0.3)
    if right.lines:
        right.legend(fontsize=7)
    fig.suptitle(f"{report.model}: generation, {report.environment.get('cores')} cores, "
                 f"memory bandwidth {report.bandwidth['gbps']:.1f} GB/s")  # fmt: skip
    fig.tight_layout()
    save_png(fig, path)


def write_all(report, out: Path) -> list[Path]:
    """generation.json, generation.csv and generation.png in ``out``, each written atomically."""
    from ..exporters.manifest import write_outputs

    return write_outputs(
        out,
        {
            FILES[0]: lambda p: p.write_text(json.dumps(report.to_dict(), indent=2) + "\n"),
            FILES[1]: lambda p: p.write_text(to_csv(report)),
            FILES[2]: lambda p: plot(report, p),
        },
    )


def to_markdown(data: dict) -> str:
    """A markdown table of generation.json (README/BENCHMARKS and report.md)."""
    lines = [
        f"Memory bandwidth: {data['bandwidth']['gbps']:.1f} GB/s (highest probe of the run: "
        f"{data['bandwidth'].get('kind', 'copy')}, {data['bandwidth'].get('bound_by', 'start')}).",
        "",
        "| backend | batch | prompt | new | TTFT ms | ITL p50 ms | ITL p99 ms | tok/s | × recompute | % mem BW | agrees |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in data["rows"]:
        # the row's own label (``savedmodel/generate`` is not the ``savedmodel`` step loop); older JSON had none
        label = r.get("label") or (r["backend"] if r["precision"] == "fp32" else f"{r['backend']}[{r['precision']}]")
        if r["skipped"] or r["error"]:
            lines.append(f"| {label} | {r['batch']} | {r['prompt_length']} | {r['new_tokens']} | skipped: "
                         f"{r['skipped'] or r['error']} |||||||")  # fmt: skip
            continue
        itl = r["itl_ms"]
        lines.append(
            f"| {label} | {r['batch']} | {r['prompt_length']} | {r['new_tokens']} | {_f(r['ttft_ms'], '.1f')} | "
            f"{_f(itl.get('p50'), '.2f')} | {_f(itl.get('p99'), '.2f')} | {_f(r['tokens_per_s'], '.1f')} | "
            f"{_f(r['speedup_vs_recompute'], '.1f')} | {_f(r['pct_of_bandwidth'], '.0f')} | "
            f"{'yes' if r['agrees'] else 'NO'} ({r['agreement']}) |"
        )
    return "\n".join(lines) + "\n"
