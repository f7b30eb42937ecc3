"""hicl pull: bring a run published on a Hugging Face Hub into this workspace."""

from __future__ import annotations

import click

from .context import AppContext, pass_app
from .output import emit_json, info


@click.command("pull")
@click.argument("repo_id", metavar="REPO_ID")
@click.option("--revision", metavar="TAG", help="A stage-K tag, a branch or a commit (default: main, the last stage pushed).")
@click.option("--endpoint", envvar="HF_ENDPOINT", metavar="URL", help="Hub URL, for a private hub (env HF_ENDPOINT).")
@click.option("--base", metavar="MODEL", help="Base model to record (required when the run trained on a local folder).")
@click.option("--name", help="A name for the pulled run (default: the published one).")
@click.option("--json", "as_json", is_flag=True, help="Print {run_id, name, repo_id, endpoint, revision, commit, stages "
              "(how many), tasks: {name: present | absent | differs}}.")
@pass_app
def pull(app: AppContext, repo_id: str, revision: str | None, endpoint: str | None, base: str | None,
         name: str | None, as_json: bool) -> None:
    """Download a run published by hicl (`hicl push`, `run start --push-to`) into the catalog: the run
    with its method configuration, every stage's adapter (sha256-checked) and the accuracy matrix.

    \b
    Task data is not in the repo: add your copy of the tasks with `hicl add-task` (same names),
    then `hicl run eval RUN --tasks ...` scores the pulled stages on them and
    `hicl run extend RUN --tasks NEW` continues the run.
    """
    from ..engine.methods import method_names
    from ..hub.pull import pull_run

    result = pull_run(app.catalog, repo_id, revision=revision, endpoint=endpoint, base=base, name=name,
                      methods=method_names())
    if as_json:
        emit_json(result.as_dict())
        return
    click.echo(result.run_id)
    info(f"pulled {repo_id}@{result.revision} ({result.commit[:12]}) as run {result.run_id} ({result.name}): "
         f"{result.stages} stage(s)")
    absent = [t for t, how in result.tasks.items() if how == "absent"]
    differs = [t for t, how in result.tasks.items() if how == "differs"]
    if absent:
        info(f"task(s) not in this workspace: {', '.join(absent)} (`hicl add-task` them to evaluate or extend)")
    if differs:
        info(f"task(s) here with other data than the run's (sha256 differs): {', '.join(differs)}")


COMMANDS = [pull]
