"""click parameter types for the CLI's comma lists, with their choices taken from the registries.

A bad item fails in click's own way (``Error: Invalid value for '--backends': ...``): one line that
names the flag and the valid values. Nothing heavy is imported: the backend registry imports only
numpy and the manifest module.
"""

from __future__ import annotations

from collections.abc import Callable

import click


class CommaList(click.ParamType):
    """``a,b,c`` -> ``("a", "b", "c")``; empty lists and empty items are refused.

    Args:
        what: what one item is, for messages (``backend``, ``precision``).
        choices: a callable returning the valid items (read lazily, from a registry), or None.
        check: a callable raising ValueError with a message for an invalid item (instead of choices).
        example: shown when the list is empty.
    """

    name = "list"

    def __init__(
        self,
        what: str,
        choices: Callable[[], list[str] | tuple[str, ...]] | None = None,
        check: Callable[[str], object] | None = None,
        example: str = "",
    ):
        self.what, self.choices, self.check, self.example = what, choices, check, example

    def convert(self, value, param, ctx):
        if isinstance(value, tuple):
            return value
        items = [v.strip() for v in str(value).split(",")]
        if not any(items):
            self.fail(f"is empty; give a comma list of {self.what}s, e.g. {self.example}.", param, ctx)
        if "" in items:
            self.fail(f"`{value}` has an empty item; give e.g. {self.example}.", param, ctx)
        for item in items:
            if self.choices is not None and item not in (valid := self.choices()):
                self.fail(f"`{item}` is not a {self.what}. Valid: {', '.join(valid)}.", param, ctx)
            if self.check is not None:
                try:
                    self.check(item)
                except ValueError as e:
                    self.fail(str(e), param, ctx)
        return tuple(dict.fromkeys(items))

    def get_metavar(self, param, ctx=None):  # click >= 8.2 passes ctx
        return "A,B,..."


def _positive(item: str) -> None:
    try:
        ok = int(item) >= 1
    except ValueError:
        ok = False
    if not ok:
        raise ValueError(f"`{item}` is not a positive integer; give e.g. 1,8,32.")


def _backend(item: str) -> None:
    from ..runtimes.registry import all_backends, split_backend

    # any registered backend; the command refuses one that has no runner for its task, with the reason
    if split_backend(item)[0] not in all_backends():
        raise ValueError(
            f"`{item}` is not a backend. Valid: {', '.join(all_backends())} "
            "(optionally with a precision suffix, e.g. onnxruntime-int8)."
        )


def _precision(item: str) -> None:
    from ..core.names import PRECISIONS
    from ..tracing import _ALIASES

    if _ALIASES.get(item, item) not in PRECISIONS:
        raise ValueError(f"`{item}` is not a precision. Valid: {', '.join(PRECISIONS)}.")


def _formats() -> tuple[str, ...]:
    from ..orchestration.options import FORMATS

    return FORMATS


POSITIVE_INTS = CommaList("positive integer", check=_positive, example="1,8,32")
BACKENDS = CommaList("backend", check=_backend, example="onnxruntime,tf-function")
PRECISIONS = CommaList("precision", check=_precision, example="fp32,int8")
FORMATS = CommaList("format", choices=_formats, example="savedmodel,onnx")


class Tolerance(click.ParamType):
    """``1e-3`` (every precision) or ``fp16=1e-2``; repeatable (``multiple=True``), giving ``(key, value)``
    pairs that :func:`tolerances` merges. Negative, non-numeric and unknown-precision values fail here."""

    name = "tolerance"

    def convert(self, value, param, ctx):
        if isinstance(value, tuple):
            return value
        key, _, num = str(value).rpartition("=")
        try:
            number = float(num)
        except ValueError:
            self.fail(f"`{value}` is not a number or PRECISION=NUMBER.", param, ctx)
        if not number >= 0:
            self.fail(f"`{value}` is negative or NaN; tolerances are >= 0.", param, ctx)
        if key:
            try:
                _precision(key)
            except ValueError as e:
                self.fail(str(e), param, ctx)
        return (key or "*", number)

    def get_metavar(self, param, ctx=None):
        return "[PREC=]X"


def tolerances(pairs, flag: str) -> dict[str, float] | None:
    """Repeated ``--atol`` values -> ``{precision or "*": value}``; one key with two values conflicts."""
    from ..core.errors import AttnkitError

    out: dict[str, float] = {}
    for key, value in pairs:
        if key in out and out[key] != value:
            raise AttnkitError(
                f"conflicting values for {key if key != '*' else 'all precisions'}: {out[key]:g} and {value:g}.",
                flag=flag,
                hint="Give each precision once.",
            )
        out[key] = value
    return out or None


TOLERANCE = Tolerance()
