"""Run commands: run start, runs, run show."""

from __future__ import annotations

import sys

import click

from ..core.errors import InvalidInput
from ..engine.config import EvalConfig, TrainConfig
from ..services.run_config import default, run_config
from ..services.run_defaults import DEFAULTS_HELP, PRESETS, TINY, TINY_PARAMS
from .context import AppContext, pass_app
from .output import emit_json, fmt_num, info, table

#: run-level option names of `run start`; a method option of the same name gets a `--METHOD-` prefix
RUN_FLAGS = ("method", "tasks", "order", "base", "name", "preset", "rank", "alpha", "dropout", "targets", "lr",
             "epochs", "max_steps", "batch_size", "grad_accum", "warmup_ratio", "seed", "checkpoint_every",
             "gradient_checkpointing", "eval_batch_size", "max_new_tokens", "eval_all", "device", "dtype", "nproc",
             "strategy", "launcher_args", "option", "push_to", "private", "wait", "no_worker", "json")
#: flag dest -> (option name, the methods that declare it)
METHOD_FLAGS: dict[str, tuple[str, tuple[str, ...]]] = {}


def _click_type(spec):
    if spec.kind == "choice":
        return click.Choice(spec.choices, case_sensitive=False)
    return {"bool": click.BOOL, "int": click.INT, "float": click.FLOAT}.get(spec.kind, click.STRING)


def method_flags(command):
    """Add a flag for every option of every registered method, generated from its options dataclass.

    An option several methods declare with the same kind shares one flag (`--expert-rank`); one
    whose name is a run-level flag, or that two methods declare differently, becomes
    `--METHOD-NAME`. The flags default to None and only the ones given reach the method, so
    `--fusion` with `--method seq-lora` is a clear error.
    """
    from ..engine.methods import METHODS
    from ..engine.methods.options import specs

    owners: dict[str, list[tuple[str, object]]] = {}
    for name, cls in METHODS.items():
        for spec in specs(cls.Options):
            owners.setdefault(spec.name, []).append((name, spec))
    flags = []
    for key, declared in owners.items():
        shared = key not in RUN_FLAGS and len({(s.kind, s.choices) for _, s in declared}) == 1
        groups = [declared] if shared else [[d] for d in declared]
        for group in groups:
            methods = tuple(m for m, _ in group)
            spec = group[0][1]
            flag = key if shared else f"{methods[0]}_{key}"
            dest = "mopt_" + flag.replace("-", "_")
            METHOD_FLAGS[dest] = (key, methods)
            help_text = f"[{', '.join(methods)}] {spec.help} (default {spec.default!r})".replace("  ", " ")
            flags.append(click.option(f"--{flag.replace('_', '-')}", dest, type=_click_type(spec), default=None,
                                      help=help_text))
    for add in reversed(flags):
        command = add(command)
    return command


def _flag_options(kwargs: dict, method: str) -> dict:
    """The method options given as flags, refusing a flag of another method."""
    out = {}
    for dest in [k for k in kwargs if k.startswith("mopt_")]:
        value = kwargs.pop(dest)
        if value is None:
            continue
        key, methods = METHOD_FLAGS[dest]
        if method not in methods:
            flag = "--" + dest.removeprefix("mopt_").replace("_", "-")
            raise InvalidInput(f"{flag} is an option of {', '.join(methods)}, not of {method}",
                               hint=f"`hicl run methods {method}` lists {method}'s options")
        out[key] = value
    return out


def _method_help() -> str:
    from ..engine.methods import method_names

    return f"One of {', '.join(method_names())} (`hicl run methods` describes them)."


@click.group("run")
def run() -> None:
    """Start or inspect one continual run."""


@run.command("start")
@click.option("--method", required=True, help=_method_help())
@click.option("--tasks", "task_list", help="Comma-separated task names, in training order.")
@click.option("--order", help="A named task order instead of --tasks: a suite's, e.g. ucit (`hicl suites` lists them).")
@click.option("--base", required=True, help="Base model: a local folder or a hub id (image-text-to-text).")
@click.option("--name", help="A name for the run (default: method + tasks).")
@click.option("--preset", type=click.Choice(sorted(PRESETS)), help="Start from a named set of settings; the flags given "
                                                                  "win. demo: `hicl demo`'s settings.")
