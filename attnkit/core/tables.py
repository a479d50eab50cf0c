"""Rich tables that fit the terminal: columns carry a priority, and the least important ones are
dropped until the table fits (rich alone would squeeze every column to "on…" on 80 columns).

rich can shrink and wrap columns, and it can hide none of them by itself; this small layer decides
which ones to show, so the same column list serves a 200-column terminal and an 80-column log.
"""

from __future__ import annotations

from dataclasses import dataclass

from rich import box
from rich.table import Table
from rich.text import Text


@dataclass(frozen=True)
class Column:
    header: str
    priority: int = 0  # 0 = always shown; higher numbers are dropped first when space runs out
    justify: str = "left"


#: free text (a failure, a skip reason) wraps; it counts as at most this wide when deciding what fits
WRAP_AT = 24


def _cell_len(markup: str) -> int:
    return min(WRAP_AT, max((Text.from_markup(line).cell_len for line in str(markup).splitlines() or [""]), default=0))


def _footnotes(rows):
    """A message row (a skip reason, an error) keeps its kind in the table and moves its reason under it, once
    per distinct reason: in an 80-column log a reason in a cell wraps into a tall column."""
    notes: list[str] = []
    out = []
    for r in rows:
        if isinstance(r, list):
            out.append(r)
            continue
        lead, message = r
        kind, sep, reason = message.partition(": ")
        if not sep:
            out.append(r)
            continue
        note = f"({notes.index(reason) + 1})" if reason in notes else f"({notes.append(reason) or len(notes)})"
        out.append((lead, f"{kind} {note}"))
    return out, [f"({i}) {n}" for i, n in enumerate(notes, 1)]


def fitted_table(
    title: str,
    columns: list[Column],
    rows: list[list[str] | tuple[list[str], str]],
    width: int | None = None,
    caption: str | None = None,
) -> Table:
    """A table of ``rows`` that fits ``width`` (None: every column, heavy borders).

    Args:
        rows: a list of cells per column, or ``(leading cells, message)``: a row that only carries a
            message (a skip reason or an error) after its leading key cells.
    """
    keep = list(range(len(columns)))
    narrow = width is not None

    def needed(idx: list[int]) -> int:
        total = 0
        for i in idx:
            cells = [r[i] if isinstance(r, list) else (r[0][i] if i < len(r[0]) else "") for r in rows]
            total += max([_cell_len(columns[i].header)] + [_cell_len(c) for c in cells]) + 3  # padding, divider
        return total + 1  # the last edge

    if narrow:
        for priority in sorted({c.priority for c in columns if c.priority}, reverse=True):
            if needed(keep) < width:
                break
            keep = [i for i in keep if columns[i].priority != priority]
    rows, notes = _footnotes(rows)
    caption = "\n".join([caption or "", *notes]).strip() or None
    table = Table(title=title, caption=caption, box=box.SIMPLE_HEAD if narrow else box.HEAVY_HEAD)
    for i in keep:
        table.add_column(columns[i].header, justify=columns[i].justify, overflow="fold")
    for r in rows:
        if isinstance(r, list):
            table.add_row(*[r[i] for i in keep])
            continue
        lead, message = r
        cells = [lead[i] if i < len(lead) else "" for i in keep]
        slot = next((k for k, i in enumerate(keep) if i >= len(lead)), len(cells) - 1)
        cells[slot] = message
        table.add_row(*cells)
    return table
