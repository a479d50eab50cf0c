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


def _f(v, fmt: str) -> str:
    return "-" if v is None else format(v, fmt)


def table(report: BenchReport) -> Table:
    peaks = ", ".join(f"{k} {v['gflops']:.0f} GFLOP/s" for k, v in report.calibration.items() if v.get("gflops"))
    t = Table(
        title=f"{report.model}: latency and throughput vs eager Keras fp32 (matmul peak: {peaks or 'not measured'})"
    )
    for col in (
        "backend",
        "precision",
        "batch",
        "seq",
        "mean ms",
        "p50 ms",
        "p99 ms",
        "CV",
        "seq/s",
        "tokens/s",
        "speedup",
        "GFLOP/s",
        "% peak",
    ):
        t.add_column(col, justify="left" if col in ("backend", "precision") else "right")
    for m in report.measurements:
        if not m.latency:
            why = f"[yellow]skipped[/]: {m.skipped}" if m.skipped else f"[red]error[/]: {m.error}"
            t.add_row(m.backend, m.precision, str(m.batch), str(m.seq), why[:90], *[""] * 8)
            continue
        lat = m.latency
        cv = f"[yellow]{lat.cv:.1%}[/]" if lat.noisy else f"{lat.cv:.1%}"
        t.add_row(
            m.backend,
            m.precision,
            str(m.batch),
            str(m.seq),
            f"{lat.mean:.2f}",
            f"{lat.p50:.2f}",
            f"{lat.p99:.2f}",
            cv,
            f"{m.seq_per_s:.1f}",
            f"{m.tokens_per_s:.0f}",
            _f(m.speedup, ".2f") + "x",
            _f(m.gflops, ".1f"),
            _f(m.pct_of_peak, ".0f"),
        )
    return t


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
            "status": "error" if m.error else "skipped" if m.skipped else "ok",
            "reason": m.skipped or m.error or "",
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
    """Throughput (sequences/s) against batch size, one line per backend/precision/seq."""
    from ..plotting import pyplot, save_png

    fig, ax = pyplot().subplots(figsize=(8, 5), dpi=120)
    series: dict[str, list] = {}
    for m in report.measurements:
        if m.latency:
            label = f"{m.backend} [{m.precision}]" + (f", seq {m.seq}" if len(report.config["seq_lens"]) > 1 else "")
            series.setdefault(label, []).append((m.batch, m.seq_per_s))
    for label, pts in series.items():
        pts.sort()
        ax.plot(
            [p[0] for p in pts],
            [p[1] for p in pts],
            marker="o",
            label=label,
            linestyle="--" if label.startswith("keras [fp32]") else "-",
        )
    ax.set_xscale("log", base=2)
    ax.set_xticks(report.config["batch_sizes"], [str(b) for b in report.config["batch_sizes"]])
    ax.minorticks_off()
    ax.set_xlabel("batch size (sequences per call)")
    ax.set_ylabel("throughput (sequences / s)")
    seqs = ", ".join(map(str, report.config["seq_lens"]))
    ax.set_title(f"{report.model}: throughput vs batch size (seq {seqs}, {report.environment.get('cores')} cores)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    save_png(fig, path)


def write_all(report: BenchReport, out: Path) -> list[Path]:
    """results.json, results.csv and throughput.png in ``out`` (each written atomically)."""
    out = Path(out)
    write_text_atomic(out / "results.json", json.dumps(report.to_dict(), indent=2), flag="--out")
    write_text_atomic(out / "results.csv", to_csv(report), flag="--out")
    plot_throughput(report, out / "throughput.png")
    return [out / "results.json", out / "results.csv", out / "throughput.png"]


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
        "Matmul peak measured in the same run: "
        + ", ".join(f"{k} {v['gflops']:.0f} GFLOP/s" for k, v in cal.items() if v.get("gflops"))
        + ".",
        "",
        "| backend | precision | batch | seq | mean ms | p50 ms | p99 ms | CV | seq/s | speedup vs eager | GFLOP/s | % of peak |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for m in data["measurements"]:
        lat = m["latency"]
        if not lat:
            lines.append(
                f"| {m['backend']} | {m['precision']} | {m['batch']} | {m['seq']} | "
                f"{m['status']}: {m['skipped'] or m['error']} |  |  |  |  |  |  |  |"
            )
            continue
        lines.append(
            f"| {m['backend']} | {m['precision']} | {m['batch']} | {m['seq']} | {lat['mean']:.2f} | {lat['p50']:.2f} | "
            f"{lat['p99']:.2f} | {lat['cv']:.1%} | {m['seq_per_s']:.1f} | {_f(m['speedup'], '.2f')}x | "
            f"{_f(m['gflops'], '.1f')} | {_f(m['pct_of_peak'], '.0f')} |"
        )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":  # python -m attnkit.benchmark.report results.json  -> markdown on stdout
    import sys

    print(to_markdown(json.loads(Path(sys.argv[1]).read_text())))
