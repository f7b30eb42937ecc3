"""A score matrix as a table whose cells are coloured by value (accuracy matrix, CKA)."""

from __future__ import annotations

from rich.text import Text
from textual import events
from textual.widgets import DataTable

from ..data import fmt_score, fmt_signed
from .style import Palette


def value_range(matrix: list[list[float | None]], default: tuple[float, float] = (0.0, 100.0)) -> tuple[float, float]:
    values = [v for row in matrix for v in row if v is not None]
    return (min(values), max(values)) if values else default


def legend(palette: Palette, lo: float, hi: float, digits: int = 1, width: int = 12) -> Text:
    """"lo ▆▆▆▆ hi": the colour scale of a heatmap."""
    text = Text(f"{lo:.{digits}f} ", style=palette.muted.hex)
    for i in range(width):
        value = lo + (hi - lo) * i / max(1, width - 1)
        text.append(" ", style=palette.heat(value, lo, hi))
    text.append(f" {hi:.{digits}f}", style=palette.muted.hex)
    return text


class HeatmapTable(DataTable):
    """Rows and columns labelled, each cell's background on an error-to-success scale."""

    DEFAULT_CSS = """
    HeatmapTable { height: auto; max-height: 100%; }
    """

    def __init__(self, **kwargs):
        super().__init__(cursor_type="cell", zebra_stripes=False, **kwargs)
        self.fixed_columns = 1
        self._shown: tuple[tuple, dict] | None = None
        self._drawn_for = 0  # the width the content was laid out for (0: before the first layout)

    def show(self, row_labels: list[str], col_labels: list[str], matrix: list[list[float | None]], *,
             lo: float, hi: float, digits: int = 1, footer: tuple[str, list[float | None]] | None = None,
             scales: list[tuple[float, float]] | None = None) -> None:
        """Replace the table's content; `footer` adds a row of signed differences (e.g. forgetting).
        `scales` colours each column on its own (lo, hi) instead of the matrix's `lo`..`hi`.

        Columns narrow (names cut with an ellipsis) so that the whole matrix fits the width it
        has when it can; otherwise the table scrolls sideways. Shown before the table has its
        final width (a screen still being laid out), it is drawn again when the width arrives.
        """
        self._shown = ((row_labels, col_labels, matrix), dict(lo=lo, hi=hi, digits=digits, footer=footer,
                                                              scales=scales))
        palette = Palette.of(self.app)
        cursor = self.cursor_coordinate
        self.clear(columns=True)
        labels = row_labels + ([footer[0]] if footer else [])
        label_width = min(16, max((len(label) for label in labels), default=4))
        self._drawn_for = self.size.width
        available = (self.size.width or self.app.size.width) - 1
        fit = (available - label_width - 2) // max(1, len(col_labels)) - 2
        width = max(4 + digits, min(16, fit, max((len(c) for c in col_labels), default=0)))
        self.add_column(Text(""), key="_row", width=label_width)
        for j, name in enumerate(distinct_labels(col_labels, width)):
            self.add_column(Text(name, justify="right"), key=f"c{j}", width=width)
        for i, label in enumerate(row_labels):
            row = matrix[i] if i < len(matrix) else []
            cells = [Text(_cut(label, label_width), style=palette.muted.hex)]
            for j in range(len(col_labels)):
                value = row[j] if j < len(row) else None
                c_lo, c_hi = scales[j] if scales and j < len(scales) else (lo, hi)
                cells.append(Text(fmt_score(value, digits).rjust(width) if value is not None else "·".rjust(width),
                                  style=palette.heat(value, c_lo, c_hi) if value is not None else palette.muted.hex))
            self.add_row(*cells, key=f"r{i}")
        if footer is not None:
            label, values = footer
            cells = [Text(_cut(label, label_width), style=f"italic {palette.muted.hex}")]
            for v in values + [None] * (len(col_labels) - len(values)):
                colour = palette.muted if v is None else palette.error if v > 0.05 else palette.success
                cells.append(Text(fmt_signed(None if v is None else -v, digits).rjust(width), style=colour.hex))
            self.add_row(*cells, key="footer")
        if self.row_count:
            self.move_cursor(row=min(cursor.row, self.row_count - 1), column=max(1, cursor.column), animate=False)


    def on_resize(self, event: events.Resize) -> None:
        if self._shown is not None and event.size.width and event.size.width != self._drawn_for:
            args, kwargs = self._shown
            self.show(*args, **kwargs)


def _cut(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def _shorten(name: str, width: int) -> str:
    """'caption-scene' -> 'c-scene': every part but the last cut to its first letter, then cut."""
    parts = [p for p in name.replace("_", "-").split("-") if p]
    if len(parts) > 1:
        name = "-".join([p[0] for p in parts[:-1]] + [parts[-1]])
    return _cut(name, width)


def distinct_labels(names: list[str], width: int) -> list[str]:
    """Column labels of at most `width` characters that tell the names apart.

    Names cut with an ellipsis when the cut ones still differ; otherwise names made of parts
    (``caption-scene``, ``caption-style``) keep their last part (``c-scene``, ``c-style``); any
    label still shared ends with the column's number."""
    cut = [_cut(n, width) for n in names]
    if len(set(cut)) == len(cut):
        return cut
    short = [_shorten(n, width) if cut.count(c) > 1 else c for n, c in zip(names, cut)]
    out = []
    for j, label in enumerate(short):
        if short.count(label) > 1:
            tag = str(j + 1)
            label = label[: max(1, width - len(tag) - 1)].rstrip("…") + "…" + tag
        out.append(label)
    return out
