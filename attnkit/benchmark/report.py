"""Rendering of a BenchReport: rich table, results.json, results.csv, throughput.png."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

from rich.table import Table

from ..exporters.manifest import write_text_atomic
from .run import BenchReport

CSV_COLUMNS = (
    "model",
    "backend",
    "precision",
    "batch",
    "seq",
    "status",
    "agrees",
    "rel_l2",
    "cosine",
    "count",
    "mean_ms",
    "stdev_ms",
    "p50_ms",
    "p90_ms",
    "p95_ms",
    "p99_ms",
    "min_ms",
    "max_ms",
    "cv",
    "seq_per_s",
    "tokens_per_s",
    "speedup",
    "gflops",
    "pct_of_peak",
    "reason",
)


def _f(v, fmt: str, unit: str = "") -> str:
    return "-" if v is None else format(v, fmt) + unit


def _peaks(calibration: dict) -> str:
    return ", ".join(
        f"{k} {v['gflops']:.0f} {'GOP' if k == 'int8' else 'GFLOP'}/s"
        for k, v in calibration.items()
        if v.get("gflops")
    )


def headline(best: dict | None, disagreeing: int) -> str:
    """One sentence: the best agreeing row, and how many rows were left out for wrong answers."""
    text = (
        f"Best: {best['backend']} [{best['precision']}] at {best['speedup']:.2f}x eager ({best['batch']}x{best['seq']})"
        if best
        else "Best: no row both ran and agreed with eager fp32"
    )
    if disagreeing:
        text += f"; {disagreeing} row(s) failed agreement and do not count"
    return text + "."


def _agrees_cell(m) -> str:
    if not m.agreement:
        return "-"
    a = m.agreement
    return f"yes {a['rel_l2']:.1e}" if a["passed"] else f"[red bold]NO {a['rel_l2']:.1e}[/]"


def table(report: BenchReport, width: int | None = None) -> Table:
    """The results as a rich table; with ``width``, the least important columns give way first."""
    from rich.markup import escape

    from ..tables import Column, fitted_table

    best = report.to_dict(raw=False)["best"]
    columns = [
        Column("backend"),
        Column("precision"),
        Column("batch", 0, "right"),
        Column("seq", 0, "right"),
        Column("mean ms", 3, "right"),
        Column("p50 ms", 1, "right"),
        Column("p99 ms", 2, "right"),
        Column("CV", 2, "right"),
        Column("seq/s", 0, "right"),
        Column("tokens/s", 3, "right"),
        Column("speedup", 0, "right"),
        Column("GFLOP/s", 3, "right"),
        Column("% peak", 1, "right"),
        Column("agrees", 0),
    ]
    rows: list = []
    for m in report.measurements:
        lead = [m.backend, m.precision, str(m.batch), str(m.seq)]
        if not m.latency:
            why = f"[yellow]skipped[/]: {m.skipped}" if m.skipped else f"[red]error[/]: {m.error}"
            rows.append((lead, why[:90]))
            continue
        lat = m.latency
        cv = f"[yellow]{lat.cv:.1%}[/]" if lat.noisy else f"{lat.cv:.1%}"
        rows.append(
            lead
            + [
                f"{lat.mean:.2f}",
                f"{lat.p50:.2f}",
                f"{lat.p99:.2f}",
                cv,
                f"{m.seq_per_s:.1f}",
                f"{m.tokens_per_s:.0f}",
                _f(m.speedup, ".2f", "x") if m.agrees else f"[strike]{_f(m.speedup, '.2f', 'x')}[/]",
                _f(m.gflops, ".1f"),
                _f(m.pct_of_peak, ".0f"),
                _agrees_cell(m),
            ]
        )
    return fitted_table(
        f"{report.model}: latency and throughput vs eager Keras fp32 "
        f"(peaks: {_peaks(report.calibration) or 'not measured'})",
        columns,
        rows,
        width,
        caption=escape(headline(best, len(report.disagreeing()))),
    )


def to_csv(report: BenchReport) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, CSV_COLUMNS)
    w.writeheader()
    for m in report.measurements:
        lat = m.latency
        row = {
            "model": report.model,
            "backend": m.backend,
            "precision": m.precision,
            "batch": m.batch,
            "seq": m.seq,
            "status": m.status,
            "agrees": m.agrees if m.latency else "",
            "rel_l2": (m.agreement or {}).get("rel_l2"),
            "cosine": (m.agreement or {}).get("cosine"),
            "reason": m.skipped or m.error or "; ".join((m.agreement or {}).get("failures", [])),
            "seq_per_s": m.seq_per_s,
            "tokens_per_s": m.tokens_per_s,
            "speedup": m.speedup,
            "gflops": m.gflops,
            "pct_of_peak": m.pct_of_peak,
        }
        if lat:
            row.update(
                count=lat.count,
                cv=lat.cv,
                **{f"{k}_ms": getattr(lat, k) for k in ("mean", "p50", "p90", "p95", "p99", "min", "max")},
                stdev_ms=lat.stdev,
            )
        w.writerow(row)
    return buf.getvalue()


def plot_throughput(report: BenchReport, path: Path) -> None:
    """Throughput (sequences/s) against batch size: colour by backend, line style and marker by
    precision; rows whose answers disagree with eager fp32 are drawn with a red cross and say so."""
    from ..plotting import pyplot, save_png

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
    """results.json, results.csv and throughput.png in ``out`` (each written atomically)."""
    import os
    import shutil
    import tempfile

    from ..errors import ExportError
    from ..exporters.manifest import readable_dir

    out = Path(out)
    names = ("results.json", "results.csv", "throughput.png")
    try:
        out.mkdir(parents=True, exist_ok=True)
        stage = Path(tempfile.mkdtemp(prefix=".bench.tmp-", dir=out))
    except OSError as e:
        raise ExportError(f"cannot write into `{out}` ({e.strerror or e}).", flag="--out") from None
    try:  # the three files are complete (a full disk fails here) before any of them replaces an old one
        write_text_atomic(stage / names[0], json.dumps(report.to_dict(), indent=2), flag="--out")
        write_text_atomic(stage / names[1], to_csv(report), flag="--out")
        plot_throughput(report, stage / names[2])
        readable_dir(stage)
        for name in names:
            os.replace(stage / name, out / name)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    return [out / name for name in names]


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
        "| backend | precision | batch | seq | mean ms | p50 ms | p99 ms | CV | seq/s | speedup vs eager | GFLOP/s "
        "| % of peak | agrees (rel L2) |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    lines[0:0] = [f"> Warning: {w}" for w in data.get("warnings", []) if "coefficient of variation" not in w] + (
        [""] if any("coefficient of variation" not in w for w in data.get("warnings", [])) else []
    )
    for m in data["measurements"]:
        lat = m["latency"]
        if not lat:
            lines.append(
                f"| {m['backend']} | {m['precision']} | {m['batch']} | {m['seq']} | "
                f"{m['status']}: {m['skipped'] or m['error']} |  |  |  |  |  |  |  |  |"
            )
            continue
        a = m.get("agreement")
        agrees = "-" if not a else f"yes ({a['rel_l2']:.1e})" if a["passed"] else f"**NO** ({a['rel_l2']:.1e})"
        speed = _f(m["speedup"], ".2f", "x")
        speed = speed if not a or a["passed"] else f"~~{speed}~~"
        lines.append(
            f"| {m['backend']} | {m['precision']} | {m['batch']} | {m['seq']} | {lat['mean']:.2f} | {lat['p50']:.2f} | "
            f"{lat['p99']:.2f} | {lat['cv']:.1%} | {m['seq_per_s']:.1f} | {speed} | "
            f"{_f(m['gflops'], '.1f')} | {_f(m['pct_of_peak'], '.0f')} | {agrees} |"
        )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":  # python -m attnkit.benchmark.report results.json  -> markdown on stdout
    import sys

    print(to_markdown(json.loads(Path(sys.argv[1]).read_text())))
