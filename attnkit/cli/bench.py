"""The measuring commands, one thing each: ``bench`` (the forward pass of every backend against eager Keras),
``bench-generate`` (token by token with the KV cache) and ``loadtest`` (a running KServe v2 server)."""

from __future__ import annotations

from pathlib import Path

import click

from .._version import __version__
from ..runtimes.registry import bench_defaults, runner_names
from .group import cli
from .options import (
    BACKEND_PRECISIONS,
    DATA,
    JSON,
    MODEL_LOADING,
    SEED,
    OptionGroup,
    batch_sizes,
    out_dir,
    shapes,
    target,
    timing,
)
from .support import console, emit, progress, stages
from .types import BACKENDS, POSITIVE_INTS

SHAPES = shapes()
TIMING = timing()
#: what a preset or .keras file is exported for on the fly: this machine, where it is measured
ON_THE_FLY = target("host")
BENCH_OUT = out_dir("results.json, results.csv, throughput.png")
COMPARE_OUT = out_dir("compare.json, compare.png")


@cli.command()
@click.argument("model", metavar="MODEL_OR_DIR")
@click.option(
    "--backends",
    type=BACKENDS,
    help=f"Comma list of: {', '.join(runner_names())} (NAME-PRECISION pins one) [default: {','.join(bench_defaults())}].",
)
@SHAPES
@BACKEND_PRECISIONS
@TIMING
@SEED
@click.option("--no-baseline", is_flag=True, help="Do not measure eager Keras (no speedup column).")
@MODEL_LOADING
@ON_THE_FLY
@DATA
@BENCH_OUT
@click.option(
    "--cell",
    type=click.IntRange(min=0),
    metavar="K",
    help="Measure only the K-th (batch, sequence) of the grid, 0-based, batch-major (a --plan pod's share).",
)
@click.option(
    "--plan",
    type=click.Path(path_type=Path),
    metavar="JOB.yaml",
    help="Measure nothing: write the sweep as a Kubernetes Indexed Job, one pod per (batch, sequence), "
    "each asking for the CPUs it measures with (requests = limits).",
)
@click.option("--image", default=f"attnkit:{__version__}", show_default=True, help="--plan: the pods' image.")
@click.option("--claim", default="attnkit-data", show_default=True,
              help="--plan: PersistentVolumeClaim mounted at /data (results land in /data/results/cell-K).")  # fmt: skip
def bench(model, backends, no_baseline, cell, plan, image, claim, **kw):
    """Benchmark every backend's forward pass against the eager Keras baseline, in one run.

    MODEL_OR_DIR is a preset, a .keras file (both exported on the fly for --target, by default this machine,
    into a temporary directory) or an export directory (used as is; a requested backend without its artifact
    is refused).
    Generation: `attnkit bench-generate`; a running server: `attnkit loadtest`.
    """
    from ..benchmark import report as render
    from ..orchestration.resolve import bench as run_bench

    out = BENCH_OUT.parse(kw)
    (batch_sizes, seq_lens), rule, seed = SHAPES.parse(kw), TIMING.parse(kw), SEED.parse(kw)
    if plan is not None:
        return _write_plan(plan, image, claim, model, backends, no_baseline, batch_sizes, seq_lens, rule, seed, out, kw)
    if cell is not None:
        grid = [(b, s) for b in batch_sizes for s in seq_lens]
        if cell >= len(grid):
            raise click.BadParameter(f"{cell} is past the grid's {len(grid)} cells (0..{len(grid) - 1}).",
                                     param_hint="--cell")  # fmt: skip
        batch_sizes, seq_lens = (grid[cell][0],), (grid[cell][1],)
    with stages() as (stage, on_start, on_measurement):
        report = run_bench(
            model, target=ON_THE_FLY.parse(kw), backends=list(backends) if backends else None, batch_sizes=batch_sizes, seq_lens=seq_lens,
            rule=rule, seed=seed, baseline=not no_baseline, progress=stage, on_start=on_start,
            on_measurement=on_measurement, **BACKEND_PRECISIONS.parse(kw), **MODEL_LOADING.parse(kw),
            **DATA.parse(kw),
        )  # fmt: skip
    console().print(render.table(report, console().width))
    from ..benchmark.results import pick_lines

    for line in pick_lines(report.pick()):
        click.echo(line)
    for warning in report.warnings():
        click.echo(f"Warning: {warning}", err=True)
    if out:
        for path in render.write_all(report, out):
            click.echo(f"wrote {path}")


