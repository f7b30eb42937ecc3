"""`hicl compare`: runs against the first, with paired bootstrap intervals, grouped across seeds."""

from __future__ import annotations

import click

from .context import AppContext, pass_app
from .output import emit_json, fmt_num, info, table

JSON_HELP = (
    "Print JSON with the keys: reference (the first run's id); runs (id, name, method, status, seed, base_model, "
    "task_order, env, group, metrics); comparisons (one per later run: run, against, metrics: {metric: {a, b, diff, "
    "low, high, excludes_zero, verdict}}); groups (runs that differ only in seed: label, method, runs, seeds, "
    "metrics: {metric: {mean, std, n}}); env_differences ({env key: {run id: value}}); resamples; seed; "
    "confidence. Metrics: mft, last, avg, bwt, forgetting, general.")


def signed(value: float | None) -> str:
    return "—" if value is None else f"{value:+.2f}"


def interval_text(low: float | None, high: float | None) -> str:
    return "—" if low is None else f"[{low:+.2f}, {high:+.2f}]"


def pm(stats: dict) -> str:
    """'55.00 ± 1.20' (no ± for a single value)."""
    if stats["mean"] is None:
        return "—"
    return fmt_num(stats["mean"]) + (f" ± {stats['std']:.2f}" if stats["std"] is not None else "")


@click.command("compare")
@click.argument("runs", nargs=-1, required=True)
@click.option("--resamples", type=click.IntRange(1), default=1000, show_default=True,
              help="Bootstrap resamples of the test sets.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the bootstrap's draws.")
@click.option("--json", "as_json", is_flag=True, help=JSON_HELP)
@pass_app
def compare(app: AppContext, runs: tuple[str, ...], resamples: int, seed: int, as_json: bool) -> None:
    """Compare RUNS (ids or names) with the first: per metric the difference and its 95% interval.

    Each metric (MFT, Last, Avg, BWT, Forgetting, General) is recomputed on paired bootstrap
    resamples of every task's test set: one draw of each task's test samples serves every stage's
    evaluation of that task in both runs, the cells are recomputed from the stored per-sample
    scores, and the interval is the 2.5th-97.5th percentile of the differences (caption tasks resample
    their per-sample caption scores, shifted onto the corpus-level score; CIDEr-D's idf stays the
    whole test set's). A verdict names
    the better run only when the interval excludes 0. Runs that differ only in their seed are
    grouped and shown as mean ± std; runs whose environments differ (library versions, device,
    CPU or GPU, threads) are flagged.
    """
    from ..services.compare import TITLES, compare_runs

    result = compare_runs(app.catalog, list(runs), resamples=resamples, seed=seed).to_dict()
    if result["env_differences"]:
        info("warning: the runs' environments differ, so part of a difference may come from the machine:")
        for key, values in result["env_differences"].items():
            info(f"  {key}: " + ", ".join(f"run {rid} {value if value is not None else '(not recorded)'}"
                                          for rid, value in values.items()))
    if as_json:
        emit_json(result)
        return
    by_id = {r["id"]: r for r in result["runs"]}
    for r in result["runs"]:
        if r["status"] != "completed":
            info(f"note: run {r['id']} is {r['status']}: its figures describe it as of its last complete stage")
    for pair in result["comparisons"]:
        a, b = by_id[pair["against"]], by_id[pair["run"]]
        click.echo(f"\n== B = run {b['id']} {b['name']} ({b['method']}) against A = run {a['id']} {a['name']} "
                   f"({a['method']}) ==")
        rows = [[TITLES[k], fmt_num(m["a"]), fmt_num(m["b"]), signed(m["diff"]), interval_text(m["low"], m["high"]),
                 m["verdict"]] for k, m in pair["metrics"].items()]
        click.echo(table(["metric", "A", "B", "B−A", "95% CI", "verdict"], rows, align_right={1, 2, 3}))
    click.echo(f"\n(95% percentile intervals from {resamples} paired bootstrap resamples of the test sets, seed {seed}; "
               "lower Forgetting is better)")
    grouped = [g for g in result["groups"] if len(g["runs"]) > 1]
    if grouped:
        click.echo("\n== across seeds (runs that differ only in their seed: mean ± std) ==")
        rows = [[g["label"], ",".join(map(str, g["runs"])), ",".join(map(str, g["seeds"]))]
                + [pm(g["metrics"][k]) for k in TITLES] for g in result["groups"]]
        click.echo(table(["configuration", "runs", "seeds"] + list(TITLES.values()), rows))


COMMANDS = [compare]
