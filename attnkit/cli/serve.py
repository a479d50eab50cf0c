"""``attnkit serve setup|triton|tfserving`` and the body of ``attnkit bench --server`` (cli.py only parses)."""

from __future__ import annotations

import time
from pathlib import Path

import click

from ..core.errors import AttnkitError
from .support import progress
from .types import POSITIVE_INTS

VENV_HELP = "Serving virtualenv [default: $ATTNKIT_SERVING_VENV, else .venv-serving of the checkout]."


@click.group("serve")
def serve():
    """Serve attnkit's layouts on 127.0.0.1: Triton's own server (stand-in backends) or a TF Serving stand-in.

    \b
    attnkit serve setup                          build the serving venv (make serving)
    attnkit serve triton artifacts/m/triton      tritonserver 2.51 on the repository, until Ctrl-C
    attnkit serve tfserving artifacts/m/tfserving  the TF Serving REST stand-in on the layout
    """


@serve.command("setup")
@click.option("--venv", type=click.Path(path_type=Path), help=VENV_HELP)
@click.option("--no-tensorflow", is_flag=True, help="Leave TensorFlow out (Triton then loads ONNX models only).")
@click.option("--force", is_flag=True, help="Rebuild even when the venv matches the pins.")
def setup(venv, no_tensorflow, force):
    """Build the serving virtualenv: nvidia-pytriton (tritonserver 2.51), onnxruntime, TensorFlow, numpy < 2."""
    from ..serving.env import build

    env = build(venv, tensorflow=not no_tensorflow, force=force, say=progress)
    i = env.info
    click.echo(
        f"serving venv {env.root}: pytriton {i['pytriton']}, onnxruntime {i['onnxruntime']}, "
        f"tensorflow {i['tensorflow'] or 'not installed'}, numpy {i['numpy']}"
    )


def _wait(server) -> None:
    """Foreground until Ctrl-C / SIGTERM (then stopped by PID), until the server dies (one-line error), or
    until this command's parent goes away: `make triton` killed by its PID must not leave a server behind."""
    import os

    parent = os.getppid()
    try:
        while os.getppid() == parent:
            time.sleep(0.5)
            server.check_alive()
        click.echo(f"the parent process ({parent}) exited; stopping {server.what} (pid {server.pid})", err=True)
        server.stop()
    except KeyboardInterrupt:
        server.stop()
        click.echo(f"stopped {server.what} (pid {server.pid})", err=True)


@serve.command("triton")
@click.argument("repository", type=click.Path(path_type=Path))
@click.option("--venv", type=click.Path(path_type=Path), help=VENV_HELP)
@click.option("--http-port", default=8000, show_default=True, type=click.IntRange(0, 65535), help="0 picks a free one.")
@click.option("--grpc-port", default=8001, show_default=True, type=click.IntRange(0, 65535))
@click.option("--metrics-port", default=8002, show_default=True, type=click.IntRange(0, 65535))
@click.option("--model", "models", multiple=True, help="Load only this model (repeatable) [default: all].")
@click.option("--timeout", default=300.0, show_default=True, type=float, help="Seconds to wait until ready.")
def triton(repository, venv, http_port, grpc_port, metrics_port, models, timeout):
    """Run Triton's own tritonserver on REPOSITORY (as `attnkit package` wrote it) until Ctrl-C or SIGTERM.

    The server, its config parsing, dynamic batching and HTTP/gRPC endpoints are Triton's; the onnxruntime
    and tensorflow backends are attnkit's Python stand-ins (Triton's C++ backends cannot be installed here).
    """
    from ..serving.env import ServingEnv
    from ..serving.triton import TritonServer, check_repository

    check_repository(repository)  # before anything starts: a directory tritonserver would serve nothing from
    env = ServingEnv.locate(venv)
    with TritonServer(
        repository, models=tuple(models) or None, http_port=http_port, grpc_port=grpc_port,
        metrics_port=metrics_port, env=env,
    ) as server:  # fmt: skip
        progress(f"starting tritonserver on {repository} (log: {server.log})")
        server.start(timeout)
        for m in server.index():
            click.echo(f"{m['name']} version {m.get('version', '-')}: {m.get('state', 'UNAVAILABLE')}")
        click.echo(
            f"tritonserver pid {server.pid} ready: HTTP {server.http_url}, gRPC {server.grpc_url} (Ctrl-C stops)"
        )
        _wait(server)


@serve.command("tfserving")
@click.argument("directory", type=click.Path(path_type=Path))
@click.option("--port", default=8501, show_default=True, type=click.IntRange(0, 65535), help="REST port; 0 picks one.")
@click.option("--model-name", help="Serve only this model [default: every model under DIRECTORY].")
@click.option("--timeout", default=300.0, show_default=True, type=float, help="Seconds to wait until ready.")
def tfserving(directory, port, model_name, timeout):
    """Run attnkit's TF Serving REST STAND-IN (not tensorflow_model_server) on DIRECTORY until Ctrl-C.

    DIRECTORY is a model base path (<version>/saved_model.pb) or attnkit's tfserving/ layout (one model per
    subdirectory). Serves the highest version, tag serve, /v1/models/NAME[:predict|/metadata].
    """
    from ..serving.tfserving import TFServingStandIn, model_bases

    try:
        model_bases(directory, model_name)
    except FileNotFoundError as e:
        raise AttnkitError(
            f"{e}.", flag="DIRECTORY", hint="Give attnkit's tfserving/ directory or a model base path."
        ) from None
    with TFServingStandIn(directory, model_name=model_name, port=port) as server:
        server.start(timeout)
        for name in server.names:
            click.echo(f"{name}: {server.url}/v1/models/{name}")
        click.echo(f"TF Serving stand-in pid {server.pid} ready at {server.url} (Ctrl-C stops)")
        _wait(server)