def _write_plan(path: Path, image, claim, model, backends, no_baseline, batch_sizes, seq_lens, rule, seed, out, kw):
    """``bench --plan``: the same bench, one Indexed Job pod per cell (:func:`attnkit.serving.manifests.bench_job`).

    Every pod runs with ``--threads`` set to the CPUs it asks for: inside a container, the runtimes would
    otherwise size their pools by the node's cores, not by the pod's limit."""
    import os

    from ..core.errors import AttnkitError
    from ..exporters.manifest import write_text_atomic
    from ..serving.manifests import bench_job, dns_name, to_yaml

    if out is not None:
        raise click.BadParameter(
            "each pod writes /data/results/cell-K; --plan writes the Job only.", param_hint="--out"
        )
    precision = BACKEND_PRECISIONS.parse(kw)
    threads = precision["threads"] or os.cpu_count() or 1
    data, target_name = DATA.parse(kw), ON_THE_FLY.parse(kw)
    loading = MODEL_LOADING.parse(kw)
    flags = {
        "--batch-sizes": ",".join(map(str, batch_sizes)),
        "--seq-lens": ",".join(map(str, seq_lens)),
        "--precision": ",".join(precision["precisions"]),
        "--threads": str(threads),
        "--warmup": str(rule.warmup_s),
        "--min-iterations": str(rule.min_iterations),
        "--min-seconds": str(rule.min_seconds),
        "--seed": str(seed),
    }
    args = ["bench", model, *(x for pair in flags.items() for x in pair)]
    args += ["--target", str(target_name)] if target_name else []  # default: the pod's own machine (host)
    args += ["--backends", ",".join(backends)] if backends else []
    args += ["--no-baseline"] if no_baseline else []
    args += [a for m in loading["imports"] for a in ("--import", m)] + (["--unsafe"] if loading["unsafe"] else [])
    if data.get("data") is not None:
        args += ["--data", str(data["data"])]
        args += ["--accuracy-target", str(data["accuracy_target"])] if data["accuracy_target"] is not None else []
    # Kubernetes expands $(CELL) in args from the container's env (CELL: the pod's completion index)
    args += ["--cell", "$(CELL)", "--out", "/data/results/cell-$(CELL)"]
    cells = len(batch_sizes) * len(seq_lens)
    memory = 4 << 30  # TensorFlow, the runtimes and one model's artifacts: a stated allowance, not a measurement
    name = dns_name(f"attnkit-bench-{Path(model).stem}", "MODEL_OR_DIR")
    job = bench_job(name, image, ["attnkit"], cells, threads, memory, claim)
    container = job["spec"]["template"]["spec"]["containers"][0]
    container["args"] = args
    container["env"] = [{"name": "CELL", "valueFrom": {"fieldRef": {
        "fieldPath": "metadata.annotations['batch.kubernetes.io/job-completion-index']"}}}]  # fmt: skip
    if path.exists():  # nothing existing is lost
        raise AttnkitError(f"`{path}` exists.", flag="--plan", hint="Give a new file name, or remove it first.")
    write_text_atomic(path, to_yaml(job), flag="--plan")
    click.echo(f"wrote {path}: {cells} pods ({len(batch_sizes)} x {len(seq_lens)} cells), "
               f"{threads} CPUs each (requests = limits); then `attnkit compare` their results.json")  # fmt: skip


@cli.command()
@click.argument("results", nargs=-1, metavar="RESULTS...")
@COMPARE_OUT
def compare(results, **kw):
    """Bench results (results.json, or the --out directories holding them) from several machines or runs side by
    side: per run its machine and the pick its own measurements give; machines that differ in CPU class, threads
    or library versions are named, and nothing is averaged across them. Exits 1 when a file's recorded pick is
    not what its measurements give."""
    from ..benchmark.compare import compare as run_compare
    from ..benchmark.compare import plot
    from ..core.errors import AgreementError
    from .render import compare_table

    out = COMPARE_OUT.parse(kw)
    comparison = run_compare(list(results))
    console().print(compare_table(comparison))
    for model, differences in comparison.differences.items():
        if differences:
            click.echo(f"{model}: machines differ in {', '.join(differences)}: each ratio is within its own run, none "
                       "is averaged across them")  # fmt: skip
    if out:
        import json

        from ..exporters.manifest import write_outputs

        writers = {"compare.json": lambda p: p.write_text(json.dumps(comparison.to_dict(), indent=2) + "\n"),
                   "compare.png": lambda p: plot(comparison, p)}  # fmt: skip
        for path in write_outputs(out, writers):
            click.echo(f"wrote {path}")
    wrong = [i.path for i in comparison.inputs if not i.pick_reproduced]
    if wrong:
        raise AgreementError(f"the recorded pick of {', '.join(wrong)} is not what its own measurements give (edited, "
                             "or written by another attnkit).", flag="RESULTS")  # fmt: skip


