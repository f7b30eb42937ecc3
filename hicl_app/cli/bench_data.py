"""`hicl synth`: write the built-in continual benchmark (UCIT-like) to a folder."""

from __future__ import annotations

import click

from ..core.errors import Conflict
from .output import emit_json, info, table


@click.command("synth")
@click.argument("out_dir", type=click.Path(file_okay=False))
@click.option("--tasks", "n_tasks", type=click.IntRange(1, 6), default=6, show_default=True,
              help="How many tasks, in the fixed UCIT-like order.")
@click.option("--train", type=click.IntRange(1), default=250, show_default=True, help="Training samples per task.")
@click.option("--test", type=click.IntRange(1), default=50, show_default=True, help="Test samples per task.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--image-size", type=click.IntRange(16, 1024), default=64, show_default=True)
@click.option("--overwrite", is_flag=True, help="Replace a non-empty OUT_DIR.")
@click.option("--json", "as_json", is_flag=True,
              help="The manifest: {version, format, seed, image_size, order, pretrain, tasks: [{name, description, "
                   "instruction, answer_style, answers, scorer, train, test, files, sha256}], general (one more task "
                   "of the same shape, held out)}.")
def synth(out_dir, n_tasks, train, test, seed, image_size, overwrite, as_json) -> None:
    """Generate the synthetic benchmark: LLaVA-format tasks with test splits, ready for add-task."""
    from ..builtin.synth import generate

    try:
        manifest = generate(out_dir, tasks=n_tasks, train=train, test=test, seed=seed,
                            image_size=image_size, overwrite=overwrite)
    except FileExistsError as exc:
        raise Conflict(str(exc), hint="pass --overwrite or choose an empty folder") from None
    if as_json:
        emit_json(manifest)
        return
    rows = [[t["name"], t["train"], t["test"], t["scorer"], t["description"]] for t in manifest["tasks"]]
    g = manifest["general"]
    rows.append([g["name"], g["train"], g["test"], g["scorer"], "held out: base-model degradation"])
    click.echo(table(["task", "train", "test", "scorer", "description"], rows))
    info(f"wrote {out_dir}; add a task with: hicl add-task {out_dir}/<task>/train.jsonl --test {out_dir}/<task>/test.jsonl")


COMMANDS = [synth]
