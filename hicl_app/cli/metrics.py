"""`hicl metrics`: the accuracy matrix and the continual-learning metrics of a run or a CSV."""

from __future__ import annotations

import click

from ..core.errors import InvalidInput
from .context import AppContext, pass_app
from .output import emit_json
from .runs import _general_line, _metrics_line


@click.command("metrics")
@click.argument("run_ref", required=False)
@click.option("--matrix", "matrix_file", type=click.Path(dir_okay=False, exists=True),
              help="Compute from a CSV matrix instead (row t = after task t; empty or nan = not evaluated).")
@click.option("--json", "as_json", is_flag=True,
              help="Keys: mft, last, avg, bwt, forgetting, fwt (null where undefined); matrix (row t = after stage "
                   "t+1, null = not evaluated); tasks (the column names); zero_shot (the base model's score per task "
                   "before training, null where not measured; null for --matrix); general (the held-out general "
                   "task: task, base, after, last, retention, ratio; null when the run has none); for a RUN also "
                   "status, stages, rows_complete (complete rows from the first) and in_progress.")
@pass_app
def metrics(app: AppContext, run_ref: str | None, matrix_file: str | None, as_json: bool) -> None:
    """MFT, Last, Avg, BWT, Forgetting (and FWT with zero-shot scores) of RUN or of --matrix FILE."""
    from ..core import clmetrics

    if (run_ref is None) == (matrix_file is None):
        raise InvalidInput("give either a RUN or --matrix FILE.csv", hint="`hicl metrics 3` or `hicl metrics --matrix paper.csv`")
    zero, general, progress = None, None, None
    if matrix_file:
        try:
            names, matrix = clmetrics.read_csv(matrix_file)
        except ValueError as exc:
            raise InvalidInput(f"{matrix_file}: {exc}") from None
        if not matrix:
            raise InvalidInput(f"{matrix_file}: no rows of scores", hint="row t holds the scores after task t")
        names = names or [f"task{j + 1}" for j in range(max((len(r) for r in matrix), default=0))]
        result = clmetrics.compute(matrix)
    else:
        from ..catalog.report import general_of, progress_of, run_metrics
        from ..catalog.runs import get_run

        with app.catalog.session() as s:
            run_row = get_run(s, run_ref)
            names, matrix, zero, result = run_metrics(s, run_row)
            general = general_of(s, run_row)
            progress = progress_of(run_row, matrix)
    if as_json:
        emit_json({**result, "matrix": matrix, "tasks": names, "zero_shot": zero, "general": general,
                   **(progress or {})})
        return
    click.echo(clmetrics.format_table(names, matrix))
    click.echo("")
    if progress and progress["in_progress"]:
        click.echo(_in_progress_line(run_ref, names, progress))
    click.echo(_metrics_line(result))
    if general:
        click.echo(_general_line(general))


def _in_progress_line(run_ref: str, names: list[str], p: dict) -> str:
    done, total = p["rows_complete"], p["stages"]
    if not done:
        return (f"run {run_ref} is {p['status']}: no row of its matrix is complete yet; the metrics below "
                "are blank until the first stage is scored")
    rows = "row 1" if done == 1 else f"rows 1–{done}"
    after = names[done - 1] if total > 1 and done <= len(names) else "its stage"
    return (f"run {run_ref} is {p['status']}: {rows} of {total} complete; the metrics describe the run after "
            f"stage {done} ({after}), not its end")


COMMANDS = [metrics]
