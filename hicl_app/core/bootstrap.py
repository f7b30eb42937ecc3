"""Paired bootstrap confidence intervals of the difference between two runs' metrics.

A metric of a run (MFT, Last, Avg, BWT, Forgetting; see :mod:`hicl_app.core.clmetrics`) is a
function of its accuracy matrix, and each cell ``R[t][j]`` is the mean of per-sample scores on
task j's test set. Both runs of a comparison are scored on the same test samples, so their
difference is measured *paired*: one bootstrap replicate draws, for every task, ``n_j`` indices
of its test set with replacement, and that one draw is used for every stage's evaluation of the
task in both runs (and for the held-out general task in the same way). Each cell is recomputed
as the mean of its per-sample scores at the drawn indices, each metric is recomputed from the
resampled matrices with :func:`clmetrics.compute`, and the replicate's difference is
``metric(B) - metric(A)``. The interval is the 2.5th and 97.5th percentiles of those
differences (linear interpolation between order statistics). Because the draw is shared, a run
compared with itself has every replicate's difference exactly 0, and so an interval of
exactly [0, 0].

Cells whose task score is not the mean of its per-sample scores (caption tasks: corpus-level
BLEU, and CIDEr-D's idf taken from the whole test set) are resampled through their per-sample
caption scores and shifted by the cell's own gap ``score - mean(per_sample)``, so every
replicate is centred on the score ``hicl metrics`` reports; CIDEr-D's idf is not re-estimated
on each replicate.

``general`` is the held-out general task's score after the latest evaluated stage (the ``last``
of :func:`clmetrics.general_retention`); its difference between runs on the same base is the
difference of their general retention.

Pure Python (no numpy): the CLI and the TUI import it cheaply. A replicate costs one pass over
the drawn indices of each cell, which is fast enough for the few thousand test samples of a run.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from typing import Sequence

from . import clmetrics

__all__ = ["METRICS", "LOWER_IS_BETTER", "Cell", "RunSamples", "Interval", "paired_bootstrap", "percentile"]

#: The metrics compared, in display order.
METRICS = ("mft", "last", "avg", "bwt", "forgetting", "general")
#: Metrics where a smaller value is the better one.
LOWER_IS_BETTER = frozenset({"forgetting"})


@dataclass(frozen=True)
class Cell:
    """One evaluation: the task score (0-100) and its per-sample scores on the same scale, in
    the task's sample order (the order of :attr:`RunSamples.sample_ids`)."""

    score: float
    samples: tuple[float, ...]

    @property
    def offset(self) -> float:
        """``score - mean(samples)``: 0 for the matching scorers, the corpus-level gap for captions."""
        return self.score - math.fsum(self.samples) / len(self.samples)


@dataclass
class RunSamples:
    """A run's evaluations with their per-sample scores.

    ``rows[t][j]``: the cell after stage t on ``tasks[j]`` (None: not evaluated), as in the
    accuracy matrix; ``general[t]``: the held-out general task after stage t (None when the run
    has none or it was not evaluated); ``sample_ids[task]``: the ids of the task's test samples,
    the order every :class:`Cell` of that task follows.
    """

    tasks: list[str]
    rows: list[list[Cell | None]]
    sample_ids: dict[str, list[str]]
    general_task: str | None = None
    general: list[Cell | None] = field(default_factory=list)
    #: one stage trained on every task (read as :func:`clmetrics.compute` reads a joint matrix);
    #: None: decided from the matrix's shape, as ``compute`` does
    joint: bool | None = None

    def matrix(self) -> list[list[float | None]]:
        return [[c.score if c is not None else None for c in row] for row in self.rows]


@dataclass(frozen=True)
class Interval:
    """``diff = b - a`` with its percentile interval [low, high]; None where a metric is undefined."""

    a: float | None
    b: float | None
    diff: float | None
    low: float | None
    high: float | None

    @property
    def excludes_zero(self) -> bool:
        return self.low is not None and (self.low > 0 or self.high < 0)


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """The q-quantile (0 <= q <= 1) of sorted values, interpolating linearly between neighbours."""
    if not sorted_values:
        raise ValueError("percentile of no values")
    pos = q * (len(sorted_values) - 1)
    lo = math.floor(pos)
    hi = min(lo + 1, len(sorted_values) - 1)
    frac = pos - lo
    if frac == 0 or sorted_values[lo] == sorted_values[hi]:
        return sorted_values[lo]
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * frac


