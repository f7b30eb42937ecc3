"""`hicl analyze cka`: CKA similarity between a run's task models, per decoder layer."""

from __future__ import annotations

import math
from pathlib import Path

import click

from ..core.errors import InvalidInput
from .context import AppContext, pass_app
from .output import emit_json, info, table


@click.group("analyze")
def analyze() -> None:
    """Analyses of a run's models."""


def _parse_layers(text: str | None) -> list[int] | None:
    if not text:
        return None
    try:
        return [int(x) for x in text.replace(" ", "").split(",") if x]
    except ValueError:
        raise InvalidInput(f"--layers {text!r} is not a comma-separated list of layer indices",
                           hint="e.g. --layers 0,15,31 (negative counts from the top)") from None


def _sources(session, run) -> tuple[dict, list[str]]:
    """The task models of `run`: {"hide_stage_dir": ...} or {"adapters": [...]}, and the tasks probed."""
    from ..catalog.runs import adapters_of, stages_of

    stages = {st.id: st for st in stages_of(session, run.id)}
    done = [(stages[a.stage_id], a) for a in adapters_of(session, run.id)
            if a.stage_id in stages and stages[a.stage_id].status == "done"]
    done.sort(key=lambda pair: pair[0].index)
    if not done:
        raise InvalidInput(f"run {run.id} has no finished stage to analyse",
                           hint="wait for the run (`hicl run show`), or analyse another one")
    if len(done) < 2:
        raise InvalidInput(f"run {run.id} has {len(done)} finished stage(s); CKA compares the task models of two or more",
                           hint="analyse a run with at least two finished stages (joint training has one model)")
    if run.method == "hide":
        stage, adapter = done[-1]
        return {"hide_stage_dir": Path(adapter.path).parent}, list(run.task_order)
    adapters = [(",".join(stage.train_tasks), Path(a.path)) for stage, a in done]
    tasks = [t for stage, _ in done for t in stage.train_tasks]
    return {"adapters": adapters}, [t for t in run.task_order if t in tasks]


def _probe_records(session, task_names: list[str], per_task: int, seed: int) -> list[dict]:
    from ..catalog.tasks import get_task
    from ..core.taskfile import load_records
    from ..engine.analysis.probe import pick_probes

    probes = []
    for name in task_names:
        path = Path(get_task(session, name).data_dir) / "train.jsonl"
        try:
            records = load_records(path)
        except (OSError, ValueError) as exc:
            raise InvalidInput(f"cannot read the training records of task {name!r} at {path}: {exc}",
                               hint="re-add the task") from None
        probes += pick_probes(records, per_task, seed, name)
    return probes


def _num(value: float) -> float | None:
    """JSON has no nan: an undefined CKA (a model with constant features) is null."""
    return None if value is None or math.isnan(value) else value


def _fmt(value: float) -> str:
    return "nan" if value is None or math.isnan(value) else f"{value:.3f}"


@analyze.command("cka")
@click.argument("run_ref", metavar="RUN")
@click.option("--layers", help="Comma-separated decoder layer indices (default: every layer; negative counts from the top).")
@click.option("--kernel", type=click.Choice(["linear", "rbf"]), default="linear", show_default=True)
@click.option("--probes", "per_task", type=click.IntRange(2), default=16, show_default=True,
              help="Probe samples per task: a fixed sample of its training records, shown to every model.")
@click.option("--json", "as_json", is_flag=True, help="Keys: run_id, kernel, labels, n_probe, layers[{layer, matrix, mean_cross}].")
@pass_app
def cka(app: AppContext, run_ref: str, layers: str | None, kernel: str, per_task: int, as_json: bool) -> None:
    """CKA between RUN's task models on the same probe inputs, per layer; stored in the catalog.

    The task models are a hide run's task experts (latest stage), or for other methods the model
    after each finished stage. Features: each decoder layer's output, averaged over the prompt's
    tokens. Prints a task x task table per layer and the per-layer mean cross-task CKA.
    """
    from ..catalog.cka import store_cka
    from ..catalog.runs import get_run
    from ..engine.analysis.run_cka import run_cka
    from ..engine.config import ModelConfig, from_dict

    wanted = _parse_layers(layers)
    with app.catalog.session() as s:
        run = get_run(s, run_ref)
        sources, tasks = _sources(s, run)
        seed = int(run.config.get("train", {}).get("seed", 0))
        probes = _probe_records(s, tasks, per_task, seed)
        model = from_dict(ModelConfig, {"base": run.base_model, **run.config.get("model", {})})
        run_id = run.id
    result = run_cka(model, probes, layers=wanted, kernel=kernel,
                     on_event=lambda e: info(e["message"]) if e.get("type") == "log" else None, **sources)
    details = {"probe_tasks": tasks, "per_task": per_task, "features": "decoder layer output, mean over prompt tokens",
               "models": "hide task experts" if "hide_stage_dir" in sources else "model after each stage"}
    with app.catalog.session() as s:
        store_cka(s, run_id, kernel, result["labels"], result["layers"], result["n_probe"], details)
    rows = [{"layer": layer, "matrix": v["matrix"], "mean_cross": v["mean_cross"]} for layer, v in sorted(result["layers"].items())]
    if as_json:
        emit_json({"run_id": run_id, "kernel": kernel, "labels": result["labels"], "n_probe": result["n_probe"],
                   "layers": [{"layer": r["layer"], "matrix": [[_num(v) for v in line] for line in r["matrix"]],
                               "mean_cross": _num(r["mean_cross"])} for r in rows]})
        return
    labels = result["labels"]
    for r in rows:
        click.echo(f"layer {r['layer']}  (mean cross-task CKA {_fmt(r['mean_cross'])})")
        click.echo(table([""] + labels, [[name] + [_fmt(v) for v in line] for name, line in zip(labels, r["matrix"])],
                         align_right=set(range(1, len(labels) + 1))))
        click.echo("")
    click.echo(f"mean cross-task CKA per layer ({kernel}, {result['n_probe']} probes):")
    click.echo(table(["layer", "mean CKA"], [[str(r["layer"]), _fmt(r["mean_cross"])] for r in rows], align_right={0, 1}))


COMMANDS = [analyze]
