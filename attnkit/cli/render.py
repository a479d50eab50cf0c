"""Rendering at the output edge: rich tables built from the data the API returns."""

from __future__ import annotations

from rich.table import Table

from ..checks.agreement import VerifyReport
from ..runtimes.base import ran_label


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


def agreement_table(report: VerifyReport, width: int | None = None) -> Table:
    """One row per backend x shape x output: errors, cosine, required tolerance, verdict."""
    from ..core.tables import Column, fitted_table

    columns = [
        Column("backend"),
        Column("precision"),
        Column("shape"),
        Column("output", 2),
        Column("max abs", 1),
        Column("max rel", 3),
        Column("rel L2"),
        Column("cosine"),
        Column("NaN/Inf", 3),
        Column("needs atol", 3),
        Column("result"),
    ]
    rows: list = []
    for r in report.results:
        lead = [r.backend, ran_label(r.precision, r.precision, r.ran_as), r.shape]
        if r.skipped:
            rows.append((lead, f"[yellow]skipped[/]: {r.skipped[:80]}"))
            continue
        if r.error:
            rows.append((lead, f"[red]ERROR[/] {r.error[:80]}"))
            continue
        for a in r.agreements:
            verdict = "[green]pass[/]" if a.passed else f"[red]FAIL[/] {'; '.join(a.failures)[:80]}"
            rows.append(
                lead
                + [
                    a.output,
                    f"{a.max_abs:.2e}",
                    f"{a.max_rel:.2e}",
                    f"{a.rel_l2:.2e}",
                    f"{a.cosine:.6f}",
                    f"{a.nan}/{a.inf}",
                    f"{a.required_atol:.1e}",
                    verdict,
                ]
            )
    return fitted_table(f"agreement with eager fp32 Keras — {report.model} ({report.root})", columns, rows, width)


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


def plan_tables(sidecar: dict) -> list[Table]:
    """Summary, profiles, I/O and engine layers of a TensorRT plan's sidecar."""
    summary = Table(title="TensorRT plan", show_header=False)
    for key in (
        "flavour",
        "version",
        "build_path",
        "target",
        "runs_on",
        "precision",
        "onnx",
        "plan_bytes",
        "build_seconds",
        "network_layers",
        "sha256",
    ):
        summary.add_row(key, str(sidecar.get(key)))
    cache = sidecar.get("cache", {})
    summary.add_row("timing cache", f"{cache.get('path')} (reused: {cache.get('reused')})")
    profiles = Table(title="optimisation profiles")
    for col in ("#", "input", "min", "opt", "max"):
        profiles.add_column(col)
    for i, p in enumerate(sidecar.get("profiles", [])):
        for name, shape in p["shapes"].items():
            profiles.add_row(str(i), name, str(shape["min"]), str(shape["opt"]), str(shape["max"]))
    io = Table(title="I/O tensors")
    for col in ("name", "mode", "shape", "dtype"):
        io.add_column(col)
    for t in sidecar.get("io", []):
        io.add_row(t["name"], t["mode"], str(t["shape"]), t["dtype"])
    layers = sidecar.get("engine_layers", {})
    lt = Table(title=f"engine layers: {layers.get('count')} (source: {layers.get('source')})")
    for col in ("layer", "ONNX nodes fused", "first / last ONNX node"):
        lt.add_column(col)
    for layer in layers.get("layers", []):
        nodes = layer.get("onnx_nodes", [])
        ends = f"{nodes[0]} … {nodes[-1]}" if len(nodes) > 1 else (nodes[0] if nodes else "-")
        lt.add_row(layer["name"][:70], str(len(nodes)), ends[:110])
    return [summary, profiles, io, lt]


def env_tables(data: dict) -> list[Table]:
    """The machine, the libraries and every backend x precision with its availability."""
    machine = Table(title="machine and libraries", show_header=False)
    for key, value in data["machine"].items():
        machine.add_row(key, str(value))
    for key, value in data["libraries"].items():
        machine.add_row(key, str(value))
    backends = Table(title="backends", caption=_not_registered(data.get("not_registered", [])))
    for col in ("backend", "precision", "runs", "available", "reason"):
        backends.add_column(col)
    for b in data["backends"]:
        ok = "[green]yes[/]" if b["available"] else "[red]no[/]"
        backends.add_row(b["backend"], b["precision"], ", ".join(b.get("tasks", [])), ok, b["reason"] or "")
    return [machine, backends]


