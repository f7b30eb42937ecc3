"""The paired bootstrap of two runs' metrics: exact zero against itself, coverage of a known difference."""

from __future__ import annotations

import random

import pytest

from hicl_app.core import bootstrap
from hicl_app.core.bootstrap import Cell, RunSamples, paired_bootstrap


def _run(correct: dict[tuple[int, str], list[int]], tasks: list[str], ids: dict[str, list[str]],
         general: list[list[int]] | None = None) -> RunSamples:
    rows = []
    for t in range(len(tasks)):
        row = []
        for task in tasks:
            flags = correct.get((t, task))
            row.append(None if flags is None else Cell(100.0 * sum(flags) / len(flags), tuple(100.0 * f for f in flags)))
        rows.append(row)
    cells = [Cell(100.0 * sum(g) / len(g), tuple(100.0 * f for f in g)) for g in general] if general else []
    return RunSamples(tasks=tasks, rows=rows, sample_ids=ids | ({"gen": [f"g{i}" for i in range(len(general[0]))]}
                                                                 if general else {}),
                      general_task="gen" if general else None, general=cells)


def _sequential(rng: random.Random, tasks: list[str], n: int, acc: float, drop: float) -> dict:
    """Correct/incorrect flags of a sequential run: task j at accuracy `acc`, lower by `drop` per later stage."""
    out = {}
    for t in range(len(tasks)):
        for j in range(t + 1):
            p = max(0.0, acc - drop * (t - j))
            out[(t, tasks[j])] = [int(rng.random() < p) for _ in range(n)]
    return out


def test_a_run_against_itself_is_exactly_zero():
    rng = random.Random(1)
    tasks = ["a", "b", "c"]
    ids = {t: [f"{t}{i}" for i in range(40)] for t in tasks}
    run = _run(_sequential(rng, tasks, 40, 0.7, 0.15), tasks, ids,
               general=[[int(rng.random() < 0.5) for _ in range(30)] for _ in tasks])
    result = paired_bootstrap(run, run, resamples=200, seed=3)
    assert set(result) == set(bootstrap.METRICS)
    for key, iv in result.items():
        assert iv.a is not None, key
        assert (iv.diff, iv.low, iv.high) == (0.0, 0.0, 0.0), key
        assert not iv.excludes_zero


def test_known_difference_is_covered_and_detected():
    """B answers 20 points more of every task; the interval covers the true gap and excludes 0."""
    rng = random.Random(7)
    tasks = ["a", "b"]
    n = 300
    ids = {t: [str(i) for i in range(n)] for t in tasks}
    truth_a = {t: [rng.random() for _ in range(n)] for t in tasks}  # per-sample difficulty, shared by both
    a = _run({(s, t): [int(u < 0.5) for u in truth_a[t]] for s in range(2) for t in tasks[: s + 1]}, tasks, ids)
    b = _run({(s, t): [int(u < 0.7) for u in truth_a[t]] for s in range(2) for t in tasks[: s + 1]}, tasks, ids)
    result = paired_bootstrap(a, b, resamples=500, seed=0)
    last = result["last"]
    assert last.diff == pytest.approx(last.b - last.a)
    assert last.low <= 20.0 <= last.high or abs(last.diff - 20.0) < 6  # the sample gap is near 20
    assert last.low <= last.diff <= last.high
    assert last.excludes_zero and last.low > 0
    # lower is better for forgetting; both runs keep every answer, so it is 0 - 0
    assert result["forgetting"].diff == 0.0
    assert result["general"].diff is None  # neither run has a general task


def _worst_case_pair(n: int) -> tuple[RunSamples, RunSamples]:
    """B 10 points above A near 50%, their errors as independent as they can be (half the samples
    discordant): the widest interval a 10-point gap on a right/wrong task can have."""
    q = n // 4
    both, a_only, b_only = q, q - n // 20, q - n // 20 + n // 10
    a_flags = [1] * both + [1] * a_only + [0] * b_only + [0] * (n - both - a_only - b_only)
    b_flags = [1] * both + [0] * a_only + [1] * b_only + [0] * (n - both - a_only - b_only)
    ids = {"t": [str(i) for i in range(n)]}
    return _run({(0, "t"): a_flags}, ["t"], ids), _run({(0, "t"): b_flags}, ["t"], ids)


def test_the_demo_test_size_puts_a_10_point_gap_outside_the_interval():
    """The demo's 250 test samples per task: even in the worst case a 10-point gap excludes 0;
    with 100 samples it does not."""
    from hicl_app.builtin.demo import DemoConfig

    a, b = _worst_case_pair(DemoConfig.test)
    iv = paired_bootstrap(a, b, resamples=1000, seed=0)["last"]
    assert iv.diff == pytest.approx(10.0) and iv.low > 0
    a, b = _worst_case_pair(100)
    iv = paired_bootstrap(a, b, resamples=1000, seed=0)["last"]
    assert iv.diff == pytest.approx(10.0) and iv.low < 0


def test_caption_cells_are_centred_on_the_reported_score():
    """A cell whose score is not the mean of its samples (corpus-level caption score) is shifted."""
    ids = {"cap": [str(i) for i in range(20)]}
    samples = tuple(float(40 + i) for i in range(20))
    a = RunSamples(tasks=["cap"], rows=[[Cell(60.0, samples)]], sample_ids=ids)
    b = RunSamples(tasks=["cap"], rows=[[Cell(65.0, tuple(s + 5 for s in samples))]], sample_ids=ids)
    iv = paired_bootstrap(a, b, resamples=100, seed=0)["last"]
    assert (iv.a, iv.b, iv.diff) == (60.0, 65.0, 5.0)
    assert iv.low == pytest.approx(5.0) and iv.high == pytest.approx(5.0)  # a constant per-sample gap


def test_mismatched_runs_are_refused():
    ids = {"t": ["1", "2"]}
    a = RunSamples(tasks=["t"], rows=[[Cell(50.0, (100.0, 0.0))]], sample_ids=ids)
    other = RunSamples(tasks=["t"], rows=[[Cell(50.0, (100.0, 0.0))]], sample_ids={"t": ["1", "3"]})
    with pytest.raises(ValueError, match="different test samples"):
        paired_bootstrap(a, other)
    short = RunSamples(tasks=["t"], rows=[[Cell(50.0, (100.0,))]], sample_ids=ids)
    with pytest.raises(ValueError, match="per-sample scores"):
        paired_bootstrap(a, short)
    renamed = RunSamples(tasks=["u"], rows=[[Cell(50.0, (100.0, 0.0))]], sample_ids={"u": ["1", "2"]})
    with pytest.raises(ValueError, match="different tasks"):
        paired_bootstrap(a, renamed)


def test_percentile_interpolates():
    assert bootstrap.percentile([0.0, 10.0], 0.25) == 2.5
    assert bootstrap.percentile([1.0, 2.0, 3.0], 1.0) == 3.0