def _metrics(rows: list[list[float | None]], general: float | None, joint: bool | None) -> dict[str, float | None]:
    while rows and all(v is None for v in rows[-1]):  # stages not evaluated yet, as `hicl metrics` reads them
        rows = rows[:-1]
    out = clmetrics.compute(rows, joint=joint)
    return {**{k: out.get(k) for k in METRICS if k != "general"}, "general": general}


def _last_general(run: RunSamples) -> Cell | None:
    present = [c for c in run.general if c is not None]
    return present[-1] if present else None


def _check_pair(a: RunSamples, b: RunSamples) -> None:
    if sorted(a.tasks) != sorted(b.tasks):
        raise ValueError(f"the runs have different tasks: {', '.join(a.tasks)} against {', '.join(b.tasks)}")
    if a.general_task != b.general_task and _last_general(a) and _last_general(b):
        raise ValueError(f"the runs hold out different general tasks: {a.general_task} against {b.general_task}")
    for task in set(a.sample_ids) & set(b.sample_ids):
        if a.sample_ids[task] != b.sample_ids[task]:
            raise ValueError(f"task {task!r} was evaluated on different test samples in the two runs "
                             "(was it added again with another test split?)")


def _resampled(cell: Cell | None, idx: list[int] | None) -> float | None:
    if cell is None:
        return None
    if idx is None:
        return cell.score
    s = cell.samples
    return sum(map(s.__getitem__, idx)) / len(idx) + cell.offset


def paired_bootstrap(a: RunSamples, b: RunSamples, *, resamples: int = 1000, seed: int = 0,
                     confidence: float = 0.95) -> dict[str, Interval]:
    """Per metric of :data:`METRICS`, ``b - a`` with its paired percentile bootstrap interval.

    Deterministic for a seed; the draws depend only on the seed and the tasks' test sizes, so
    comparisons against one reference with the same seed share their resamples. Raises
    ``ValueError`` when the runs have different tasks or test samples, or a cell's per-sample
    scores do not match its task's test size.
    """
    if resamples < 1:
        raise ValueError(f"resamples must be >= 1, not {resamples}")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be between 0 and 1, not {confidence}")
    _check_pair(a, b)
    sizes = {**a.sample_ids, **b.sample_ids}
    for run in (a, b):
        named = [(run.tasks[j], c) for row in run.rows for j, c in enumerate(row)]
        named += [(run.general_task, c) for c in run.general]
        for task, cell in named:
            if cell is not None and (task not in sizes or len(cell.samples) != len(sizes[task])):
                raise ValueError(f"task {task!r}: a cell has {len(cell.samples)} per-sample scores but the task "
                                 f"has {len(sizes.get(task, []))} test samples")
    ga, gb = _last_general(a), _last_general(b)
    point_a = _metrics(a.matrix(), ga.score if ga else None, a.joint)
    point_b = _metrics(b.matrix(), gb.score if gb else None, b.joint)
    # tasks in a fixed order (by name), so the draw does not depend on the runs' task orders
    order = sorted(sizes)
    rng = random.Random(seed)
    diffs: dict[str, list[float]] = {k: [] for k in METRICS}
    for _ in range(resamples):
        draw = {task: rng.choices(range(len(sizes[task])), k=len(sizes[task])) for task in order}
        values = []
        for run, general in ((a, ga), (b, gb)):
            rows = [[_resampled(c, draw[run.tasks[j]] if c is not None else None) for j, c in enumerate(row)]
                    for row in run.rows]
            values.append(_metrics(rows, _resampled(general, draw.get(run.general_task)) if general else None, run.joint))
        for key in METRICS:
            va, vb = values[0][key], values[1][key]
            if va is not None and vb is not None:
                diffs[key].append(vb - va)
    tail = (1 - confidence) / 2
    out = {}
    for key in METRICS:
        va, vb = point_a[key], point_b[key]
        if va is None or vb is None or not diffs[key]:
            out[key] = Interval(va, vb, None, None, None)
            continue
        values = sorted(diffs[key])
        out[key] = Interval(va, vb, vb - va, percentile(values, tail), percentile(values, 1 - tail))
    return out
