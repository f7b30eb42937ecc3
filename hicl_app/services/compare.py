"""Comparing runs: paired bootstrap intervals, runs grouped across seeds, environments that differ.

Shared by `hicl compare`, the TUI's compare screen and `hicl demo --seeds`. The per-sample scores
come from the predictions file each evaluation wrote (JSONL, one line per test sample with its
``id`` and ``score``); the matching scorers store 1/0 there, scaled here to the task's 0-100.
"""

from __future__ import annotations

import json
import statistics
from dataclasses import dataclass
from pathlib import Path

from ..catalog.db import Catalog
from ..catalog.models import Run
from ..catalog.report import general_of, run_metrics
from ..catalog.runs import get_run, scores_of, stages_of
from ..core import bootstrap
from ..core.errors import InvalidInput, NotFound

#: Environment keys that may differ between runs without making them incomparable.
ENV_IGNORED = ("seed",)

TITLES = {"mft": "MFT", "last": "Last", "avg": "Avg", "bwt": "BWT", "forgetting": "Forgetting", "general": "General"}


def _read_predictions(path: str | None, run: Run, stage: int, task: str) -> tuple[list[str], list[float]]:
    where = f"run {run.id} ({run.name}), {'the base model' if stage < 0 else f'stage {stage + 1}'}, task {task}"
    if not path or not Path(path).is_file():
        raise NotFound(f"{where}: no stored predictions{f' ({path})' if path else ''}",
                       hint="the interval needs each evaluation's predictions file; re-evaluate the run")
    ids, scores = [], []
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
                ids.append(str(record["id"]))
                scores.append(float(record["score"]))
            except (ValueError, KeyError, TypeError):
                raise InvalidInput(f"{path}: line {number} is not a prediction record with an id and a score") from None
    return ids, scores


def run_samples(catalog: Catalog, ref: str | int) -> tuple[dict, bootstrap.RunSamples]:
    """(the run's summary, its evaluations with per-sample scores) read from the catalog and the
    predictions files. Raises NotFound when an evaluation's predictions file is gone."""
    with catalog.session() as s:
        run = get_run(s, ref)
        names, matrix, _, metrics = run_metrics(s, run)
        general = general_of(s, run)
        n_rows = len(stages_of(s, run.id))
        cells = scores_of(s, run.id)
        summary = _summary(run, names, metrics, general)
    general_task = (run.config or {}).get("general_task")
    col = {name: j for j, name in enumerate(names)}
    rows: list[list[bootstrap.Cell | None]] = [[None] * len(names) for _ in range(n_rows)]
    general_cells: list[bootstrap.Cell | None] = [None] * n_rows
    ids: dict[str, list[str]] = {}
    for cell in cells:
        in_matrix = cell.task_name in col and 0 <= cell.stage_index < n_rows
        is_general = cell.task_name == general_task and 0 <= cell.stage_index < n_rows
        if not (in_matrix or is_general):
            continue
        sample_ids, scores = _read_predictions(cell.predictions_path, run, cell.stage_index, cell.task_name)
        order = ids.setdefault(cell.task_name, sorted(sample_ids))
        if sorted(sample_ids) != order or len(set(sample_ids)) != len(sample_ids):
            raise InvalidInput(f"run {run.id}: task {cell.task_name} has different test samples in different "
                               "stages' predictions")
        scale = 1.0 if cell.scorer == "caption" else 100.0
        by_id = dict(zip(sample_ids, scores))
        value = bootstrap.Cell(cell.score, tuple(scale * by_id[i] for i in order))
        if in_matrix:
            rows[cell.stage_index][col[cell.task_name]] = value
        else:
            general_cells[cell.stage_index] = value
    samples = bootstrap.RunSamples(tasks=names, rows=rows, sample_ids=ids, general_task=general_task,
                                   general=general_cells if general_task else [],
                                   joint=n_rows == 1 and len(names) > 1)
    return summary, samples


def _summary(run: Run, names: list[str], metrics: dict, general: dict | None) -> dict:
    return {"id": run.id, "name": run.name, "method": run.method, "status": run.status,
            "seed": (run.config or {}).get("train", {}).get("seed"), "base_model": run.base_model,
            "task_order": names, "env": dict(run.env or {}), "group": group_key(run),
            "metrics": {**{k: metrics.get(k) for k in bootstrap.METRICS if k != "general"},
                        "general": general.get("last") if general else None}}


def group_key(run: Run) -> str:
    """What a run is apart from its seed: method, base, task order and the whole config but the
    training seed. Runs with the same key are one configuration measured with several seeds."""
    config = json.loads(json.dumps(run.config or {}, sort_keys=True, default=str))
    config.get("train", {}).pop("seed", None)
    return json.dumps([run.method, run.base_model, list(run.task_order), config], sort_keys=True)