@click.command("tune")
@click.argument("repository", metavar="REPO", type=click.Path(path_type=Path))
@click.option("--model", required=True, help="The model of REPO whose configuration is searched.")
@click.option("--latency-budget", type=float, required=True, metavar="MS",
              help="p99 latency a counted measurement must stay within, in milliseconds.")  # fmt: skip
@click.option("--time-budget", default=600.0, show_default=True, type=float, metavar="S",
              help="Seconds the search may take (a point is not started that would not fit).")  # fmt: skip
@click.option("--concurrency", type=POSITIVE_INTS, default="1,4,16", show_default=True,
              help="In-flight requests, one load-test level each, at every point.")  # fmt: skip
@click.option(
    "--request",
    type=click.Path(path_type=Path),
    help="A KServe v2 JSON request [default: REPO/request_MODEL.json, else one from the model's metadata].",
)
@click.option("--batch-size", type=click.IntRange(min=1), help="Rows of a request built from the model's metadata.")
@click.option("--seq-len", type=click.IntRange(min=1), help="Sequence length of a request built from metadata.")
@click.option("--dry-run", is_flag=True, help="Measure and report; write no config.pbtxt.")
@click.option("--venv", type=click.Path(path_type=Path), help=VENV_HELP)
@click.option(
    "--out", type=click.Path(path_type=Path), help="Write tune.json, tune.md, tune.png here [default: tune-MODEL]."
)
def tune(repository, model, latency_budget, time_budget, concurrency, request, batch_size, seq_len, dry_run, venv, out):
    """Search MODEL's Triton configuration in REPO (instance count, max batch size, dynamic batching's queue
    delay) on the real tritonserver for the most inferences/s within a p99 --latency-budget; write the winner as
    its config.pbtxt (the packaged one kept as configs/packaged.pbtxt) when it is confirmed >= 1.10x faster."""
    import json
    import shlex

    from ..exporters.manifest import write_outputs
    from ..serving.env import ServingEnv
    from ..serving.loadtest import read_request
    from ..serving.tune import plot, table_lines
    from ..serving.tune import tune as run_tune

    levels = tuple(int(c) for c in concurrency)
    if request and (batch_size or seq_len):
        raise AttnkitError("a --request file fixes the shapes itself.", flag="--batch-size",
                           hint="Drop --batch-size/--seq-len, or drop --request.")  # fmt: skip
    body = read_request(request) if request else None
    env = ServingEnv.locate(venv)
    report = run_tune(repository, model, latency_budget_ms=latency_budget, time_budget_s=time_budget, levels=levels,
                      body=body, batch=batch_size, seq=seq_len, write=not dry_run, env=env, progress=progress)  # fmt: skip
    report.command = shlex.join(
        ["attnkit", "tune", str(repository), "--model", model, "--latency-budget", f"{latency_budget:g}",
         "--time-budget", f"{time_budget:g}", "--concurrency", ",".join(map(str, levels))]
        + (["--request", str(request)] if request else []) + (["--dry-run"] if dry_run else [])
        + (["--batch-size", str(batch_size)] if batch_size else []) + (["--seq-len", str(seq_len)] if seq_len else [])
    )  # fmt: skip
    lines = table_lines(report)
    for line in lines:
        click.echo(line)
    best = report.best
    if best is None:
        click.echo(f"no configuration kept p99 within {latency_budget:g} ms at any level: nothing written")
    elif best.role == "packaged" or report.confirmed_gain is None:
        click.echo(f"best: the packaged configuration ({best.inferences_per_s:.1f} inferences/s): nothing written")
    else:
        click.echo(f"best: {best.candidate.label}, {best.inferences_per_s:.1f} inferences/s at p99 {best.p99_ms:.2f} ms "
                   f"({report.gain:.2f}x the packaged; back to back {report.confirmed_gain:.2f}x)")  # fmt: skip
    if report.written:
        click.echo(f"wrote {report.written}; the packaged configuration is {report.kept}; served answers "
                   f"{'identical' if report.answers_identical else 'DIFFER'} to the packaged configuration's")  # fmt: skip
    out = out or Path(f"tune-{model}")
    md = "\n".join([f"# attnkit tune {model}", "", f"Reproduce: `{report.command}`", "", *lines, ""])
    writers = {"tune.json": lambda p: p.write_text(json.dumps(report.to_dict(), indent=2, default=str) + "\n"),
               "tune.md": lambda p: p.write_text(md), "tune.png": lambda p: plot(report, p)}  # fmt: skip
    for path in write_outputs(out, writers):
        click.echo(f"wrote {path}")
    if report.written and not report.answers_identical:
        raise AttnkitError("the written configuration's answers differ from the packaged one's.", flag="REPO")