@click.option("--rank", type=int, help=f"LoRA rank (default {default(TrainConfig, 'rank')}).")
@click.option("--alpha", type=float, help="LoRA alpha (default 2 x rank).")
@click.option("--dropout", type=float, help=f"LoRA dropout (default {default(TrainConfig, 'dropout')}; 0 makes "
                                             "--nproc N follow the --nproc 1 trajectory exactly).")
@click.option("--targets", help="LoRA target modules inside the language model's decoder layers, comma-separated: "
                                 "leaf names (q_proj,v_proj) or paths in a layer (self_attn.q_proj) "
                                 "(default: every linear layer there).")
@click.option("--lr", type=float, help=f"Learning rate (default {default(TrainConfig, 'lr')}; {TINY['lr']} for a base "
                                       f"under {TINY_PARAMS // 1_000_000}M parameters).")
@click.option("--epochs", type=click.IntRange(1), help=f"Epochs per stage (default {default(TrainConfig, 'epochs')}; "
                                                      f"{TINY['epochs']} for a base under {TINY_PARAMS // 1_000_000}M "
                                                      "parameters).")
@click.option("--max-steps", type=int, help="Optimizer steps per stage (overrides --epochs).")
@click.option("--batch-size", type=int, help=f"Global batch size (default {default(TrainConfig, 'batch_size')}).")
@click.option("--grad-accum", type=int, help=f"Gradient accumulation steps (default {default(TrainConfig, 'grad_accum')}).")
@click.option("--warmup-ratio", type=float, help=f"Share of the steps with a rising lr (default "
                                                 f"{default(TrainConfig, 'warmup_ratio')}; {TINY['warmup_ratio']} for a "
                                                 f"base under {TINY_PARAMS // 1_000_000}M parameters).")
@click.option("--seed", type=int, help=f"Random seed (default {default(TrainConfig, 'seed')}).")
@click.option("--checkpoint-every", type=int,
              help=f"Steps between checkpoints (default {default(TrainConfig, 'checkpoint_every')}).")
@click.option("--gradient-checkpointing/--no-gradient-checkpointing", default=None,
              help="Recompute decoder activations in the backward pass: less memory, more compute "
                   "(default: on for models above 1B parameters).")
@click.option("--eval-batch-size", type=int, help=f"Evaluation batch size (default {default(EvalConfig, 'batch_size')}).")
@click.option("--max-new-tokens", type=int, help=f"Longest generated answer, in tokens (default "
                                                 f"{default(EvalConfig, 'max_new_tokens')}).")
@click.option("--eval-all", is_flag=True, help="Evaluate every task after every stage (forward transfer).")
@click.option("--device", help="cuda, cpu, cuda:1 ... (default: CUDA if available).")
@click.option("--dtype", type=click.Choice(["bfloat16", "float16", "float32"]), help="Default: bfloat16 on CUDA, float32 on CPU.")
@click.option("--nproc", type=int, help="Data-parallel processes (GPUs) per stage, launched with torchrun; "
                                       "--batch-size stays the global batch (default: the worker's --nproc, else 1).")
@click.option("--strategy", type=click.Choice(["ddp", "fsdp"]),
              help="How the --nproc ranks hold the model: ddp replicates it, fsdp shards the language model "
                   "while training (default ddp).")
@click.option("--launcher-args", help="Extra torchrun flags, e.g. for several nodes: "
                                      "\"--nnodes 2 --rdzv-backend c10d --rdzv-endpoint HOST:29400\".")
@click.option("-o", "--option", "options", multiple=True, help="Method option KEY=VALUE (repeatable).")
@method_flags
@click.option("--push-to", "push_to", metavar="REPO_ID",
              help="Publish each stage to this Hugging Face Hub repo as soon as it is scored: one commit and a "
                   "stage-K tag per stage (`hicl push`'s layout), as a job of its own retried with back-off; "
                   "a push failure never stops training. Hub from HF_ENDPOINT, token from HF_TOKEN or the login.")