GENERATE_BATCHES = batch_sizes("1")
#: bench-generate's --data: prompts from the user's held-out rows (no gate: tokens and speed are reported)
GENERATE_DATA = OptionGroup("data", DATA.options[:1], ("data",), lambda data: {"data": str(data) if data else None})
GENERATE_OUT = out_dir("generation.json, generation.csv, generation.png")


@cli.command("bench-generate")
@click.argument("model", metavar="MODEL_OR_DIR")
@click.option(
    "--backends",
    type=BACKENDS,
    help="Comma list of backends with generation runners (NAME-PRECISION pins one) [default: every one the "
    "export's artifacts allow; `attnkit env` lists them].",
)
@GENERATE_BATCHES
@click.option("--prompt-lengths", type=POSITIVE_INTS, default="32", show_default=True, help="Prompt lengths.")
@click.option("--new-tokens", type=POSITIVE_INTS, default="32,128", show_default=True, help="Tokens generated.")
@click.option("--repeats", default=3, show_default=True, type=click.IntRange(min=1), help="Timed generations.")
@BACKEND_PRECISIONS
@SEED
@MODEL_LOADING
@ON_THE_FLY
@GENERATE_DATA
@GENERATE_OUT
def bench_generate(model, backends, prompt_lengths, new_tokens, repeats, **kw):
    """Benchmark generation token by token: time to first token, inter-token latency, tokens/s, speedup of the
    cached decode over full recompute, % of memory bandwidth.

    MODEL_OR_DIR is a --generate export, or a decoder/seq2seq preset or .keras file exported on the fly
    (fp32 and the reduced --precision asked) into a temporary directory.
    """
    from ..generation.report import bench_table, write_all
    from ..orchestration.resolve import bench_generation

    out, seed, loading = GENERATE_OUT.parse(kw), SEED.parse(kw), MODEL_LOADING.parse(kw)
    precision, data = BACKEND_PRECISIONS.parse(kw), GENERATE_DATA.parse(kw)
    report = bench_generation(
        model, target=ON_THE_FLY.parse(kw), precisions=precision["precisions"], backends=list(backends) if backends else None,
        batches=GENERATE_BATCHES.parse(kw), prompt_lengths=tuple(int(p) for p in prompt_lengths),
        new_tokens=tuple(int(n) for n in new_tokens), repeats=repeats, seed=seed, threads=precision["threads"],
        progress=progress, **loading, **data,
    )  # fmt: skip
    console().print(bench_table(report, console().width))
    for note in report.notes:
        click.echo(note)
    best = report.best()
    if best:
        share = f", {best.pct_of_bandwidth:.0f} % of the bandwidth bound" if best.pct_of_bandwidth else ""
        click.echo(
            f"Best decode: {best.label} at batch {best.batch}, {best.tokens_per_s:.1f} tokens/s, "
            f"{best.speedup_vs_eager_recompute:.1f}x eager full recompute{share}"
        )
    if out:
        for path in write_all(report, out):
            click.echo(f"wrote {path}")


@cli.command("bench-arrivals")
@click.argument("export_dir", metavar="DIR", type=click.Path(path_type=Path))
@click.option("--rate", type=float, required=True, help="Requests per second (Poisson arrivals).")
@click.option("--requests", default=16, show_default=True, type=click.IntRange(min=1), help="Requests in all.")
@click.option("--max-prompt-length", default=32, show_default=True, type=click.IntRange(min=1),
              help="Longest prompt (lengths drawn in [half, this]).")  # fmt: skip
@click.option("--new-tokens", default=32, show_default=True, type=click.IntRange(min=1), help="Tokens per request.")
@click.option("--max-batch", default=8, show_default=True, type=click.IntRange(min=1),
              help="Static batching: most requests in one generate call.")  # fmt: skip
@click.option("--static", default="openvino-genai", show_default=True,
              help="The generate backend that serves by static batching.")  # fmt: skip
