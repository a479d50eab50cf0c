"""Command line: commands, not modes. Each command parses its options (shared groups from :mod:`.options`,
Polygraphy's ``tools/args`` pattern) and calls one library function.

Every error reaches the user as one line on stderr with a non-zero exit code and no traceback
(``ATTNKIT_DEBUG=1`` shows it). Heavy libraries are imported inside commands, so ``--help`` is fast.

This module stays light (the commands live in :mod:`.app`): the console script imports it, and a Ctrl-C that
lands while click, rich and numpy are still importing must end as one line too (measured: 0.05 s and 0.15 s
after start, ``attnkit export`` printed a 20-line import traceback), so :func:`main` takes SIGINT over first.
"""

from __future__ import annotations


def main() -> None:
    """The console script: the commands, with SIGINT one line wherever it lands.

    Before the commands are imported and after they have finished (the interpreter's teardown, where TensorFlow's
    and OpenVINO's exit handlers run for a second or more) SIGINT is handled here; while a command runs, the
    group's own handler (:class:`attnkit.cli.support.AttnkitGroup`) is. A Ctrl-C in the teardown ends the process
    at once with the command's own exit code: its work and its output are complete. Python restores SIGINT's
    default action for the last phase of its finalisation, after the exit handlers (measured: the process then
    died by the signal, exit -2, without a line); an ignored SIGINT is left alone there, so the first exit handler
    registered, which runs last, ignores it.
    """
    import atexit
    import os
    import signal
    import sys

    finished: list[int] = []

    def on_sigint(_signum, _frame):
        if finished:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(finished[0])
        raise KeyboardInterrupt

    try:
        signal.signal(signal.SIGINT, on_sigint)
        atexit.register(signal.signal, signal.SIGINT, signal.SIG_IGN)
    except ValueError:  # not the main thread
        pass
    try:
        from .app import cli

        cli(prog_name="attnkit")  # always ends in SystemExit (standalone mode)
        code = 0
    except KeyboardInterrupt:  # before the commands were imported, or between the group's handler and here
        from ..core.interrupts import INTERRUPTED

        print(INTERRUPTED, file=sys.stderr)
        code = 130
    except SystemExit as done:
        code = done.code if isinstance(done.code, int) else (0 if done.code is None else 1)
    finished.append(code)
    sys.exit(code)


def __getattr__(name: str):
    if name == "cli":  # ``from attnkit.cli import cli``: the click group with every command on it
        from .app import cli

        return cli
    raise AttributeError(name)


__all__ = ["cli", "main"]