@click.option("--private", is_flag=True, help="With --push-to: create the repo private.")
@click.option("--wait", is_flag=True, help="Run the stages here, in the foreground, until the run ends.")
@click.option("--no-worker", is_flag=True, help="Do not start a background worker (run `hicl worker` yourself).")
@click.option("--json", "as_json", is_flag=True, help="Print {run_id, name, status, config} (with --wait: when the run ends).")
@pass_app
def run_start(app: AppContext, method, task_list, order, base, name, preset, rank, alpha, dropout, targets, lr, epochs,
              max_steps, batch_size, grad_accum, warmup_ratio, seed, checkpoint_every, gradient_checkpointing,
              eval_batch_size, max_new_tokens, eval_all, device, dtype, nproc, strategy, launcher_args, options, push_to,
              private, wait, no_worker, as_json, **method_opts) -> None:
    """Record a run and queue one job per stage; prints the run id and the resolved settings.

    Method options come as flags (`--fusion sum`) or as `-o KEY=VALUE`; a flag wins. The base is
    found (folder, Hugging Face cache, or the hub) before anything is queued.

    {defaults}
    """
    from ..services.base_model import resolve_base
    from ..services.launch import start_run
    from ..services.method_options import parse_pairs
    from ..services.run_defaults import defaults_for, merge

    found = resolve_base(base)
    train_defaults, eval_defaults, source = defaults_for(found, preset)
    config = run_config(
        train=merge({"rank": rank, "alpha": alpha, "dropout": dropout, "lr": lr, "epochs": epochs, "max_steps": max_steps,
                     "targets": [t.strip() for t in (targets or "").split(",") if t.strip()] or None,
                     "batch_size": batch_size, "grad_accum": grad_accum, "warmup_ratio": warmup_ratio, "seed": seed,
                     "checkpoint_every": checkpoint_every, "gradient_checkpointing": gradient_checkpointing},
                    train_defaults),
        eval=merge({"batch_size": eval_batch_size, "max_new_tokens": max_new_tokens}, eval_defaults),
        model={"device": device, "dtype": dtype},
        method_options={**parse_pairs(options), **_flag_options(method_opts, method)}, eval_all=eval_all,
        nproc=nproc, launcher_args=launcher_args, strategy=strategy)
    if push_to:
        from ..hub.live import check_target

        config["publish"] = {"repo_id": push_to, "endpoint": check_target(push_to, None), "private": private,
                             "revision": "main"}
    elif private:
        raise InvalidInput("--private only goes with --push-to REPO_ID")
    if (task_list is None) == (order is None):
        raise InvalidInput("pass exactly one of --tasks and --order",
                           hint="--tasks a,b,c names the tasks; --order ucit takes a suite's order")
    if order is not None:
        from ..services.suites import named_order

        tasks = named_order(order)
    else:
        tasks = [t.strip() for t in task_list.split(",") if t.strip()]
    config["defaults"] = source
    run_row = start_run(app.catalog, method=method, tasks=tasks, base=found, name=name, config=config)
    if as_json and not wait:
        emit_json({"run_id": run_row.id, "name": run_row.name, "status": run_row.status, "config": config})
    elif not as_json:
        click.echo(run_row.id)
        info(f"run {run_row.id} ({run_row.name}) queued; `hicl jobs` and `hicl run show {run_row.id}` follow it")
        for line in config_lines(config):
            info(f"  {line}")
    if not wait:
        from .jobs import ensure_worker

        ensure_worker(app, no_worker)
    if wait:
        status = wait_for_run(app, run_row.id)
        if as_json:
            emit_json({"run_id": run_row.id, "name": run_row.name, "status": status, "config": config})
        if status != "completed":
            sys.exit(1)


run_start.help = run_start.help.format(defaults=DEFAULTS_HELP)


