"""Run commands: run start, runs, run show."""

from __future__ import annotations

import sys

import click

from ..errors import InvalidInput
from .context import AppContext, pass_app
from .output import emit_json, fmt_num, info, table


def _parse_options(pairs: tuple[str, ...]) -> dict:
    """`-o key=value` method options; values parsed as JSON where they parse, else kept as text."""
    import json

    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise InvalidInput(f"bad method option {pair!r}", hint="write -o KEY=VALUE, e.g. -o fusion=sum")
        try:
            out[key.replace("-", "_")] = json.loads(value)
        except json.JSONDecodeError:
            out[key.replace("-", "_")] = value
    return out


def method_flags(command):
    """Add `--opt-name` for every option any registered method declares (see `Method.option_help`).

    The flags default to None and only the ones given reach the method, which refuses options
    it does not know, so `--fusion` with `--method seq-lora` is a clear error.
    """
    from ..engine.methods import METHODS

    seen: dict[str, type] = {}
    for cls in METHODS.values():
        for key, default in cls.defaults.items():
            if key not in seen:
                seen[key] = cls
    for key in reversed(list(seen)):
        cls = seen[key]
        default = cls.defaults[key]
        kind = {bool: click.BOOL, int: click.INT, float: click.FLOAT}.get(type(default), click.STRING)
        owners = ", ".join(c.name for c in METHODS.values() if key in c.defaults)
        help_text = f"[{owners}] {cls.option_help.get(key, '')} (default {default!r})".replace("  ", " ")
        command = click.option(f"--{key.replace('_', '-')}", f"mopt_{key}", type=kind, default=None,
                               help=help_text)(command)
    return command


def _flag_options(kwargs: dict) -> dict:
    return {k.removeprefix("mopt_"): kwargs.pop(k) for k in [k for k in kwargs if k.startswith("mopt_")]
            if kwargs[k] is not None}


@click.group("run")
def run() -> None:
    """Start or inspect one continual run."""


