"""Command line: each command parses options and calls one public API function.

Every error reaches the user as one line on stderr with a non-zero exit code and no traceback
(``ATTNKIT_DEBUG=1`` shows it). Heavy libraries are imported inside commands, so ``--help`` is fast.
"""

from __future__ import annotations

import json
import os
import sys
import traceback
from pathlib import Path

import click

from . import __version__
from .errors import AttnkitError


class AttnkitGroup(click.Group):
    """A click group that turns every exception into one line and an exit code."""

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        try:
            rv = super().main(args, prog_name or "attnkit", complete_var, standalone_mode=False, **extra)
            code = rv if isinstance(rv, int) else 0
        except click.exceptions.Exit as e:
            code = e.exit_code
        except click.Abort:
            click.echo("Error: aborted.", err=True)
            code = 130
        except click.ClickException as e:
            click.echo(f"Error: {e.format_message()}", err=True)
            code = e.exit_code
        except AttnkitError as e:
            click.echo(f"Error: {e}", err=True)
            code = e.exit_code
        except KeyboardInterrupt:
            click.echo("Error: interrupted; nothing was left half-written.", err=True)
            code = 130
        except Exception as e:  # a bug: still one line, traceback on request
            if os.environ.get("ATTNKIT_DEBUG"):
                traceback.print_exc()
            first = str(e).strip().splitlines()[0][:300] if str(e).strip() else ""
            click.echo(
                f"Error: internal error {type(e).__name__}: {first} (set ATTNKIT_DEBUG=1 for the traceback)", err=True
            )
            code = 1
        if standalone_mode:
            sys.exit(code)
        return code


def _console(stderr: bool = False):
    from rich.console import Console

    return Console(stderr=stderr, soft_wrap=False, width=max(160, Console().width))


def _progress(msg: str) -> None:
    from rich.markup import escape

    _console(stderr=True).print(f"[dim]• {escape(msg)}[/]")


def _tolerance_option(values: tuple[str, ...], flag: str) -> dict[str, float] | None:
    """``--atol 1e-3`` or ``--atol fp16=1e-2`` (repeatable); the same key twice with two values conflicts."""
    out: dict[str, float] = {}
    for v in values:
        key, _, num = v.rpartition("=")
        key = key or "*"
        try:
            value = float(num)
        except ValueError:
            raise AttnkitError(f"`{v}` is not a number or PRECISION=NUMBER.", flag=flag) from None
        if value < 0:
            raise AttnkitError(f"`{v}` is negative; tolerances are >= 0.", flag=flag)
        if key in out and out[key] != value:
            raise AttnkitError(
                f"conflicting values for {key if key != '*' else 'all precisions'}: {out[key]:g} and {value:g}.",
                flag=flag,
                hint="Give each precision once.",
            )
        out[key] = value
    return out or None


@click.group(cls=AttnkitGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="attnkit")
def cli():
    """Export, verify and benchmark Keras attention models (SavedModel, ONNX)."""


@cli.command()
@click.option("--seq", default=128, show_default=True, help="Sequence length for the FLOPs column.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def models(seq: int, as_json: bool):
    """List the presets with dims, parameter count and FLOPs per sequence."""
    from . import list_models
    from .render import models_table

    rows = list_models(seq)
    if as_json:
        click.echo(json.dumps(rows, indent=2))
    else:
        _console().print(models_table(rows))


_import_option = click.option(
    "--import",
    "imports",
    multiple=True,
    metavar="MODULE",
    help="Module or .py file registering custom layers (repeatable).",
)


@cli.command()
@click.argument("model")
@click.option("--out", type=click.Path(path_type=Path), help="Export directory [default: artifacts/<name>].")
@click.option(
    "--format", "formats", default="savedmodel,onnx", show_default=True, help="Comma list of: savedmodel, onnx."
)
@click.option(
    "--precision",
    default="fp32",
    show_default=True,
    help="Policy the SavedModel is traced under: fp32, bf16 (mixed_bfloat16), fp16 (mixed_float16).",
)
@click.option("--opset", default=17, show_default=True, type=int, help="ONNX opset (tf2onnx supports 13-18).")
@_import_option
@click.option("--seed", default=0, show_default=True, type=int, help="Weight seed (presets) and input seed.")
@click.option("--force", is_flag=True, help="Replace an existing non-empty --out.")
@click.option("--unsafe", is_flag=True, help="Allow unsafe Keras deserialisation (Lambda layers). Trusted files only.")
@click.option("--no-check", is_flag=True, help="Skip the agreement check after exporting.")
def export(model, out, formats, precision, opset, imports, seed, force, unsafe, no_check):
    """Export MODEL (a preset name or a .keras file) and check the artifacts agree with it."""
    from .errors import AgreementError
    from .export_api import export as run_export

    try:
        result = run_export(
            model,
            out,
            formats=formats,
            precision=precision,
            opset=opset,
            imports=imports,
            seed=seed,
            force=force,
            unsafe=unsafe,
            check=not no_check,
            progress=_progress,
        )
    except AgreementError as e:
        _print_report_of(e)
        raise
    if result.report is not None:
        from .render import agreement_table

        _console().print(agreement_table(result.report))
    click.echo(f"exported {', '.join(a.path for a in result.manifest.artifacts)} to {result.out}")


def _print_report_of(error) -> None:
    report = getattr(error, "report", None)
    if report is not None:
        from .render import agreement_table

        _console().print(agreement_table(report))


@cli.command()
@click.argument("directory", metavar="DIR", type=click.Path(path_type=Path))
@click.option("--backends", default="", help="Comma list of backends [default: one per artifact].")
@click.option(
    "--atol", multiple=True, metavar="[PREC=]X", help="Element-wise absolute tolerance, e.g. 1e-4 or fp16=1e-2."
)
@click.option(
    "--rtol", multiple=True, metavar="[PREC=]X", help="Element-wise relative tolerance, e.g. 1e-3 or bf16=0.1."
)
@click.option("--seed", default=0, show_default=True, type=int, help="Seed of the random inputs.")
@click.option("--json", "json_path", type=click.Path(path_type=Path), help="Write the report as JSON to this file.")
def verify(directory, backends, atol, rtol, seed, json_path):
    """Check every artifact in DIR against the eager fp32 Keras model; exit 0 only if all agree."""
    from .errors import AgreementError
    from .render import agreement_table
    from .verification import verify as run_verify

    report = run_verify(
        directory,
        backends=[b for b in backends.split(",") if b] or None,
        atol=_tolerance_option(atol, "--atol"),
        rtol=_tolerance_option(rtol, "--rtol"),
        seed=seed,
        progress=_progress,
    )
    _console().print(agreement_table(report))
    if json_path:
        from .exporters.manifest import write_text_atomic

        write_text_atomic(json_path, json.dumps(report.to_dict(), indent=2), flag="--json")
    if not report.ok:
        raise AgreementError(f"{sum(not r.passed for r in report.results)} check(s) failed in `{directory}`.")
    click.echo(f"all {len(report.results)} checks passed")


def main() -> None:
    cli(prog_name="attnkit")


if __name__ == "__main__":
    main()