def config_lines(config: dict) -> list[str]:
    """The settings a run recorded, as `run start` and `run show` print them."""
    t, e = config.get("train") or {}, config.get("eval") or {}

    def g(key: str, section: dict | None = None) -> str:  # a run recorded before a field existed has no value
        value = (t if section is None else section).get(key)
        return "—" if value is None else f"{value:g}" if isinstance(value, float) else str(value)

    steps = f"{g('max_steps')} steps" if t.get("max_steps") else f"{g('epochs')} epoch(s)"
    lines = [f"train: {steps} a stage, lr {g('lr')}, batch {g('batch_size')} x {g('grad_accum')} accum, "
             f"warmup {g('warmup_ratio')}, LoRA rank {g('rank')} alpha {g('alpha')} dropout "
             f"{g('dropout')}, seed {g('seed')}, checkpoint every {g('checkpoint_every')} steps"
             if t else "train: —",
             f"eval: batch {g('batch_size', e)}, up to {g('max_new_tokens', e)} new tokens, "
             + ("every task after every stage" if config.get("eval_all") else "the tasks trained so far")
             + (f", general task {config['general_task']}" if config.get("general_task") else "")]
    options = config.get("method_options") or {}
    lines.append("method options: " + (", ".join(f"{k}={v}" for k, v in options.items()) or "the method's defaults"))
    model, launch = config.get("model") or {}, config.get("launch") or {}
    where = [f"device {model.get('device') or 'auto'}", f"dtype {model.get('dtype') or 'auto'}"]
    if launch:
        where.append(" ".join(f"{k} {' '.join(v) if isinstance(v, list) else v}" for k, v in launch.items()))
    lines.append("model: " + ", ".join(where))
    if config.get("defaults"):
        lines.append(f"unset values from: {config['defaults']}")
    return lines


def wait_for_run(app: AppContext, run_id: int) -> str:
    """Run the run's jobs in this process, with a one-line progress display on a terminal."""
    from sqlmodel import select

    from ..catalog import queue
    from ..catalog.models import Job, Run
    from ..worker.loop import Worker
    from .worker import job_label

    tty = sys.stderr.isatty()
    on_progress = progress_printer()

    def on_job(job):
        if tty:
            click.echo("", err=True)
        info(job_label(job))

    worker = Worker(app.catalog, on_progress=on_progress, on_job=on_job, poll=0.5, isolate=True)
    worker.run(until=lambda: queue.runnable_jobs(app.catalog, run_id) == 0)
    if tty:
        click.echo("", err=True)
    with app.catalog.session() as s:
        r = s.get(Run, run_id)
        if r.status != "completed" and r.error:
            info(f"run {run_id} {r.status}: {r.error}")
        waiting = [j for j in s.exec(select(Job).where(Job.run_id == run_id, Job.kind == "push",
                                                       Job.status.in_(queue.ACTIVE)))]
        if waiting:
            info(f"the push of stage(s) {', '.join(str(j.payload.get('stage_index')) for j in waiting)} waits for the hub "
                 f"({(waiting[0].error or '').splitlines()[0][:120]}); `hicl worker` (or the next run) finishes it")
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


@run.command("extend")
@click.argument("run_ref", metavar="RUN")
@click.option("--tasks", "task_list", required=True, help="Comma-separated new task names, in training order.")
@click.option("--wait", is_flag=True, help="Run the new stages here, in the foreground, until the run ends.")
@click.option("--no-worker", is_flag=True, help="Do not start a background worker.")
@click.option("--json", "as_json", is_flag=True, help="Print {run_id, jobs, status} (with --wait: when the run ends).")
@pass_app
def run_extend(app: AppContext, run_ref: str, task_list: str, wait: bool, no_worker: bool, as_json: bool) -> None:
    """Continue a completed run (one of yours, or one `hicl pull` brought in) with new tasks: one
    stage per task, each trained on the last stage's state with the run's method and settings,
    and scored on every task seen so far that this workspace holds."""
    from ..services.extend import extend_run

    tasks = [t.strip() for t in task_list.split(",") if t.strip()]
    run_row, ids = extend_run(app.catalog, run_ref, tasks)
    if as_json and not wait:
        emit_json({"run_id": run_row.id, "jobs": ids, "status": run_row.status})
    elif not as_json:
        info(f"run {run_row.id} ({run_row.name}): {len(ids)} new stage(s) queued (job(s) {', '.join(map(str, ids))})")
    if wait:
        status = wait_for_run(app, run_row.id)
        if as_json:
            emit_json({"run_id": run_row.id, "jobs": ids, "status": status})
        if status != "completed":
            sys.exit(1)
    else:
        from .jobs import ensure_worker

        ensure_worker(app, no_worker)