def _not_registered(items: list[dict]) -> str | None:
    """Backend x task pairs that cannot exist, said once under the table instead of as rows."""
    by_reason: dict[str, list[str]] = {}
    for item in items:
        by_reason.setdefault(item["reason"], []).append(f"{item['backend']} {item['task']}")
    return "\n".join(f"not registered: {', '.join(w)}: {r}" for r, w in by_reason.items()) or None


def data_table(report: VerifyReport, width: int | None = None) -> Table:
    """verify --data: each runner on the held-out rows, rel L2 and task metrics against eager fp32, and the gate."""
    from ..core.tables import Column, fitted_table

    d = report.data
    base = report.data_base
    title = f"on your data: {d['held_out_rows']} held-out rows of {d['path']} (sha256 {d['sha256'][:12]})"
    if base is not None:
        known = {k: v for k, v in (("accuracy", base.accuracy), ("next-token accuracy", base.next_token_accuracy),
                                   ("perplexity", base.perplexity)) if v is not None}  # fmt: skip
        title += "; fp32 eager: " + (", ".join(f"{k} {v:.4f}" for k, v in known.items()) or "top-1 is the reference")
    columns = [Column("backend"), Column("precision"), Column("rel L2"), Column("top-1 = fp32"), Column("accuracy", 2),
               Column("next token", 2), Column("ppl", 3), Column("result")]  # fmt: skip
    rows: list = []

    def f(v, spec=".4f"):
        return "-" if v is None else format(v, spec)

    for c in report.data_checks:
        lead = [c.backend, c.precision]
        if c.skipped or c.error:
            rows.append(
                (lead, f"[yellow]skipped[/]: {c.skipped[:80]}" if c.skipped else f"[red]ERROR[/] {c.error[:80]}")
            )
            continue
        m = c.metrics
        verdict = ("[green]pass[/] " if c.passed else "[red]FAIL[/] ") + c.verdict
        rows.append(lead + [f(c.rel_l2, ".2e"), f(m and m.top1_agreement), f(m and m.accuracy),
                            f(m and m.next_token_accuracy), f(m and m.perplexity, ".3f"), verdict])  # fmt: skip
    return fitted_table(title, columns, rows, width)


def compare_table(comparison) -> Table:
    """``attnkit compare``: one row per results.json, its machine and the pick its own measurements give."""
    t = Table(title="attnkit compare: each run's pick, against its own eager baseline")
    for col in ("results", "model", "machine", "latency pick", "throughput pick", "rel L2 / tol", "pick reproduced"):
        t.add_column(col)

    def pick(p: dict | None, figure: str) -> str:
        if not p:
            return "none agrees"
        ran = f" (ran {p['ran_as']})" if p.get("ran_as") and p["ran_as"] != p["precision"] else ""
        value = f"{p['p50_ms']:.2f} ms" if figure == "latency" else f"{p['seq_per_s']:.1f} seq/s"
        speedup = f", {p['speedup']:.2f}x" if p.get("speedup") else ""
        return f"{p['backend']} {p['precision']}{ran} {p['batch']}x{p['seq']}: {value}{speedup}"

    for i in comparison.inputs:
        m = i.machine
        t.add_row(
            i.path, i.model, f"{m['cpu']} ({m['cpu_class']}, {m['cores']} cores)",
            pick(i.pick.get("latency"), "latency"), pick(i.pick.get("throughput"), "throughput"),
            (f"{i.pick['throughput']['rel_l2']:.1e} / {i.pick['throughput']['rel_l2_tolerance']:g}"
             if i.pick.get("throughput") else "-"),
            "yes" if i.pick_reproduced else "NO: the file's recorded pick differs",
        )  # fmt: skip
    return t