def env_differences(runs: list[dict]) -> dict[str, dict[str, object]]:
    """{env key: {run id: value}} for every key (but the seed) whose value is not the same in all runs."""
    keys = sorted({k for r in runs for k in r["env"]} - set(ENV_IGNORED))
    out = {}
    for key in keys:
        values = {str(r["id"]): r["env"].get(key) for r in runs}
        if len({json.dumps(v, sort_keys=True, default=str) for v in values.values()}) > 1:
            out[key] = values
    return out


def verdict(key: str, interval: bootstrap.Interval, a: str, b: str) -> str:
    """'B better on Last, CI excludes 0' or 'no clear difference' (or why there is no figure)."""
    if interval.diff is None:
        return "undefined for one of the runs"
    if not interval.excludes_zero:
        return "no clear difference"
    b_better = (interval.diff < 0) if key in bootstrap.LOWER_IS_BETTER else (interval.diff > 0)
    return f"{b if b_better else a} better on {TITLES[key]}, CI excludes 0"


def mean_std(values: list[float | None]) -> dict:
    """{"mean", "std" (sample std, None for one value), "n"} of the values present."""
    present = [v for v in values if v is not None]
    return {"mean": statistics.fmean(present) if present else None,
            "std": statistics.stdev(present) if len(present) > 1 else None, "n": len(present)}


def group_runs(runs: list[dict]) -> list[dict]:
    """Runs that differ only in seed, grouped (in first-seen order), with mean and std per metric."""
    groups: dict[str, list[dict]] = {}
    for r in runs:
        groups.setdefault(r["group"], []).append(r)
    out = []
    for members in groups.values():
        first = members[0]
        out.append({"label": f"{first['method']} ({first['name']})", "method": first["method"],
                    "runs": [r["id"] for r in members], "seeds": [r["seed"] for r in members],
                    "metrics": {k: mean_std([r["metrics"][k] for r in members]) for k in bootstrap.METRICS}})
    return out


@dataclass
class Comparison:
    """`compare`'s result: the runs, each run against the first, the seed groups, env differences."""

    runs: list[dict]
    against_first: list[dict]
    groups: list[dict]
    env_differences: dict
    resamples: int
    seed: int
    confidence: float

    def to_dict(self) -> dict:
        return {"reference": self.runs[0]["id"], "runs": self.runs, "comparisons": self.against_first,
                "groups": self.groups, "env_differences": self.env_differences, "resamples": self.resamples,
                "seed": self.seed, "confidence": self.confidence}


def interval_dict(key: str, iv: bootstrap.Interval, a: dict, b: dict) -> dict:
    return {"a": iv.a, "b": iv.b, "diff": iv.diff, "low": iv.low, "high": iv.high,
            "excludes_zero": iv.excludes_zero, "verdict": verdict(key, iv, f"run {a['id']}", f"run {b['id']}")}


def compare_pair(a: tuple[dict, bootstrap.RunSamples], b: tuple[dict, bootstrap.RunSamples], *,
                 resamples: int, seed: int) -> dict:
    """One run (b) against another (a): per metric the difference, its interval and a verdict."""
    try:
        intervals = bootstrap.paired_bootstrap(a[1], b[1], resamples=resamples, seed=seed)
    except ValueError as exc:
        raise InvalidInput(f"run {a[0]['id']} and run {b[0]['id']} cannot be compared: {exc}") from None
    return {"run": b[0]["id"], "against": a[0]["id"],
            "metrics": {k: interval_dict(k, intervals[k], a[0], b[0]) for k in bootstrap.METRICS}}


def compare_runs(catalog: Catalog, refs: list[str | int], *, resamples: int = 1000, seed: int = 0) -> Comparison:
    """Every run after the first against the first, with paired bootstrap intervals."""
    if len(refs) < 2:
        raise InvalidInput("compare needs at least two runs", hint="`hicl compare 3 4`; `hicl runs` lists them")
    if resamples < 1:
        raise InvalidInput(f"--resamples must be at least 1, not {resamples}")
    loaded = [run_samples(catalog, ref) for ref in refs]
    ids = [summary["id"] for summary, _ in loaded]
    if len(set(ids)) != len(ids):
        raise InvalidInput(f"a run is given twice: {', '.join(map(str, ids))}")
    runs = [summary for summary, _ in loaded]
    pairs = [compare_pair(loaded[0], other, resamples=resamples, seed=seed) for other in loaded[1:]]
    return Comparison(runs=runs, against_first=pairs, groups=group_runs(runs), env_differences=env_differences(runs),
                      resamples=resamples, seed=seed, confidence=0.95)
