"""Continual-learning metrics of an accuracy matrix.

The matrix ``R`` has one row per stage and one column per task: ``R[t][j]`` is the score
(0-100) on task j's test set after training on task t, ``None`` (or NaN) for a cell that was not
evaluated. Below tasks are numbered 1..T as in the papers; in code they are 0-based.

Definitions:

* ``mft`` (plasticity)   = mean over j of ``R[j][j]``.
* ``last`` (MFN)         = mean over j of ``R[T][j]``.
* ``avg`` (MAA)          = mean over t of (mean over j <= t of ``R[t][j]``).
* ``bwt``                = mean over j < T of ``R[T][j] - R[j][j]``.
* ``forgetting``         = mean over j < T of (max over t in [j, T-1] of ``R[t][j]``) - ``R[T][j]``.
* ``fwt``                = mean over j > 1 of ``R[j-1][j] - zero_shot[j]`` (needs the base
  model's zero-shot scores and the evaluation of the next, not yet trained, task).

Rules for real, untidy matrices:

* **Missing cells are ignored**: every mean is over the terms whose cells are all present; a
  metric with no such term is ``None``.
* **Partial matrices** (a run still in progress, fewer rows than tasks, or a last row still
  being evaluated): the metrics describe the run as of its *last complete row*, the last row
  ``L`` in which every task trained so far (columns 0..L) has a score. ``T`` above is then
  ``L``, rows after ``L`` are left out of every metric, and ``last`` is the mean of row ``L``
  over tasks 0..L. When no row is complete, the last row with any score stands in for it.
  (A final row with a cell that will never be filled therefore reads as still running, and the
  previous complete row is used.)
* **Undefined metrics are None**: ``bwt`` and ``forgetting`` need two stages, ``fwt`` needs
  ``zero_shot``, and everything is ``None`` for an empty matrix.
* **Joint training** (one stage trained on all tasks) gives a matrix with one row and several
  columns. Then ``last`` = ``avg`` = the mean of that row (over its present cells) and the
  other metrics, which describe a sequence, are ``None``. ``compute`` reads any 1 x n matrix
  with n > 1 this way unless told ``joint=False``.

Pure Python: no torch or numpy, so the CLI can import it cheaply.
"""

from __future__ import annotations

import csv
import math
import os
from typing import Iterable, Sequence

__all__ = ["METRICS", "compute", "general_retention", "read_csv", "format_table", "format_metrics"]

#: The keys of :func:`compute`'s result, in display order.
METRICS = ("mft", "last", "avg", "bwt", "forgetting", "fwt")

Matrix = list[list[float | None]]

_MISSING_WORDS = {"", "nan", "none", "na", "n/a", "-", "\u2014"}


def _cell(value, where: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, (str, bytes, bool)):
        raise ValueError(f"{where}: {value!r} is not a number")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{where}: {value!r} is not a number") from None
    if math.isnan(number):
        return None
    if math.isinf(number):
        raise ValueError(f"{where}: {value!r} is not a finite number")
    return number


def _clean(matrix: Iterable[Iterable]) -> Matrix:
    rows = []
    for t, row in enumerate(matrix):
        if isinstance(row, (str, bytes)):
            raise ValueError(f"row {t} is a string, not a row of numbers")
        rows.append([_cell(v, f"row {t}, column {j}") for j, v in enumerate(row)])
    width = max((len(r) for r in rows), default=0)
    return [r + [None] * (width - len(r)) for r in rows]


