"""`hicl demo` and `hicl tiny-base`: the built-in default, end to end, on a CPU."""

from __future__ import annotations

import sys
import time

import click

from ..builtin.families import FAMILIES
from ..builtin.tinybase import BaseRecipe
from ..core.settings import Settings
from .context import AppContext, pass_app
from .output import emit_json, fmt_num, info, table
from .runs import _general_line

METRIC_KEYS = [("mft", "MFT"), ("last", "Last"), ("avg", "Avg"), ("bwt", "BWT"), ("forgetting", "Forgetting")]
#: the metrics of the intervals and the seed summaries (General: the held-out task after the sequence)
COMPARED = METRIC_KEYS + [("general", "General")]


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
@click.option("--methods", help="Comma-separated methods (default: seq-lora, joint, hide and llava-c, in the "
                                "configuration the README's results table measured best); `all`: those and every other "
                                "registered method with its defaults; METHOD:KEY=VALUE[:...] runs a "
                                "variant with options changed, e.g. llava-c,llava-c:sac=off,hide:expand=0,3.")
@click.option("--tasks", "n_tasks", type=click.IntRange(2, 6),
              help="How many benchmark tasks (default 4; 3 with --quick; 6: the whole benchmark).")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the benchmark, the base and the training.")
@click.option("--seeds", "seeds_text", metavar="S1,S2,...",
              help="Training seeds: run each method once per seed (same benchmark and base, from --seed) and print "
                   "mean ± std per metric and whether each method's gain over seq-lora holds with every seed.")
@click.option("--resamples", type=click.IntRange(0), default=None,
              help="Paired bootstrap resamples for each method's interval against seq-lora (default 1000; 200 with "
                   "--quick; 0: no intervals).")
@click.option("--quick", is_flag=True, help="A small, fast version (for tests and a first look).")
@click.option("--ceilings", is_flag=True, help="Also train each task alone and print its single-task ceiling.")
@click.option("--workers", type=click.IntRange(0), default=0, show_default=True,
              help="Worker processes running the methods side by side (0: one per CPU core, at most one per method).")
@click.option("--base-family", type=click.Choice(FAMILIES), default="llava",
              show_default=True, help="Architecture of the tiny base, built and pretrained the same way for each.")
@click.option("--json", "as_json", is_flag=True,
              help="Print the figures as JSON: tasks, general, base, runs (label -> the run's report, first seed), "
                   "seeds, intervals (label -> metric -> a, b, diff, low, high, excludes_zero, verdict; against "
                   "seq-lora, first seed), with several seeds by_seed (label -> seed -> report), across_seeds "
                   "(label -> metric -> mean, std, n) and gains (label -> metric -> per_seed, mean, std, n, better, "
                   "seeds, holds), with --ceilings ceilings and chance, and wall_s.")
@pass_app
def demo(app: AppContext, home, methods, n_tasks, seed, seeds_text, resamples, quick, ceilings, workers, base_family,
         as_json) -> None:
    """Run every method on the built-in benchmark and compare them (CPU, nothing downloaded)."""
    from ..builtin.demo import DemoConfig, all_methods, default_methods, run_demo
    from ..catalog.db import Catalog
    from ..services.method_options import split_methods

    settings = Settings.resolve(home) if home else app.settings
    if methods and methods.strip() == "all":
        chosen = all_methods()
    else:
        chosen = split_methods(methods) if methods else default_methods()
    overrides = {"seed": seed, "ceilings": ceilings, "methods": chosen, "workers": workers,
                 "train_seeds": parse_seeds(seeds_text), "base_family": base_family}
    if n_tasks:
        overrides["tasks"] = n_tasks
    if resamples is not None:
        overrides["resamples"] = resamples
    cfg = DemoConfig.quick(**overrides) if quick else DemoConfig(**overrides)
    seeds = f", training seeds {', '.join(map(str, cfg.train_seeds))}" if cfg.train_seeds else ""
    info(f"hicl demo in {settings.home}: {cfg.tasks} tasks, methods {', '.join(cfg.methods)}{seeds}")
    from .demo_progress import BaseBar, RunsBoard

    tty = sys.stderr.isatty()
    board = RunsBoard() if tty else None
    result = run_demo(Catalog(settings), cfg, info, on_status=board, on_base=BaseBar() if tty else None)
    if as_json:
        emit_json(result)
    else:
        _print_report(result)
    info(f"total wall time {result['wall_s']:.0f}s")
    if any(r["status"] != "completed" for r in result["runs"].values()):
        sys.exit(1)


