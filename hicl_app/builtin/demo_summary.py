"""What the demo's figures say beyond one run each: spread across seeds, gains over seq-lora.

With several training seeds every method is run once per seed; its metrics are summarised as
mean ± std, and its gain over seq-lora is taken seed by seed (the same seed trains both, on the
same base and benchmark), so "holds" means the method beat seq-lora with every seed. For the
first seed each method also gets the paired bootstrap interval of its difference from seq-lora
(see `services.compare`), which says how much of a gap the test sets alone could explain.
"""

from __future__ import annotations

from ..catalog.db import Catalog
from ..core.bootstrap import LOWER_IS_BETTER, METRICS
from ..services.compare import compare_pair, mean_std, run_samples

BASELINE = "seq-lora"


def metric_values(report: dict) -> dict[str, float | None]:
    """A demo run report's metrics, with `general` the held-out task's score after the sequence."""
    general = report.get("general") or {}
    return {**{k: report["metrics"].get(k) for k in METRICS if k != "general"}, "general": general.get("last")}


def across_seeds(by_seed: dict[str, dict[int, dict]]) -> dict[str, dict[str, dict]]:
    """{label: {metric: {mean, std, n}}} over the seeds' completed runs."""
    return {label: {k: mean_std([metric_values(r)[k] for r in reports.values() if r["status"] == "completed"])
                    for k in METRICS}
            for label, reports in by_seed.items()}


def gains(by_seed: dict[str, dict[int, dict]], baseline: str = BASELINE) -> dict[str, dict[str, dict]]:
    """{label: {metric: {per_seed: [gain or None], mean, std, better, seeds, holds}}} against the baseline.

    A gain is signed so that positive is better (Forgetting's sign is flipped); `holds` is True when
    the method was better with every seed, False when not, None when a seed lacks a figure.
    """
    base = by_seed.get(baseline)
    if base is None:
        return {}
    out = {}
    for label, reports in by_seed.items():
        if label == baseline:
            continue
        per_metric = {}
        for key in METRICS:
            sign = -1.0 if key in LOWER_IS_BETTER else 1.0
            values = []
            for seed, report in reports.items():
                mine, theirs = metric_values(report)[key], metric_values(base[seed])[key] if seed in base else None
                values.append(None if mine is None or theirs is None else sign * (mine - theirs))
            present = [v for v in values if v is not None]
            stats = mean_std(values)
            per_metric[key] = {"per_seed": values, **stats, "better": sum(v > 0 for v in present), "seeds": len(values),
                               "holds": None if len(present) < len(values) else all(v > 0 for v in present)}
        out[label] = per_metric
    return out


def intervals(catalog: Catalog, runs: dict[str, int], *, resamples: int, seed: int = 0,
              baseline: str = BASELINE) -> dict[str, dict[str, dict]]:
    """{label: {metric: interval dict}} of each run against the baseline's run (one seed's runs)."""
    if baseline not in runs:
        return {}
    ref = run_samples(catalog, runs[baseline])
    return {label: compare_pair(ref, run_samples(catalog, run_id), resamples=resamples, seed=seed)["metrics"]
            for label, run_id in runs.items() if label != baseline}
