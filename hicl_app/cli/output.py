"""Terminal output: data on stdout (tables or --json), messages on stderr."""

from __future__ import annotations

import json
from datetime import datetime

import click


def _default(obj):
    if isinstance(obj, datetime):
        return obj.isoformat()
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def emit_json(obj) -> None:
    click.echo(json.dumps(obj, indent=2, default=_default, ensure_ascii=False))


def info(message: str) -> None:
    click.echo(message, err=True)


def fmt_num(value, digits: int = 2) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def table(headers: list[str], rows: list[list], *, align_right: set[int] | None = None) -> str:
    """A plain aligned table; numbers right-aligned."""
    cells = [[fmt_num(c) for c in row] for row in rows]
    widths = [len(h) for h in headers]
    for row in cells:
        for i, c in enumerate(row):
            widths[i] = max(widths[i], len(c))
    right = align_right if align_right is not None else {
        i for i in range(len(headers)) if rows and all(isinstance(r[i], (int, float)) or r[i] is None for r in rows)
    }

    def line(values):
        return "  ".join(v.rjust(widths[i]) if i in right else v.ljust(widths[i]) for i, v in enumerate(values)).rstrip()

    out = [line(headers), line(["-" * w for w in widths])]
    out += [line(row) for row in cells]
    return "\n".join(out)
