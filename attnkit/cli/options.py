"""Option groups declared once and composed by the commands, as Polygraphy's ``tools/args`` does.

Each group is a list of click options (``@GROUP`` adds them to a command) and a ``parse(kwargs)`` that pops
its own values out of the command's keyword arguments and returns them typed (a :class:`StoppingRule`, a
``(batch_sizes, seq_lens)`` pair...). A command therefore declares ``--seed`` or ``--warmup`` by naming the
group, never again by hand, and a value it cannot use is not an option of it (click refuses it).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click

from .types import POSITIVE_INTS, PRECISIONS


@dataclass
class OptionGroup:
    """A named set of options and the function that turns their raw values into what the library takes."""

    name: str
    options: list[Callable] = field(default_factory=list)
    keys: tuple[str, ...] = ()
    parser: Callable[..., Any] | None = None

    def __call__(self, command):
        for option in reversed(self.options):
            command = option(command)
        return command

    def parse(self, kwargs: dict) -> Any:
        """Pop this group's values from ``kwargs``; the parsed value (or a dict of them)."""
        values = {k: kwargs.pop(k) for k in self.keys}
        return self.parser(**values) if self.parser else values


def _model_loading(imports, unsafe) -> dict:
    return {"imports": tuple(imports), "unsafe": unsafe}


MODEL_LOADING = OptionGroup(
    "model loading",
    [
        click.option(
            "--import",
            "imports",
            multiple=True,
            metavar="MODULE",
            help="Module or .py file registering custom layers (repeatable).",
        ),
        click.option(
            "--unsafe",
            is_flag=True,
            help="Allow unsafe Keras deserialisation (Lambda layers) of "
            "model.keras. Trusted files only; never taken from a manifest.",
        ),
    ],  # fmt: skip
    ("imports", "unsafe"),
    _model_loading,
)

#: ``--import`` alone, for commands that never deserialise an export's model.keras
IMPORTS = OptionGroup("imports", MODEL_LOADING.options[:1], ("imports",), lambda imports: tuple(imports))

SEED = OptionGroup(
    "reproducibility",
    [
        click.option(
            "--seed", default=0, show_default=True, type=int, help="Seed of the inputs (and weights of presets)."
        )
    ],
    ("seed",),
    lambda seed: seed,
)


def _shapes(batch_sizes, seq_lens) -> tuple[tuple[int, ...], tuple[int, ...]]:
    return tuple(int(b) for b in batch_sizes), tuple(int(s) for s in seq_lens)


def _batch_sizes_option(default: str) -> Callable:
    return click.option("--batch-sizes", type=POSITIVE_INTS, default=default, show_default=True, help="Batch sizes.")


def batch_sizes(default: str = "1") -> OptionGroup:
    """``--batch-sizes`` alone (generation measures prompt lengths, not sequence lengths)."""
    return OptionGroup(
        "batch sizes",
        [_batch_sizes_option(default)],
        ("batch_sizes",),
        lambda batch_sizes: tuple(map(int, batch_sizes)),
    )


def shapes(default_batches: str = "1,8,32") -> OptionGroup:
    """``--batch-sizes`` and ``--seq-lens`` (every combination is measured)."""
    return OptionGroup(
        "shapes",
        [
            _batch_sizes_option(default_batches),
            click.option("--seq-lens", type=POSITIVE_INTS, default="128", show_default=True, help="Sequence lengths."),
        ],  # fmt: skip
        ("batch_sizes", "seq_lens"),
        _shapes,
    )


def _timing(warmup, min_iterations, min_seconds):
    from ..benchmark.harness import StoppingRule

    return StoppingRule(warmup, min_iterations, min_seconds)


def timing(min_seconds: float = 2.0, warmup: float = 1.0, min_iterations: int = 10) -> OptionGroup:
    """``--warmup``, ``--min-iterations``, ``--min-seconds``: the stopping rule, validated once."""
    return OptionGroup(
        "timing",
        [
            click.option(
                "--warmup", default=warmup, show_default=True, type=float, help="Warm-up seconds per backend and shape."
            ),
            click.option(
                "--min-iterations", default=min_iterations, show_default=True, type=int, help="Timed calls at least."
            ),
            click.option(
                "--min-seconds",
                default=min_seconds,
                show_default=True,
                type=float,
                help="Timed seconds at least (extended, bounded, until the spread is steady).",
            ),
        ],  # fmt: skip
        ("warmup", "min_iterations", "min_seconds"),
        _timing,
    )


