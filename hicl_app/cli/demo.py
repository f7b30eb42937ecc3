"""`hicl demo` and `hicl tiny-base`: the built-in default, end to end, on a CPU."""

from __future__ import annotations

import sys
import time

import click

from ..builtin.tinybase import BaseRecipe
from ..core.settings import Settings
from .context import AppContext, pass_app
from .output import emit_json, fmt_num, info, table
from .runs import _general_line

METRIC_KEYS = [("mft", "MFT"), ("last", "Last"), ("avg", "Avg"), ("bwt", "BWT"), ("forgetting", "Forgetting")]


@click.command("tiny-base")
@click.argument("out_dir", type=click.Path(file_okay=False))
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--steps", type=click.IntRange(1), default=BaseRecipe.steps, show_default=True, help="Pretraining steps.")
@click.option("--samples", type=click.IntRange(8), default=BaseRecipe.samples, show_default=True,
              help="Pretraining descriptions.")
@click.option("--vision-steps", type=click.IntRange(0), default=BaseRecipe.vision_steps, show_default=True,
              help="Steps of the vision tower's pretraining on scene attributes (0: none; the tower then "
                   "learns from the descriptions only and is not frozen).")
@click.option("--vision-samples", type=click.IntRange(16), default=BaseRecipe.vision_samples, show_default=True,
              help="Distinct scenes in the vision tower's pretraining (a tenth, at most 1000, held out to measure it).")
def tiny_base(out_dir: str, seed: int, steps: int, samples: int, vision_steps: int, vision_samples: int) -> None:
    """Build a tiny LLaVA-architecture base: a vision tower pretrained on scene attributes, then
    the whole model (tower frozen) on generic image descriptions, on CPU."""
    from ..builtin import tinybase

    t0 = time.monotonic()
    recipe = tinybase.BaseRecipe(seed=seed, steps=steps, samples=samples, vision_steps=vision_steps,
                                 vision_samples=vision_samples)
    path = tinybase.build(out_dir, recipe, on_event=_pretrain_progress(steps))
    click.echo(str(path))
    info(f"\ntiny base saved to {path} in {time.monotonic() - t0:.0f}s")


def _pretrain_progress(total: int):
    from ..builtin import tinybase

    tty = sys.stderr.isatty()

    def on_event(event: dict) -> None:
        if event.get("kind") == "vision_accuracy":
            info(tinybase.vision_summary(event["accuracy"]))
        elif tty and event.get("type") == "progress":
            click.echo(f"\rpretraining {event.get('step')}/{total} loss {fmt_num(event.get('loss'), 3)}",
                       err=True, nl=False)

    return on_event


@click.command("demo")
@click.option("--home", type=click.Path(file_okay=False), help="Workspace for the demo (default: the current one).")
@click.option("--methods", help="Comma-separated methods (default: the two baselines and each method once, in the "
                                "configuration the README's results table measured best); METHOD:KEY=VALUE[:...] runs a "
                                "variant with options changed, e.g. llava-c,llava-c:sac=off,hide:expand=0,3.")
@click.option("--tasks", "n_tasks", type=click.IntRange(2, 6), help="How many benchmark tasks (default 6; 3 with --quick).")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--quick", is_flag=True, help="A small, fast version (for tests and a first look).")
@click.option("--ceilings", is_flag=True, help="Also train each task alone and print its single-task ceiling.")
@click.option("--workers", type=click.IntRange(0), default=0, show_default=True,
              help="Worker processes running the methods side by side (0: one per CPU core, at most one per method).")
@click.option("--json", "as_json", is_flag=True,
              help="{tasks, general, base, runs: {METHOD: what `run show --json` prints, plus wall_s}, wall_s; with "
                   "--ceilings also ceilings: {task: score} and chance: {task: score or null}}.")
@pass_app
def demo(app: AppContext, home, methods, n_tasks, seed, quick, ceilings, workers, as_json) -> None:
    """Run every method on the built-in benchmark and compare them (CPU, nothing downloaded)."""
    from ..builtin.demo import DemoConfig, default_methods, run_demo
    from ..catalog.db import Catalog
    from ..services.method_options import split_methods

    settings = Settings.resolve(home) if home else app.settings
    chosen = split_methods(methods) if methods else default_methods()
    overrides = {"seed": seed, "ceilings": ceilings, "methods": chosen, "workers": workers}
    if n_tasks:
        overrides["tasks"] = n_tasks
    cfg = DemoConfig.quick(**overrides) if quick else DemoConfig(**overrides)
    info(f"hicl demo in {settings.home}: {cfg.tasks} tasks, methods {', '.join(cfg.methods)}")
    from .runs import progress_printer

    result = run_demo(Catalog(settings), cfg, info, on_progress=progress_printer())
    if as_json:
        emit_json(result)
    else:
        _print_report(result)
    info(f"total wall time {result['wall_s']:.0f}s")
    if any(r["status"] != "completed" for r in result["runs"].values()):
        sys.exit(1)


def _print_report(result: dict) -> None:
    from ..core.clmetrics import format_table

    for method, run in result["runs"].items():
        took = f", {run['wall_s']:.0f}s" if run.get("wall_s") is not None else ""
        click.echo(f"\n== {method} (run {run['id']}{took}) ==")
        click.echo(format_table(run["task_order"], run["matrix"]))
        m = run["metrics"]
        click.echo("  ".join(f"{label} {fmt_num(m.get(k))}" for k, label in METRIC_KEYS))
        if run.get("general"):
            click.echo(_general_line(run["general"]))
    click.echo("\n== comparison (points; a caption score, the mean of BLEU-1..4, ROUGE-L and CIDEr-D x100, can pass 100) ==")
    rows = [[method] + [run["metrics"].get(k) for k, _ in METRIC_KEYS] + _general_cells(run.get("general"))
            for method, run in result["runs"].items()]
    click.echo(table(["method"] + [label for _, label in METRIC_KEYS] + ["General", "General Δ"], rows))
    if "ceilings" in result:
        click.echo("\n== single-task ceilings (each task trained alone, same steps) ==")
        click.echo(table(["task", "alone", "chance"],
                         [[t, result["ceilings"][t], result["chance"][t]] for t in result["tasks"]]))


def _general_cells(general: dict | None) -> list:
    """The held-out general task's score after the sequence and its change from the base model."""
    return [general.get("last"), general.get("retention")] if general else [None, None]


COMMANDS = [tiny_base, demo]