def parse_seeds(text: str | None) -> tuple[int, ...]:
    """'0,1,2' -> (0, 1, 2); a clear error (exit 3) for anything else."""
    from ..core.errors import InvalidInput

    if not text:
        return ()
    try:
        seeds = tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise InvalidInput(f"--seeds {text!r}: give comma-separated integers", hint="e.g. --seeds 0,1,2") from None
    if not seeds or len(set(seeds)) != len(seeds):
        raise InvalidInput(f"--seeds {text!r}: give distinct comma-separated integers", hint="e.g. --seeds 0,1,2")
    return seeds


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
    if "intervals" in result:
        _print_intervals(result)
    if "across_seeds" in result:
        _print_seeds(result)
    if "ceilings" in result:
        click.echo("\n== single-task ceilings (each task trained alone, same steps) ==")
        click.echo(table(["task", "alone", "chance"],
                         [[t, result["ceilings"][t], result["chance"][t]] for t in result["tasks"]]))


def _general_cells(general: dict | None) -> list:
    """The held-out general task's score after the sequence and its change from the base model."""
    return [general.get("last"), general.get("retention")] if general else [None, None]


COMMANDS = [tiny_base, demo]


def _print_intervals(result: dict) -> None:
    from .compare import interval_text, signed

    seed = result["seeds"][0]
    click.echo(f"\n== against seq-lora, seed {seed} (B − seq-lora, 95% paired bootstrap interval over the test samples) ==")
    rows = []
    for method, metrics in result["intervals"].items():
        rows.append([method] + [f"{signed(metrics[k]['diff'])} {interval_text(metrics[k]['low'], metrics[k]['high'])}"
                                for k, _ in COMPARED])
    click.echo(table(["method"] + [label for _, label in COMPARED], rows))
    clear = [f"{method} {'better' if _better(k, m[k]['diff']) else 'worse'} on {label}"
             for method, m in result["intervals"].items() for k, label in COMPARED if m[k]["excludes_zero"]]
    click.echo("interval excludes 0: " + ("; ".join(clear) if clear else "none (no clear difference)"))


def _better(key: str, diff: float) -> bool:
    return diff < 0 if key == "forgetting" else diff > 0


def _print_seeds(result: dict) -> None:
    from .compare import pm

    seeds = ", ".join(map(str, result["seeds"]))
    click.echo(f"\n== across training seeds {seeds} (mean ± std) ==")
    click.echo(table(["method"] + [label for _, label in COMPARED],
                     [[method] + [pm(stats[k]) for k, _ in COMPARED] for method, stats in result["across_seeds"].items()]))
    if not result["gains"]:
        return
    click.echo("\n== gain over seq-lora, seed by seed (positive = better; Forgetting's sign flipped) ==")
    rows = []
    for method, metrics in result["gains"].items():
        cells = []
        for k, _ in COMPARED:
            g = metrics[k]
            verdict = "—" if g["holds"] is None else ("holds" if g["holds"] else f"{g['better']}/{g['seeds']}")
            cells.append(f"{pm(g)} {verdict}" if g["mean"] is not None else "—")
        rows.append([method] + cells)
    click.echo(table(["method"] + [label for _, label in COMPARED], rows))
    click.echo("(holds: better than seq-lora with every seed; k/n: better with k of the n seeds)")