BACKEND_PRECISIONS = OptionGroup(
    "precisions",
    [
        click.option(
            "--precision",
            "precisions",
            type=PRECISIONS,
            default="fp32",
            show_default=True,
            help="Comma list of precisions (fp32, bf16, fp16, int8, q8, q4) for backends that support them.",
        ),
        click.option("--threads", type=click.IntRange(min=1), help="Intra-op threads for TensorFlow and ONNX Runtime."),
    ],  # fmt: skip
    ("precisions", "threads"),
)


def _data(data, accuracy_target):
    if accuracy_target is not None and data is None:
        from ..core.errors import AttnkitError

        raise AttnkitError("applies to --data only (the task metric is measured on the user's data).",
                           flag="--accuracy-target", hint="Give --data FILE.npz, or drop --accuracy-target.")  # fmt: skip
    return {"data": str(data) if data else None, "accuracy_target": accuracy_target}


#: ``--data FILE`` (the user's inputs: calibration rows and held-out rows, attnkit.core.data) and the share of
#: fp32's task metric a reduced precision must keep on them
DATA = OptionGroup(
    "data",
    [
        click.option(
            "--data",
            type=click.Path(path_type=Path),
            help="Your inputs: an .npz with one array per model input (and optional labels), or texts (.txt, one per "
            'line; .jsonl, {"text", "label"}) for a model saved with its keras-hub tokenizer. Half the rows (at '
            "most 64) calibrate int8, the rest are held out; every artifact is also checked on them with a task metric.",
        ),
        click.option(
            "--accuracy-target",
            type=click.FloatRange(0.0, 1.0, min_open=True),
            help="Share of fp32's task metric a reduced precision must keep on --data [default: 0.99, MLPerf's rule].",
        ),
    ],  # fmt: skip
    ("data", "accuracy_target"),
    _data,
)


TARGET_HELP = (
    "Where the artifacts will run; decides the int8 scheme and whether OpenVINO int8 is searched by measurement: "
    "portable (any x86-64 CPU with AVX2, and GPUs), host (this machine), cpu-avx2, cpu-avx512, cpu-avx512-vnni, "
    "cpu-amx, or a TensorRT architecture (sm89)."
)


def target(default: str) -> OptionGroup:
    """``--target``: ``export`` ships artifacts elsewhere (default ``portable``); ``bench``, ``bench-generate`` and
    ``run`` measure on this machine (default ``host``), so what they export on the fly is made for it."""
    from ..core.targets import HOST, PORTABLE

    why = {HOST: "this machine, where it measures", PORTABLE: "artifacts that run on any CPU"}.get(default, default)
    return OptionGroup(
        "target",
        [click.option("--target", default=default, help=f"{TARGET_HELP} [default: {default}: {why}].")],
        ("target",),
        _given_or(default),
    )


def _given_or(default: str) -> Callable[[str], str | None]:
    """The value as given, or None where the user left the default (a command that measures an export directory
    refuses a --target given for it, and takes the default for a model it exports on the fly)."""

    def parse(target: str) -> str | None:
        ctx = click.get_current_context(silent=True)
        source = ctx.get_parameter_source("target") if ctx else None
        return None if source in (None, click.core.ParameterSource.DEFAULT) else target

    return parse


def _out_dir(out):
    if out:
        from ..exporters.manifest import check_writable_out

        check_writable_out(out, force=True)
    return out


def out_dir(what: str) -> OptionGroup:
    """``--out DIR``: checked writable before any work; files are written atomically into it."""
    return OptionGroup(
        "output",
        [click.option("--out", type=click.Path(path_type=Path), help=f"Write {what} here.")],
        ("out",),
        _out_dir,
    )


def _json_out(json_out):
    if json_out and json_out != "-":
        from ..exporters.manifest import check_writable_file

        check_writable_file(Path(json_out), "--json")
    return json_out


#: ``--json`` on every command that has it: alone, JSON on stdout instead of tables; ``--json FILE``, the JSON
#: written to FILE (atomically) beside the tables.
JSON = OptionGroup(
    "json",
    [
        click.option(
            "--json",
            "json_out",
            is_flag=False,
            flag_value="-",
            default=None,
            metavar="[FILE]",
            help="Print JSON instead of tables; with FILE, write the JSON there (tables still shown).",
        ),
    ],  # fmt: skip
    ("json_out",),
    _json_out,
)
