"""The CLI's plumbing, apart from its commands: the click group that turns every error into one line
and an exit code (SIGTERM handled like Ctrl-C), consoles, progress lines and the bench progress bar."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
import traceback

import click

from ..core.errors import AttnkitError
from ..core.interrupts import (
    INTERRUPTED,
    Terminated,
    check,
    interrupt,
    interrupted,
    quiet_unraisable,
    request,
    requested,
    reset,
)


@contextlib.contextmanager
def native_stderr_silenced():
    """Send native libraries' log lines (TensorFlow's absl, oneDNN and CUDA-probe lines at import, which
    TF_CPP_MIN_LOG_LEVEL does not reach) to /dev/null, while Python's ``sys.stderr`` (attnkit's errors,
    warnings, progress) keeps the real stderr. Only when stderr is the process's fd 2 (not under
    click's CliRunner or pytest capture); ``ATTNKIT_DEBUG=1`` keeps everything."""
    try:
        real = not os.environ.get("ATTNKIT_DEBUG") and sys.stderr.fileno() == 2
    except (AttributeError, OSError, ValueError):
        real = False
    if not real:
        yield
        return
    sys.stderr.flush()
    saved, devnull, previous = os.dup(2), os.open(os.devnull, os.O_WRONLY), sys.stderr
    os.dup2(devnull, 2)
    sys.stderr = os.fdopen(os.dup(saved), "w", buffering=1, encoding=previous.encoding, errors="backslashreplace")
    try:
        yield
    finally:
        sys.stderr.flush()
        sys.stderr.close()
        sys.stderr = previous
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def _interrupted_exit() -> int:
    """The one line and exit code of a Ctrl-C (130) or SIGTERM (143) that a library turned into an error."""
    what = "terminated (SIGTERM)" if requested() and not interrupted() else "interrupted"
    click.echo(f"Error: {what}; nothing was left half-written.", err=True)
    return 143 if what.startswith("terminated") else 130


class AttnkitGroup(click.Group):
    """A click group that turns every exception into one line and an exit code."""

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        with native_stderr_silenced():
            code = self._main(args, prog_name, complete_var, **extra)
        if standalone_mode:
            sys.exit(code)
        return code

    def _main(self, args, prog_name, complete_var, **extra) -> int:
        previous = previous_int = None
        previous_hook, sys.unraisablehook = sys.unraisablehook, quiet_unraisable(sys.unraisablehook)
        try:
            reset()
            previous = signal.signal(signal.SIGTERM, request)
            # remembered: a native call may turn the KeyboardInterrupt into its own error, a __del__ may lose it
            previous_int = signal.signal(signal.SIGINT, interrupt)
        except ValueError:  # not the main thread (e.g. an embedding application): leave signals alone
            pass
        try:
            rv = super().main(args, prog_name or "attnkit", complete_var, standalone_mode=False, **extra)
            code = rv if isinstance(rv, int) else 0
        except click.exceptions.NoArgsIsHelpError as e:  # bare `attnkit`: the help, not an error
            click.echo(e.ctx.get_help() if e.ctx else str(e))
            code = 0
        except click.exceptions.Exit as e:
            code = e.exit_code
        except click.Abort as e:  # click turns KeyboardInterrupt (and so Terminated) into Abort
            if isinstance(e.__cause__, Terminated):
                click.echo("Error: terminated (SIGTERM); nothing was left half-written.", err=True)
                code = 143
            else:
                click.echo(INTERRUPTED, err=True)
                code = 130
        except click.ClickException as e:
            click.echo(f"Error: {e.format_message()}", err=True)
            code = e.exit_code
        except AttnkitError as e:  # the library names the parameter; the face names the flag that sets it
            if interrupted() or requested():
                # the interrupt landed in a library that turned it into its own error, which attnkit then typed
                # (CI at c4c6681: Ctrl-C inside Keras's load_model became "model.keras ... looks corrupt", exit 2)
                return _interrupted_exit()
            click.echo(f"Error: {e.for_cli()}", err=True)
            code = e.exit_code
        except Terminated:
            click.echo("Error: terminated (SIGTERM); nothing was left half-written.", err=True)
            code = 143
        except KeyboardInterrupt:
            click.echo(INTERRUPTED, err=True)
            code = 130
        except Exception as e:
            if interrupted() or requested():
                # Ctrl-C or SIGTERM landed inside a native call (pybind11 reports "error_already_set: MISMATCH
                # of original and normalized active exception"): it is the interrupt, not a bug; every atomic
                # writer has already cleaned up on the way out.
                return _interrupted_exit()
            # a bug: still one line, traceback on request
            if os.environ.get("ATTNKIT_DEBUG"):
                traceback.print_exc()
            first = str(e).strip().splitlines()[0][:300] if str(e).strip() else ""
            click.echo(
                f"Error: internal error {type(e).__name__}: {first} (set ATTNKIT_DEBUG=1 for the traceback)", err=True
            )
            code = 1
        finally:
            sys.unraisablehook = previous_hook
            if previous is not None:
                signal.signal(signal.SIGTERM, previous)
            if previous_int is not None:
                signal.signal(signal.SIGINT, previous_int)
        if code == 0 and requested():  # a SIGTERM a library swallowed after the last checkpoint
            click.echo("Error: terminated (SIGTERM).", err=True)
            code = 143
        return code


def console(stderr: bool = False):
    from rich.console import Console

    return Console(stderr=stderr, soft_wrap=False)  # the terminal's width (80 when not a terminal)


def progress(msg: str) -> None:
    from rich.markup import escape

    check()  # a SIGTERM swallowed by a library's bare `except:` is raised again here
    console(stderr=True).print(f"[dim]• {escape(msg)}[/]", soft_wrap=True)  # one line per message in a log


def emit(data: dict, json_out: str | None, tables) -> None:
    """``--json`` (``-``): JSON on stdout instead of tables; ``--json FILE``: tables, and the JSON written to
    FILE atomically; no ``--json``: the rich tables ``tables(data)`` renders."""
    if json_out == "-":
        click.echo(json.dumps(data, indent=2))
        return
    for table in tables(data):
        console().print(table)
    if json_out:
        from ..exporters.manifest import write_text_atomic

        write_text_atomic(json_out, json.dumps(data, indent=2), flag="--json")


@contextlib.contextmanager
def stages():
    """``(stage, on_start, on_measurement)`` callbacks for a long run: a progress bar on a terminal,
    one ``• stage`` line each in a log (stderr not a terminal)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    err = console(stderr=True)
    live = err.is_terminal
    columns = (
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=err, transient=True, disable=not live) as bar:
        task = bar.add_task("preparing", total=None)

        def stage(msg: str) -> None:
            check()
            bar.update(task, description=msg) if live else progress(msg)

        yield stage, (lambda total: bar.update(task, total=total)), (lambda _m: bar.advance(task))