@run.command("start")
@click.option("--method", required=True, help="seq-lora | joint (see `hicl run methods`).")
@click.option("--tasks", "task_list", required=True, help="Comma-separated task names, in training order.")
@click.option("--base", required=True, help="Base model: a local folder or a hub id (image-text-to-text).")
@click.option("--name", help="A name for the run (default: method + tasks).")
@click.option("--rank", type=int, default=8, show_default=True, help="LoRA rank.")
@click.option("--alpha", type=float, help="LoRA alpha (default 2 x rank).")
@click.option("--lr", type=float, default=2e-4, show_default=True)
@click.option("--epochs", type=click.IntRange(1), default=1, show_default=True)
@click.option("--max-steps", type=int, help="Optimizer steps per stage (overrides --epochs).")
@click.option("--batch-size", type=int, default=8, show_default=True)
@click.option("--grad-accum", type=int, default=1, show_default=True)
@click.option("--warmup-ratio", type=float, default=0.03, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--checkpoint-every", type=int, default=50, show_default=True, help="Steps between checkpoints.")
@click.option("--eval-batch-size", type=int, default=32, show_default=True)
@click.option("--max-new-tokens", type=int, default=32, show_default=True)
@click.option("--eval-all", is_flag=True, help="Evaluate every task after every stage (forward transfer).")
@click.option("--device", help="cuda, cpu, cuda:1 ... (default: CUDA if available).")
@click.option("--dtype", type=click.Choice(["bfloat16", "float16", "float32"]), help="Default: bfloat16 on CUDA, float32 on CPU.")
@click.option("-o", "--option", "options", multiple=True, help="Method option KEY=VALUE (repeatable).")
@method_flags
@click.option("--wait", is_flag=True, help="Run the stages here, in the foreground, until the run ends.")
@click.option("--no-worker", is_flag=True, help="Do not start a background worker (run `hicl worker` yourself).")
@click.option("--json", "as_json", is_flag=True)
@pass_app
def run_start(app: AppContext, method, task_list, base, name, rank, alpha, lr, epochs, max_steps, batch_size,
              grad_accum, warmup_ratio, seed, checkpoint_every, eval_batch_size, max_new_tokens, eval_all,
              device, dtype, options, wait, no_worker, as_json, **method_opts) -> None:
    """Record a run and queue one job per stage; prints the run id.

    Method options come as flags (`--fusion sum`) or as `-o KEY=VALUE`; a flag wins.
    """
    from ..services.launch import start_run

    config = {
        "train": {"rank": rank, "alpha": alpha if alpha is not None else 2 * rank, "lr": lr, "epochs": epochs,
                  "max_steps": max_steps, "batch_size": batch_size, "grad_accum": grad_accum,
                  "warmup_ratio": warmup_ratio, "seed": seed, "checkpoint_every": checkpoint_every},
        "eval": {"batch_size": eval_batch_size, "max_new_tokens": max_new_tokens},
        "model": {k: v for k, v in {"device": device, "dtype": dtype}.items() if v},
        "method_options": {**_parse_options(options), **_flag_options(method_opts)},
        "eval_all": eval_all,
    }
    tasks = [t.strip() for t in task_list.split(",") if t.strip()]
    run_row = start_run(app.catalog, method=method, tasks=tasks, base=base, name=name, config=config)
    if as_json and not wait:
        emit_json({"run_id": run_row.id, "name": run_row.name, "status": run_row.status})
    elif not as_json:
        click.echo(run_row.id)
        info(f"run {run_row.id} ({run_row.name}) queued; `hicl jobs` and `hicl run show {run_row.id}` follow it")
    if not wait:
        from .jobs import ensure_worker

        ensure_worker(app, no_worker)
    if wait:
        status = wait_for_run(app, run_row.id)
        if as_json:
            emit_json({"run_id": run_row.id, "name": run_row.name, "status": status})
        if status != "completed":
            sys.exit(1)


def wait_for_run(app: AppContext, run_id: int) -> str:
    """Run the run's jobs in this process, with a one-line progress display on a terminal."""
    from ..catalog import queue
    from ..catalog.models import Run
    from ..worker.loop import Worker

    tty = sys.stderr.isatty()
    on_progress = progress_printer()

    def on_job(job):
        if tty:
            click.echo("", err=True)
        info(f"job {job.id}: run {job.run_id} stage {job.payload.get('stage_index')}")

    worker = Worker(app.catalog, on_progress=on_progress, on_job=on_job, poll=0.5, isolate=True)
    worker.run(until=lambda: queue.runnable_jobs(app.catalog, run_id) == 0)
    if tty:
        click.echo("", err=True)
    with app.catalog.session() as s:
        r = s.get(Run, run_id)
        if r.status != "completed" and r.error:
            info(f"run {run_id} {r.status}: {r.error}")
        return r.status


@run.command("resume")
@click.argument("run_ref")
@click.option("--wait", is_flag=True, help="Run the rest here, in the foreground, until the run ends.")
@click.option("--no-worker", is_flag=True, help="Do not start a background worker.")
@pass_app
def run_resume(app: AppContext, run_ref: str, wait: bool, no_worker: bool) -> None:
    """Continue a failed or cancelled run from its first unfinished stage, which resumes from
    its last checkpoint."""
    from ..catalog import queue

    run_id, ids = queue.resume_run(app.catalog, run_ref)
    if ids:
        info(f"run {run_id}: job(s) {', '.join(map(str, ids))} queued again")
    else:
        info(f"run {run_id} is still queued or running: nothing to re-queue")
    if wait:
        if wait_for_run(app, run_id) != "completed":
            sys.exit(1)
    else:
        from .jobs import ensure_worker

        ensure_worker(app, no_worker)


def progress_printer():
    """A progress callback drawing one updating line on a terminal (silent when piped)."""
    if not sys.stderr.isatty():
        return None

    def on_progress(stage, p):
        total = p.get("total") or 0
        step = p.get("step") or 0
        width = 24
        filled = int(width * step / total) if total else 0
        eta = p.get("eta_s")
        line = (f"\rstage {stage.index} [{'#' * filled}{'.' * (width - filled)}] {step}/{total} "
                f"loss {fmt_num(p.get('loss'), 3)} {fmt_num(p.get('samples_per_s'), 1)} samples/s"
                f"{f' eta {eta:.0f}s' if eta is not None else ''}")
        click.echo(line.ljust(90), err=True, nl=False)

    return on_progress


@click.command("runs")
@click.option("--json", "as_json", is_flag=True)
@pass_app
def runs(app: AppContext, as_json: bool) -> None:
    """List runs, newest first, with their stage progress and Avg/Last so far."""
    from ..catalog.report import run_summary
    from ..catalog.runs import list_runs

    with app.catalog.session() as s:
        rows = [run_summary(s, r) for r in list_runs(s)]
    if as_json:
        emit_json(rows)
        return
    if not rows:
        info("no runs yet: `hicl run start --method seq-lora --tasks A,B --base MODEL`")
        return
    click.echo(table(["id", "name", "method", "stages", "status", "avg", "last"],
                     [[r["id"], r["name"], r["method"], f"{r['stages_done']}/{r['stages']}", r["status"],
                       r["metrics"]["avg"], r["metrics"]["last"]] for r in rows]))


@run.command("show")
@click.argument("run_ref")
@click.option("--json", "as_json", is_flag=True)
@pass_app
def run_show(app: AppContext, run_ref: str, as_json: bool) -> None:
    """Stages, jobs, adapters, the accuracy matrix and the metrics of a run."""
    from ..catalog.report import run_detail
    from ..core.clmetrics import format_table

    with app.catalog.session() as s:
        from ..catalog.runs import get_run

        data = run_detail(s, get_run(s, run_ref))
    if as_json:
        emit_json(data)
        return
    click.echo(f"run {data['id']} {data['name']}: {data['method']} on {data['base_model']} — {data['status']}")
    if data["error"]:
        click.echo(f"error: {data['error']}")
    click.echo(f"tasks: {' → '.join(data['task_order'])}\n")
    click.echo(table(["stage", "trains on", "status", "steps", "progress"],
                     [[st["index"], ",".join(st["train_tasks"]), st["status"], st["steps"], st["progress"]]
                      for st in data["stages"]]))
    if data["adapters"]:
        click.echo("")
        click.echo(table(["stage", "adapter", "size", "sha256"],
                         [[a["stage_index"], a["path"], _size(a["size_bytes"]), a["sha256"][:16]] for a in data["adapters"]]))
    if data["pushes"]:
        click.echo("\npushed to the hub:")
        click.echo(table(["stage", "repo", "revision", "tag", "commit", "url"],
                         [[p["stage_index"], p["repo_id"], p["revision"], p["tag"] or "", p["commit_oid"][:12],
                           p["commit_url"]] for p in data["pushes"]]))
    click.echo("\naccuracy matrix (row = after training stage, column = task):")
    click.echo(format_table(data["task_order"], data["matrix"]))
    click.echo("")
    click.echo(_metrics_line(data["metrics"]))
    if data["general"]:
        click.echo(_general_line(data["general"]))


def _size(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def _metrics_line(m: dict) -> str:
    keys = [("mft", "MFT"), ("last", "Last"), ("avg", "Avg"), ("bwt", "BWT"), ("forgetting", "Forgetting"), ("fwt", "FWT")]
    return "  ".join(f"{label} {fmt_num(m.get(k))}" for k, label in keys if k != "fwt" or m.get(k) is not None)


def _general_line(g: dict) -> str:
    """General retention: the held-out general task's score after the sequence minus before it."""
    ratio = f" (ratio {g['ratio']:.2f})" if g.get("ratio") is not None else ""
    return (f"general retention on {g['task']}: {fmt_num(g['base'])} before -> {fmt_num(g['last'])} after = "
            f"{fmt_num(g['retention'])} points{ratio}")


COMMANDS = [run, runs]
