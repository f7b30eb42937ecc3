"""Refreshing a DataTable in place, so live updates neither flicker nor lose the cursor, and
fitting its columns to the width it has: the important ones first, whole, the rest dropped."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

from rich.text import Text
from textual.widgets import DataTable


@dataclass(frozen=True)
class Fit:
    """How a table's columns give way when they do not fit.

    `priority` lists the column indices from the most to the least important (a column not
    listed comes last); the first `keep` of them are the ones the table is for. `shrink`
    maps a column to the narrowest it may be cut to (with an ellipsis, or cropped for a
    column in `crop`, such as a progress bar followed by its step count).
    """

    priority: tuple[int, ...]
    keep: int = 0
    shrink: dict[int, int] = field(default_factory=dict)
    crop: frozenset[int] = frozenset()


def fit_columns(widths: list[int], available: int, fit: Fit, padding: int = 1) -> list[int | None]:
    """Widths that fit `available` cells, None for a column left out.

    First the columns outside the first `keep` go, least important first, until the rest fit
    whole; then `shrink` columns are cut down to their minimum; then, if it must, columns
    go in priority order from the end, and the room left widens the cut columns back.
    Nothing changes when everything fits.
    """
    out: list[int | None] = list(widths)
    order = list(fit.priority) + [i for i in range(len(widths)) if i not in fit.priority]

    def used() -> int:
        return sum(w + 2 * padding for w in out if w is not None)

    for i in reversed(order[fit.keep:]):  # the optional columns, least important first
        if used() <= available:
            return out
        out[i] = None
    for i in sorted((i for i in fit.shrink if out[i] is not None), key=lambda i: -out[i]):
        if used() <= available:
            return out
        out[i] = fit.shrink[i] if i in fit.crop else max(fit.shrink[i], out[i] - (used() - available))
    for i in reversed(order):
        if used() <= available or sum(w is not None for w in out) == 1:
            break
        out[i] = None
    for i in order:  # give back what dropping freed to the columns that were cut
        if out[i] is not None and out[i] < widths[i] and used() < available:
            room = available - used()
            if i in fit.crop and room < widths[i] - out[i]:
                continue  # a cropped column is whole or at its minimum: never a half-cut number
            out[i] += min(widths[i] - out[i], room)
    return out


def refill(table: DataTable, labels: Sequence[str], rows: Sequence[tuple[str, Sequence[Text]]],
           fit: Fit | None = None) -> None:
    """Show `rows` ((key, cells) pairs) under the column `labels`.

    Columns get explicit widths measured here: DataTable's own measuring happens later, on
    idle, and cells it rendered before that stay cut to the header's width. With `fit`, and
    once the table has a width, columns are cut or dropped so that the table needs no
    sideways scrolling (call again on a resize). When the keys and widths are unchanged the
    cells are updated in place; otherwise the table is rebuilt and the cursor stays on the
    same key if it can.
    """
    widths = [len(label) for label in labels]
    for _, cells in rows:
        for i, cell in enumerate(cells):
            widths[i] = max(widths[i], cell.cell_len)
    available = table.size.width - 1  # room for the vertical scrollbar
    if fit is not None and available > 0:
        fitted = fit_columns(widths, available, fit, table.cell_padding)
        keep = [i for i, w in enumerate(fitted) if w is not None]
        labels = [_cut(Text(labels[i]), fitted[i]).plain for i in keep]
        rows = [(key, [_cut(cells[i], fitted[i], "crop" if i in fit.crop else "ellipsis") for i in keep])
                for key, cells in rows]
        widths = [fitted[i] for i in keep]
    keys = [key for key, _ in rows]
    current = [row.key.value for row in table.ordered_rows]
    if keys == current and widths == [column.width for column in table.ordered_columns] \
            and list(labels) == [column.label.plain for column in table.ordered_columns]:
        for key, cells in rows:
            for column, cell in zip(table.ordered_columns, cells):
                if table.get_cell(key, column.key) != cell:
                    table.update_cell(key, column.key, cell)
        return
    selected = selected_key(table)
    table.clear(columns=True)
    for i, (label, width) in enumerate(zip(labels, widths)):
        table.add_column(label, width=width, key=f"c{i}")
    for key, cells in rows:
        table.add_row(*cells, key=key)
    if selected in keys:
        table.move_cursor(row=keys.index(selected), animate=False)


def _cut(cell: Text, width: int, overflow: str = "ellipsis") -> Text:
    if cell.cell_len <= width:
        return cell
    cut = cell.copy()
    cut.truncate(width, overflow=overflow)
    return cut


def selected_key(table: DataTable) -> str | None:
    """The key of the row under the cursor, or None in an empty table."""
    if not table.row_count:
        return None
    try:
        return table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value
    except Exception:  # cursor outside the rows while the table is rebuilt
        return None


def clip(text: str, width: int) -> Text:
    """User text (never parsed as markup), cut to `width` with an ellipsis."""
    return Text(text if len(text) <= width else text[: width - 1] + "…")


def num(value: str, style: str = "") -> Text:
    return Text(value, style=style, justify="right")
