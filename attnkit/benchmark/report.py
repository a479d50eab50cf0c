"""Rendering of a BenchReport: rich table, results.json, results.csv, throughput.png."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.table import Table

from .results import BenchReport


@dataclass(frozen=True)
class Column:
    """One column of the results, for every rendering: the CSV key and raw value, the table header and
    cell, and how soon the table drops it on a narrow terminal (``priority=None``: CSV only)."""

    key: str
    value: Callable[[dict], Any]
    header: str = ""
    fmt: str = ""
    unit: str = ""
    priority: int | None = 0
    cell: Callable[[dict, str], str] | None = None  # custom table cell (style is "rich" or "md")

    def text(self, m: dict, style: str) -> str:
        if self.cell:
            return self.cell(m, style)
        v = self.value(m)
        return "-" if v is None else format(v, self.fmt) + self.unit if self.fmt else str(v)


def _lat(key: str) -> Callable[[dict], Any]:
    return lambda m: (m.get("latency") or {}).get(key)


def _agreement(key: str) -> Callable[[dict], Any]:
    return lambda m: (m.get("agreement") or {}).get(key)


def _cv_cell(m: dict, style: str) -> str:
    cv = _lat("cv")(m)
    if cv is None:
        return "-"
    return f"[yellow]{cv:.1%}[/]" if style == "rich" and cv > 0.10 else f"{cv:.1%}"


def _speedup_cell(m: dict, style: str) -> str:
    text = _f(m.get("speedup"), ".2f", "x")
    if m.get("status") != "disagrees":
        return text
    return f"[strike]{text}[/]" if style == "rich" else f"~~{text}~~"


def _agrees_cell(m: dict, style: str) -> str:
    a = m.get("agreement")
    if not a:
        return "-"
    if a["passed"]:
        return f"yes {a['rel_l2']:.1e}"
    return f"[red bold]NO {a['rel_l2']:.1e}[/]" if style == "rich" else f"**NO** {a['rel_l2']:.1e}"


COLUMNS: tuple[Column, ...] = (
    Column("backend", lambda m: m["backend"], "backend"),
    Column(
        "precision",
        lambda m: m["precision"],
        "precision",
        cell=lambda m, style: (
            m["precision"]
            if m.get("ran_as", m["precision"]) == m["precision"]
            else f"{m['precision']} (ran {m['ran_as']})"
        ),
    ),
    Column("ran_as", lambda m: m.get("ran_as", m["precision"]), priority=None),
    Column("batch", lambda m: m["batch"], "batch"),
    Column("seq", lambda m: m["seq"], "seq"),
    Column("status", lambda m: m["status"], priority=None),
    Column("agrees", lambda m: m.get("agrees"), priority=None),
    Column("rel_l2", _agreement("rel_l2"), priority=None),
    Column("cosine", _agreement("cosine"), priority=None),
    Column("count", _lat("count"), priority=None),
    Column("mean_ms", _lat("mean"), "mean ms", ".2f", priority=3),
    Column("stdev_ms", _lat("stdev"), priority=None),
    Column("p50_ms", _lat("p50"), "p50 ms", ".2f", priority=1),
    Column("p90_ms", _lat("p90"), priority=None),
    Column("p95_ms", _lat("p95"), priority=None),
    Column("p99_ms", _lat("p99"), "p99 ms", ".2f", priority=2),
    Column("min_ms", _lat("min"), priority=None),
    Column("max_ms", _lat("max"), priority=None),
    Column("cv", _lat("cv"), "CV", priority=2, cell=_cv_cell),
    Column("seq_per_s", lambda m: m.get("seq_per_s"), "seq/s", ".1f"),
    Column("tokens_per_s", lambda m: m.get("tokens_per_s"), "tokens/s", ".0f", priority=3),
    Column("speedup", lambda m: m.get("speedup"), "speedup", priority=0, cell=_speedup_cell),
    Column("gflops", lambda m: m.get("gflops"), "GFLOP/s", ".1f", priority=3),
    Column("pct_of_peak", lambda m: m.get("pct_of_peak"), "% peak", ".0f", priority=1),
    Column("agreement", lambda m: None, "agrees", priority=0, cell=_agrees_cell),
    Column(
        "reason",
        lambda m: m.get("skipped") or m.get("error") or "; ".join(_agreement("failures")(m) or []),
        priority=None,
    ),
)
TABLE_COLUMNS = tuple(c for c in COLUMNS if c.priority is not None)
CSV_COLUMNS = ("model",) + tuple(c.key for c in COLUMNS if c.key != "agreement")
LEAD = 4  # backend, precision, batch, seq: a skipped row shows its reason after them


def _f(v, fmt: str, unit: str = "") -> str:
    return "-" if v is None else format(v, fmt) + unit


def _peaks(calibration: dict) -> str:
    return ", ".join(
        f"{k} {v['gflops']:.0f} {'GOP' if k == 'int8' else 'GFLOP'}/s"
        + (f" ({v['library']})" if v.get("library") else "")
        for k, v in calibration.items()
        if v.get("gflops")
    )


def headline(best: dict | None, disagreeing: int) -> str:
    """One sentence: the best agreeing row, and how many rows were left out for wrong answers."""
    if best and best.get("speedup"):
        text = (f"Best: {best['backend']} [{best['precision']}] at {best['speedup']:.2f}x eager "
                f"({best['batch']}x{best['seq']})")  # fmt: skip
    elif best:
        text = (f"Best: {best['backend']} [{best['precision']}] at {best['seq_per_s']:.1f} seq/s "
                f"({best['batch']}x{best['seq']}; no eager baseline measured, so no speedup)")  # fmt: skip
    else:
        text = "Best: no row both ran and agreed with eager fp32"
    if disagreeing:
        text += f"; {disagreeing} row(s) failed agreement and do not count"
    return text + "."


def table(report: BenchReport, width: int | None = None) -> Table:
    """The results as a rich table; with ``width``, the least important columns give way first."""
    from rich.markup import escape

    from ..core.tables import Column as TableColumn
    from ..core.tables import fitted_table

    data = report.to_dict(raw=False)
    columns = [TableColumn(c.header, c.priority, "left" if i < 2 else "right") for i, c in enumerate(TABLE_COLUMNS)]
    rows: list = []
    for m in data["measurements"]:
        cells = [c.text(m, "rich") for c in TABLE_COLUMNS]
        if not m["latency"]:
            why = f"[yellow]skipped[/]: {m['skipped']}" if m["skipped"] else f"[red]error[/]: {m['error']}"
            rows.append((cells[:LEAD], why[:90]))
        else:
            rows.append(cells)
    return fitted_table(
        f"{report.model}: latency and throughput vs eager Keras fp32 "
        f"(peaks: {_peaks(report.calibration) or 'not measured'})",
        columns,
        rows,
        width,
        caption="\n".join(
            [escape(headline(data["best"], len(report.disagreeing())))]
            + [f"not measured: {escape(n)}" for n in report.notes]
        ),  # fmt: skip
    )


def to_csv(report: BenchReport) -> str:
    """results.csv: one row per measurement, the CSV keys of :data:`COLUMNS` with raw values."""
    buf = io.StringIO()
    w = csv.DictWriter(buf, CSV_COLUMNS)
    w.writeheader()
    for m in report.to_dict(raw=False)["measurements"]:
        w.writerow({"model": report.model, **{c.key: c.value(m) for c in COLUMNS if c.key != "agreement"}})
    return buf.getvalue()


def plot_throughput(report: BenchReport, path: Path) -> None:
    """Throughput (sequences/s) against batch size: colour by backend, line style and marker by
    precision; rows whose answers disagree with eager fp32 are drawn with a red cross and say so."""
    from ..core.plotting import pyplot, save_png

    plt = pyplot()
    fig, ax = plt.subplots(figsize=(9, 5.5), dpi=120)
    backends = list(dict.fromkeys(m.backend for m in report.measurements))
    colours = {b: plt.get_cmap("tab10")(i % 10) for i, b in enumerate(backends)}
    styles = {"fp32": ("-", "o"), "bf16": ("--", "s"), "fp16": ("-.", "^"), "int8": (":", "D")}
    series: dict[tuple, list] = {}
    for m in report.measurements:
        if m.latency:
            key = (m.backend, m.precision, m.seq if len(report.config["seq_lens"]) > 1 else None)
            series.setdefault(key, []).append((m.batch, m.seq_per_s, m.agrees))
    for (backend, precision, seq), pts in series.items():
        pts.sort()
        line, marker = styles.get(precision, ("-", "o"))
        wrong = not all(p[2] for p in pts)
        label = f"{backend} [{precision}]" + (f", seq {seq}" if seq else "") + (" - WRONG ANSWERS" if wrong else "")
        ax.plot(
            [p[0] for p in pts],
            [p[1] for p in pts],
            linestyle=line,
            marker=marker,
            color=colours[backend],
            label=label,
            alpha=0.45 if wrong else 1.0,
        )
        bad = [p for p in pts if not p[2]]
        if bad:
            ax.scatter([p[0] for p in bad], [p[1] for p in bad], marker="x", s=90, color="red", zorder=5)
    ax.set_xscale("log", base=2)
    ax.set_xticks(report.config["batch_sizes"], [str(b) for b in report.config["batch_sizes"]])
    ax.minorticks_off()
    ax.set_xlabel("batch size (sequences per call)")
    ax.set_ylabel("throughput (sequences / s)")
    seqs = ", ".join(map(str, report.config["seq_lens"]))
    ax.set_title(f"{report.model}: throughput vs batch size (seq {seqs}, {report.environment.get('cores')} cores)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    save_png(fig, path)


def write_all(report: BenchReport, out: Path) -> list[Path]:
    """results.json, results.csv and throughput.png in ``out`` (see :func:`attnkit.exporters.manifest.write_outputs`)."""
    from ..exporters.manifest import write_outputs

    return write_outputs(
        out,
        {
            "results.json": lambda p: p.write_text(json.dumps(report.to_dict(), indent=2) + "\n"),
            "results.csv": lambda p: p.write_text(to_csv(report)),
            "throughput.png": lambda p: plot_throughput(report, p),
        },
    )


def to_markdown(data: dict) -> str:
    """Markdown tables (environment, peak, results) from a results.json dict."""
    env, cal = data["environment"], data["calibration"]
    flags = ", ".join(k for k, v in env.get("cpu_flags", {}).items() if v) or "-"
    versions = ", ".join(f"{k} {v}" for k, v in env.get("versions", {}).items())
    lines = [
        f"Environment: {env.get('cpu')} ({env.get('cores')} cores, {env.get('memory_gib')} GiB), {env.get('os')}, "
        f"Python {env.get('python')}; CPU flags: {flags}; {versions}; attnkit {env.get('attnkit')} "
        f"@ {env.get('git_commit') or 'unknown commit'}; threads: {env.get('threads', {}).get('requested') or 'default'}.",
        "",
        "Matmul peaks measured in the same run: " + (_peaks(cal) or "not measured") + ".",
        "",
        headline(data.get("best"), sum(1 for m in data["measurements"] if m.get("status") == "disagrees")),
        "",
        "| " + " | ".join(c.header for c in TABLE_COLUMNS) + " |",
        "|" + "|".join("---" if i < 2 or c.key == "agreement" else "---:" for i, c in enumerate(TABLE_COLUMNS)) + "|",
    ]
    lines[0:0] = [f"> Warning: {w}" for w in data.get("warnings", []) if "coefficient of variation" not in w] + (
        [""] if any("coefficient of variation" not in w for w in data.get("warnings", [])) else []
    )
    for m in data["measurements"]:
        cells = [c.text(m, "md") for c in TABLE_COLUMNS]
        if not m["latency"]:
            rest = [f"{m['status']}: {m['skipped'] or m['error']}"] + [""] * (len(TABLE_COLUMNS) - LEAD - 1)
            cells = cells[:LEAD] + rest
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":  # python -m attnkit.benchmark.report results.json  -> markdown on stdout
    import sys

    print(to_markdown(json.loads(Path(sys.argv[1]).read_text())))
