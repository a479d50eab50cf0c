"""The ``attnkit`` click group (commands register on it from their modules)."""

from __future__ import annotations

import click

from .._version import __version__
from .support import AttnkitGroup

#: spellings of earlier versions: ``bench --generate`` and ``bench --server`` were modes of ``bench``; they are
#: commands now. The old spelling still works and says the new one (a warning line on stderr).
ALIASES = {("bench", "--generate"): "bench-generate", ("bench", "--server"): "loadtest"}


class Commands(AttnkitGroup):
    """The group: old spellings are rewritten to their commands before click parses them."""

    def parse_args(self, ctx, args):
        if args and args[0] == "bench":
            for (_, flag), command in ALIASES.items():
                if flag in args[1:] or any(a.startswith(flag + "=") for a in args[1:]):
                    click.echo(f"Warning: `attnkit bench {flag}` is `attnkit {command}` now; running that.", err=True)
                    args = [command] + _without(args[1:], flag, keep_value=flag == "--server")
                    break
        return super().parse_args(ctx, args)


def _without(args: list[str], flag: str, keep_value: bool) -> list[str]:
    """``args`` without the mode flag (a ``--server URL`` keeps its value as ``loadtest``'s ``--server``)."""
    if keep_value:
        return args
    return [a for a in args if a != flag]


@click.group(cls=Commands, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="attnkit")
def cli():
    """Export, verify, benchmark and package Keras attention models.

    SavedModel (TF Serving), ONNX (fp32/fp16/int8/q8/q4), OpenVINO IR, TensorRT plans, Triton repositories.

    \b
    attnkit models                         list the presets
    attnkit export encoder-tiny            SavedModel + ONNX in artifacts/encoder-tiny, agreement checked
    attnkit verify artifacts/encoder-tiny  every artifact vs the eager fp32 model
    attnkit bench encoder-tiny --out b     every backend vs the eager baseline
    attnkit bench-generate decoder-small   token by token with the KV cache
    attnkit bench-arrivals DIR --rate 8    requests arriving: continuous vs static batching
    attnkit loadtest MODEL --server URL    a running Triton / KServe v2 server under load
    attnkit run encoder-tiny               all of it, plus Triton/TF Serving layouts and report.md
    attnkit env                            what this machine can run
    """
