"""Refreshing a DataTable in place, so live updates neither flicker nor lose the cursor."""

from __future__ import annotations

from typing import Sequence

from rich.text import Text
from textual.widgets import DataTable


def refill(table: DataTable, labels: Sequence[str], rows: Sequence[tuple[str, Sequence[Text]]]) -> None:
    """Show `rows` ((key, cells) pairs) under the column `labels`.

    Columns get explicit widths measured here: DataTable's own measuring happens later, on
    idle, and cells it rendered before that stay cut to the header's width. When the keys
    and widths are unchanged the cells are updated in place; otherwise the table is rebuilt
    and the cursor stays on the same key if it can.
    """
    widths = [len(label) for label in labels]
    for _, cells in rows:
        for i, cell in enumerate(cells):
            widths[i] = max(widths[i], cell.cell_len)
    keys = [key for key, _ in rows]
    current = [row.key.value for row in table.ordered_rows]
    if keys == current and widths == [column.width for column in table.ordered_columns]:
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