@run.command("eval")
@click.argument("run_ref", metavar="RUN")
@click.option("--tasks", "task_list", required=True, help="Comma-separated tasks of the run to score (this workspace's copies).")
@click.option("--stage", type=click.IntRange(1), help="Score only this stage, counted from 1 as `run show` does "
                                                    "(default: every finished stage).")
@click.option("--wait", is_flag=True, help="Run the evaluation here, in the foreground.")
@click.option("--no-worker", is_flag=True, help="Do not start a background worker.")
@click.option("--json", "as_json", is_flag=True, help="Print {run_id, job_id, stages (0-based indices), status}.")
@pass_app
def run_eval(app: AppContext, run_ref: str, task_list: str, stage: int | None, wait: bool, no_worker: bool,
             as_json: bool) -> None:
    """Score a run's finished stages on tasks of this workspace (e.g. a pulled run on your own copy
    of its tasks); the scores replace those matrix cells."""
    from ..catalog import queue
    from ..services.evaluate import queue_eval

    tasks = [t.strip() for t in task_list.split(",") if t.strip()]
    run_id, job_id, stages = queue_eval(app.catalog, run_ref, tasks, None if stage is None else stage - 1)
    if not as_json:
        info(f"run {run_id}: evaluation of stage(s) {', '.join(str(k + 1) for k in stages)} on {', '.join(tasks)} queued "
             f"(job {job_id})")
    if wait:
        wait_for_run(app, run_id)
        status = queue.get_job(app.catalog, job_id).status
    else:
        from .jobs import ensure_worker

        ensure_worker(app, no_worker)
        status = "queued"
    if as_json:
        emit_json({"run_id": run_id, "job_id": job_id, "stages": stages, "status": status})
    if wait and status != "done":
        sys.exit(1)


@run.command("methods")
@click.argument("name", required=False)
@click.option("--json", "as_json", is_flag=True,
              help="Without NAME: [{name, summary, options (how many)}]; with NAME: {name, summary, reference, "
                   "documentation, options: [{name, flag, kind, choices, default, help}]}.")
def run_methods(name: str | None, as_json: bool) -> None:
    """List the methods, or describe one: what it does, its equations, its options and defaults."""
    from ..engine.methods import METHODS, get_method
    from ..engine.methods.options import specs

    if name is None:
        rows = [{"name": n, "summary": cls.summary(), "options": len(specs(cls.Options))} for n, cls in METHODS.items()]
        if as_json:
            emit_json(rows)
        else:
            click.echo(table(["method", "options", "summary"], [[r["name"], r["options"], r["summary"]] for r in rows]))
            info("`hicl run methods NAME` describes one; `hicl run start --method NAME ...` runs it")
        return
    from ..engine.methods import method_names

    if name not in method_names():
        raise InvalidInput(f"unknown method {name!r}", hint=f"choose one of {', '.join(method_names())}")
    cls = type(get_method(name))
    options = [{"name": o.name, "flag": _flag_of(name, o.name), "kind": o.kind, "choices": list(o.choices),
                "default": o.default, "help": o.help} for o in specs(cls.Options)]
    if as_json:
        emit_json({"name": name, "summary": cls.summary(), "reference": cls.reference,
                   "documentation": cls.documentation(), "options": options})
        return
    click.echo(f"{name}: {cls.summary()}")
    if cls.reference:
        click.echo(f"reference: {cls.reference}")
    click.echo("\n" + cls.documentation().split("\n", 1)[-1].strip() + "\n")
    import textwrap

    click.echo("options:" if options else "no options")
    for o in options:
        click.echo(f"  {o['flag']} {'|'.join(o['choices']) or o['kind'].upper()}  (default {o['default']!r})")
        click.echo(textwrap.fill(o["help"], width=96, initial_indent="      ", subsequent_indent="      "))


