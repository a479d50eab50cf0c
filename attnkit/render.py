"""Rendering at the output edge: rich tables built from the data the API returns."""

from __future__ import annotations

from rich.table import Table

from .verification import VerifyReport


def _si(n: float, unit: str = "") -> str:
    for div, suffix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(n) >= div:
            return f"{n / div:.2f} {suffix}{unit}"
    return f"{n:g} {unit}".strip()


def models_table(rows: list[dict]) -> Table:
    t = Table(title="attnkit presets")
    for col in (
        "name",
        "family",
        "layers",
        "d_model",
        "heads",
        "ffn",
        "params",
        f"FLOPs/seq (seq {rows[0]['seq']})",
        "description",
    ):
        t.add_column(col, justify="right" if col in ("layers", "d_model", "heads", "ffn", "params") else "left")
    for r in rows:
        t.add_row(
            r["name"],
            r["family"],
            str(r["layers"]),
            str(r["d_model"]),
            str(r["heads"]),
            str(r["ffn"] or "-"),
            _si(r["params"]),
            _si(r["flops_per_seq"], "FLOP"),
            r["description"],
        )
    return t


def agreement_table(report: VerifyReport) -> Table:
    """One row per backend x shape x output: errors, cosine, required tolerance, verdict."""
    t = Table(title=f"agreement with eager fp32 Keras — {report.model} ({report.root})")
    for col in (
        "backend",
        "precision",
        "shape",
        "output",
        "max abs",
        "max rel",
        "rel L2",
        "cosine",
        "NaN/Inf",
        "needs atol",
        "result",
    ):
        t.add_column(col)
    for r in report.results:
        shape = f"{r.batch}x{r.seq}"
        if r.error:
            t.add_row(r.backend, r.precision, shape, "-", "", "", "", "", "", "", f"[red]ERROR[/] {r.error[:80]}")
            continue
        for a in r.agreements:
            verdict = "[green]pass[/]" if a.passed else f"[red]FAIL[/] {'; '.join(a.failures)[:80]}"
            t.add_row(
                r.backend,
                r.precision,
                shape,
                a.output,
                f"{a.max_abs:.2e}",
                f"{a.max_rel:.2e}",
                f"{a.rel_l2:.2e}",
                f"{a.cosine:.6f}",
                f"{a.nan}/{a.inf}",
                f"{a.required_atol:.1e}",
                verdict,
            )
    return t


def locate_table(result) -> Table:
    """The per-layer error curve of one ONNX graph; the first diverging layer highlighted."""
    first = result.first
    title = f"--locate {result.artifact}: first diverging layer " + (
        f"[red]{first.layer}[/] (ONNX tensor {first.onnx_tensor})" if first else "[green]none[/]"
    )
    t = Table(title=title)
    for col in ("layer", "ONNX tensor", "rel L2", "max abs", "cosine", ""):
        t.add_column(col)
    for e in result.curve:
        mark = "[red]exceeds[/]" if e.exceeds else ("no counterpart" if e.onnx_tensor is None else "")
        t.add_row(
            e.layer,
            (e.onnx_tensor or "-")[-60:],
            "-" if e.rel_l2 is None else f"{e.rel_l2:.2e}",
            "-" if e.max_abs is None else f"{e.max_abs:.2e}",
            "-" if e.cosine is None else f"{e.cosine:.6f}",
            mark,
        )
    return t