def _mean(values: Iterable[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return sum(present) / len(present) if present else None


def last_complete_row(matrix: Sequence[Sequence[float | None]]) -> int | None:
    """Index of the row that :func:`compute` treats as the latest stage, or None.

    The last row whose cells 0..t are all present; failing that, the last row with any of them.
    """
    rows = _clean(matrix)
    complete = [t for t, row in enumerate(rows) if all(v is not None for v in row[: t + 1])]
    if complete:
        return complete[-1]
    started = [t for t, row in enumerate(rows) if any(v is not None for v in row[: t + 1])]
    return started[-1] if started else None


def compute(
    matrix: Sequence[Sequence[float | None]],
    zero_shot: Sequence[float | None] | None = None,
    *,
    joint: bool | None = None,
) -> dict[str, float | None]:
    """The metrics ``mft, last, avg, bwt, forgetting, fwt`` of ``matrix``.

    ``matrix[t][j]``: score on task j after training task t (``None``/NaN if not evaluated);
    rows may be shorter than the number of tasks (missing cells at the end). ``zero_shot[j]``:
    the base model's score on task j, for ``fwt``; its length must be the number of columns.
    ``joint``: read the matrix as one joint-training stage (default: when it has one row and
    several columns). Partial matrices are measured up to their last complete row (see the
    module docstring). Raises ``ValueError`` for non-numeric cells, more rows than columns in a
    sequential matrix, several rows in a joint one, or a ``zero_shot`` of the wrong length.
    """
    rows = _clean(matrix)
    n_rows = len(rows)
    n_tasks = len(rows[0]) if rows else 0
    result: dict[str, float | None] = {key: None for key in METRICS}

    zs: list[float | None] | None = None
    if zero_shot is not None:
        zs = [_cell(v, f"zero_shot[{j}]") for j, v in enumerate(zero_shot)]
        if n_rows and len(zs) != n_tasks:
            raise ValueError(
                f"zero_shot has {len(zs)} scores but the matrix has {n_tasks} tasks (columns)"
            )

    if n_rows == 0 or n_tasks == 0:
        return result
    if joint is None:
        joint = n_rows == 1 and n_tasks > 1
    if joint:
        if n_rows != 1:
            raise ValueError(f"a joint-training matrix has one row, not {n_rows}")
        result["last"] = result["avg"] = _mean(rows[0])
        return result
    if n_rows > n_tasks:
        raise ValueError(
            f"the matrix has {n_rows} rows (stages) but only {n_tasks} columns (tasks); "
            "a sequential run has at most one stage per task"
        )

    last = last_complete_row(rows)
    if last is None:
        return result
    R = rows[: last + 1]

    result["mft"] = _mean(R[j][j] for j in range(last + 1))
    result["last"] = _mean(R[last][: last + 1])
    result["avg"] = _mean(_mean(R[t][: t + 1]) for t in range(last + 1))
    if last > 0:
        result["bwt"] = _mean(
            R[last][j] - R[j][j]
            for j in range(last)
            if R[last][j] is not None and R[j][j] is not None
        )
        drops = []
        for j in range(last):
            earlier = [R[t][j] for t in range(j, last) if R[t][j] is not None]
            if earlier and R[last][j] is not None:
                drops.append(max(earlier) - R[last][j])
        result["forgetting"] = _mean(drops)
    if zs is not None:
        gains = []
        for j in range(1, min(last + 1, n_tasks - 1) + 1):
            before = R[j - 1][j]
            if before is not None and zs[j] is not None:
                gains.append(before - zs[j])
        result["fwt"] = _mean(gains)
    return result


def general_retention(base: float | None, after: Sequence[float | None]) -> dict[str, float | None]:
    """How a held-out general task fared over the sequence (base-model degradation).

    ``base``: its score before any training (the zero-shot row); ``after[t]``: its score after
    stage t (``None`` where not evaluated). Returns ``base``, ``last`` (the score after the
    latest evaluated stage), ``retention`` = ``last - base`` in points (negative: the model lost
    general ability) and ``ratio`` = ``last / base`` (None when base is 0 or either is missing).
    """
    base = _cell(base, "base")
    scores = [_cell(v, f"after[{t}]") for t, v in enumerate(after)]
    present = [v for v in scores if v is not None]
    last = present[-1] if present else None
    both = base is not None and last is not None
    return {"base": base, "last": last, "retention": last - base if both else None,
            "ratio": last / base if both and base != 0 else None}


def _parse_csv_cell(text: str, path, line: int, column: int) -> float | None:
    word = text.strip()
    if word.casefold() in _MISSING_WORDS:
        return None
    try:
        value = float(word)
    except ValueError:
        raise ValueError(
            f"{path}: line {line}, column {column}: {word!r} is not a number "
            "(leave the cell empty or write nan for a task not evaluated)"
        ) from None
    if math.isnan(value):
        return None
    if math.isinf(value):
        raise ValueError(f"{path}: line {line}, column {column}: {word!r} is not a finite number")
    return value


def _is_numeric_row(cells: list[str]) -> bool:
    for cell in cells:
        word = cell.strip()
        if word.casefold() in _MISSING_WORDS:
            continue
        try:
            float(word)
        except ValueError:
            return False
    return True


def read_csv(path: str | os.PathLike) -> tuple[list[str] | None, Matrix]:
    """Read an accuracy matrix from a CSV file: ``(task_names or None, matrix)``.

    Row t (after the optional header) is the scores after training task t; column j is task j.
    An empty cell, ``nan`` (any case), ``-`` or ``—`` is a cell not evaluated (``None``). The
    first row is a header of task names when any of its cells is not a number. Blank lines and
    lines starting with ``#`` are skipped. Raises ``ValueError`` naming the line for a cell
    that is not a number, an empty or repeated task name, or a row with a different number of
    cells than the first.
    """
    names: list[str] | None = None
    matrix: Matrix = []
    width: int | None = None
    width_line = 0
    with open(path, newline="", encoding="utf-8-sig") as handle:
        reader = csv.reader(handle)
        for cells in reader:
            line = reader.line_num
            if not cells or all(not c.strip() for c in cells) and len(cells) <= 1:
                continue
            if cells[0].lstrip().startswith("#"):
                continue
            if width is None:
                width, width_line = len(cells), line
                if not _is_numeric_row(cells):
                    names = [c.strip() for c in cells]
                    for j, name in enumerate(names, start=1):
                        if not name:
                            raise ValueError(f"{path}: line {line}, column {j}: empty task name")
                    if len(set(names)) != len(names):
                        dup = sorted({x for x in names if names.count(x) > 1})
                        raise ValueError(f"{path}: line {line}: repeated task names: {dup}")
                    continue
            if len(cells) != width:
                raise ValueError(
                    f"{path}: line {line}: {len(cells)} cells, but line {width_line} has {width}"
                )
            matrix.append(
                [_parse_csv_cell(c, path, line, j) for j, c in enumerate(cells, start=1)]
            )
    if width is None:
        raise ValueError(f"{path}: no rows")
    return names, matrix


def _fmt(value: float | None, digits: int) -> str:
    return "\u2014" if value is None else f"{value:.{digits}f}"


def format_table(
    names: Sequence[str] | None,
    matrix: Sequence[Sequence[float | None]],
    *,
    digits: int = 2,
    row_labels: Sequence[str] | None = None,
) -> str:
    """The matrix as an aligned text table for the terminal (``—`` for a cell not evaluated).

    Columns are the tasks (``names``, or T1..Tn); rows are labelled ``after <task>``, or
    ``joint`` for a 1 x n matrix with n > 1, unless ``row_labels`` are given.
    """
    rows = _clean(matrix)
    n_tasks = max(len(rows[0]) if rows else 0, len(names) if names else 0)
    rows = [r + [None] * (n_tasks - len(r)) for r in rows]
    if names is not None:
        names = [str(x) for x in names]
        if len(names) != n_tasks:
            raise ValueError(f"{len(names)} task names for {n_tasks} columns")
        columns = names
    else:
        columns = [f"T{j + 1}" for j in range(n_tasks)]
    if row_labels is not None:
        labels = [str(x) for x in row_labels]
        if len(labels) != len(rows):
            raise ValueError(f"{len(labels)} row labels for {len(rows)} rows")
    elif len(rows) == 1 and n_tasks > 1:
        labels = ["joint"]
    else:
        labels = [
            f"after {columns[t]}" if t < n_tasks else f"stage {t + 1}" for t in range(len(rows))
        ]
    if n_tasks == 0:
        return "(no scores)"
    texts = [[_fmt(v, digits) for v in row] for row in rows]
    label_width = max([len(x) for x in labels] + [0])
    widths = [max([len(columns[j])] + [len(r[j]) for r in texts]) for j in range(n_tasks)]
    lines = ["  ".join([" " * label_width] + [c.rjust(w) for c, w in zip(columns, widths)])]
    for label, row in zip(labels, texts):
        cells = [c.rjust(w) for c, w in zip(row, widths)]
        lines.append("  ".join([label.ljust(label_width)] + cells))
    return "\n".join(line.rstrip() for line in lines)


def format_metrics(metrics: dict[str, float | None], *, digits: int = 2) -> str:
    """One line ``MFT 85.00  Last 68.33  ...`` of :func:`compute`'s result (``—`` for None)."""
    titles = {
        "mft": "MFT",
        "last": "Last",
        "avg": "Avg",
        "bwt": "BWT",
        "forgetting": "Forgetting",
        "fwt": "FWT",
    }
    return "  ".join(f"{titles[k]} {_fmt(metrics.get(k), digits)}" for k in METRICS)