def _flag_of(method: str, key: str) -> str:
    for dest, (name, methods) in METHOD_FLAGS.items():
        if name == key and method in methods:
            return "--" + dest.removeprefix("mopt_").replace("_", "-")
    return f"-o {key}=..."


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
        line = (f"\rstage {stage.index + 1} [{'#' * filled}{'.' * (width - filled)}] {step}/{total} "
                f"loss {fmt_num(p.get('loss'), 3)} {fmt_num(p.get('samples_per_s'), 1)} samples/s"
                f"{f' eta {eta:.0f}s' if eta is not None else ''}")
        click.echo(line.ljust(90), err=True, nl=False)

    return on_progress


@click.command("runs")
@click.option("--json", "as_json", is_flag=True,
              help="[{id, name, method, status, stages, stages_done, created_at, metrics: {mft, last, avg, bwt, "
                   "forgetting, fwt}}], newest first.")
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
@click.option("--json", "as_json", is_flag=True,
              help="{id, name, method, base_model, status, error, task_order, config (what `run start` printed), env, "
                   "created_at, started_at, finished_at, stages: [{index, train_tasks, status, steps, job_id, "
                   "job_status, progress, error}], adapters: [{stage_index, path, sha256, size_bytes, files}], "
                   "pushes: [{id, stage_index, repo_id, endpoint, revision, commit_oid, commit_url, tag, private, "
                   "files, created_at}], matrix, zero_shot, metrics, general}. index and stage_index are 0-based "
                   "positions (stage index + 1 is the stage the text output shows).")
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
    click.echo(f"tasks: {' → '.join(data['task_order'])}")
    if data["env"]:
        click.echo(f"environment: {env_line(data['env'])}")
    for line in config_lines(data["config"] or {}):
        click.echo(line)
    click.echo("")
    click.echo(table(["stage", "trains on", "status", "steps", "progress"],
                     [[st["index"] + 1, ",".join(st["train_tasks"]), st["status"], st["steps"], st["progress"]]
                      for st in data["stages"]]))
    if data["adapters"]:
        click.echo("")
        click.echo(table(["stage", "adapter", "size", "sha256"],
                         [["" if a["stage_index"] is None else a["stage_index"] + 1, a["path"], _size(a["size_bytes"]),
                           a["sha256"][:16]] for a in data["adapters"]]))
    if data["pushes"]:
        click.echo("\npushed to the hub:")
        click.echo(table(["stage", "repo", "revision", "tag", "commit", "url"],
                         [[p["stage_index"] + 1, p["repo_id"], p["revision"], p["tag"] or "", p["commit_oid"][:12],
                           p["commit_url"]] for p in data["pushes"]]))
    click.echo("\naccuracy matrix (row = after training stage, column = task):")
    click.echo(format_table(data["task_order"], data["matrix"]))
    click.echo("")
    click.echo(_metrics_line(data["metrics"]))
    if data["general"]:
        click.echo(_general_line(data["general"]))


def env_line(env: dict) -> str:
    """'hicl 0.1.0 (61aacb0), python 3.11.7, torch 2.13.0, ... on cpu (Intel Xeon), float32, 2 threads, seed 0'."""
    parts = []
    if env.get("hicl"):
        commit = env.get("hicl_commit")
        parts.append(f"hicl {env['hicl']}" + (f" ({commit[:12]})" if commit else ""))
    parts += [f"{key} {env[key]}" for key in ("python", "torch", "transformers", "peft", "cuda") if env.get(key)]
    where = env.get("device", "?")
    chip = env.get("gpu") or env.get("cpu")
    parts.append(f"on {where}" + (f" ({chip})" if chip else ""))
    parts += [str(env[key]) for key in ("dtype",) if env.get(key)]
    if env.get("threads") is not None:
        parts.append(f"{env['threads']} threads")
    if env.get("world_size", 1) != 1:
        parts.append(f"{env['world_size']} processes")
    if env.get("seed") is not None:
        parts.append(f"seed {env['seed']}")
    return ", ".join(parts)


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