@BACKEND_PRECISIONS
@SEED
@JSON
def bench_arrivals(export_dir, rate, requests, max_prompt_length, new_tokens, max_batch, static, **kw):
    """Serve requests that arrive while others decode, by continuous batching (OpenVINO GenAI's
    ContinuousBatchingPipeline, OpenVINO Model Server's engine) and by static batching on the same export, in
    one run: tokens/s, latency from arrival to last token, time to first token, and whether both gave every
    request the same tokens.

    DIR is a --generate export of a decoder-only model with --format openvino."""
    from ..generation.arrivals import arrivals_tables, bench_arrivals

    seed, json_out, asked = SEED.parse(kw), JSON.parse(kw), BACKEND_PRECISIONS.parse(kw)
    precisions = asked["precisions"]
    if len(precisions) != 1 or precisions[0] not in ("fp32", "int8"):
        from ..core.errors import AttnkitError

        raise AttnkitError(
            f"bench-arrivals serves one precision, fp32 or int8; got {','.join(precisions)}.", flag="--precision"
        )
    report = bench_arrivals(
        export_dir, rate=rate, requests=requests, prompt_length=max_prompt_length, new_tokens=new_tokens,
        max_batch=max_batch, static=static, precision=precisions[0], seed=seed, threads=asked["threads"],
        progress=progress,
    )  # fmt: skip
    emit(report.to_dict(), json_out, lambda data: arrivals_tables(data, console().width))


LOADTEST_OUT = out_dir("loadtest.json, loadtest.csv, loadtest.png")


@cli.command()
@click.argument("model", metavar="MODEL")
@click.option(
    "--server",
    metavar="URL",
    required=True,
    help="A running KServe v2 endpoint: http://127.0.0.1:PORT or grpc://127.0.0.1:PORT (loopback only).",
)
@click.option("--request", type=click.Path(path_type=Path), help="A KServe v2 JSON request to send.")
@click.option("--batch-size", default=1, show_default=True, type=click.IntRange(min=1),
              help="Rows per request built from the model's metadata (without --request).")  # fmt: skip
@click.option("--seq-len", default=128, show_default=True, type=click.IntRange(min=1),
              help="Sequence length of a request built from metadata (without --request).")  # fmt: skip
@click.option("--concurrency", type=POSITIVE_INTS, default="1,2,4,8,16", show_default=True,
              help="In-flight requests, one level each.")  # fmt: skip
@click.option("--warmup", default=1.0, show_default=True, type=float, help="Warm-up seconds per level.")
@click.option("--min-seconds", default=2.0, show_default=True, type=float, help="Seconds per window at least.")
@click.option("--stability", default=10.0, show_default=True, type=float,
              help="Windows repeat until the last three agree within this % (perf_analyzer's rule).")  # fmt: skip
@click.option("--max-windows", default=10, show_default=True, type=int, help="Windows per level at most.")
@click.option("--max-requests", default=100_000, show_default=True, type=click.IntRange(min=1), help="Per level.")
@SEED
@LOADTEST_OUT
def loadtest(model, server, request, batch_size, seq_len, concurrency, warmup, min_seconds, stability, max_windows,
             max_requests, **kw):  # fmt: skip
    """Load-test MODEL (its name on a running server): throughput, p50/p90/p95/p99 latency, stdev and errors per
    concurrency level, each measured until steady (perf_analyzer's stability rule)."""
    from ..core.errors import AttnkitError
    from ..serving import report as render
    from ..serving.loadtest import load_test, read_request

    out, seed = LOADTEST_OUT.parse(kw), SEED.parse(kw)
    source = click.get_current_context().get_parameter_source
    if request and any(source(p).name != "DEFAULT" for p in ("batch_size", "seq_len")):
        raise AttnkitError("a --request file fixes the shapes itself.", flag="--batch-size",
                           hint="Drop --batch-size/--seq-len, or drop --request.")  # fmt: skip
    body = read_request(request) if request else None
    result = load_test(
        server, model, body, concurrency=tuple(int(c) for c in concurrency), warmup_s=warmup, window_s=min_seconds,
        max_requests=max_requests, batch=batch_size, seq=seq_len, seed=seed, stability_pct=stability,
        max_windows=max_windows, progress=progress,
    )  # fmt: skip
    console().print(render.table([result], console().width))
    if result.errors:
        first = next(lv.first_error for lv in result.levels if lv.first_error)
        click.echo(f"Warning: {result.errors} request(s) failed; the first: {first}", err=True)
    if out:
        for path in render.write_all([result], out):
            click.echo(f"wrote {path}")
