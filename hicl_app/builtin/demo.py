"""`hicl demo`: the whole job on a built-in default that runs on a laptop CPU with no downloads.

Generate the benchmark, build (or reuse) the pretrained tiny base, add the tasks, run every
method over the same task order through the real catalog and worker, and report from the
catalog. Everything is cached in the workspace, so a second demo skips the preparation.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from ..catalog.db import Catalog
from ..core.errors import Conflict, InvalidInput
from ..services.method_options import check_method, parse_variant
from ..services.run_config import run_config
from .tinybase import BaseRecipe

#: What `hicl demo` compares: the two baselines and each method once, in the configuration the
#: README's results choose for this benchmark (a `:key=value` label changes one option; see
#: `services.method_options.parse_variant`): hide with its experts kept where CKA says the layers
#: differ, top-1 routing and each expert compressed to rank 2; llava-c with the aligned SAC overlap
#: and a UIR weight of 0.1. `--methods` runs the methods' defaults (`hide`, `llava-c`) or any other
#: variant. A fixed list: a newly registered method joins `--methods all`, not the default demo.
DEFAULT_METHODS = ("seq-lora", "joint", "hide:expand=auto:routing=top1:expert_rank=2",
                   "llava-c:sac_overlap=aligned:uir_weight=0.1")


def default_methods() -> tuple[str, ...]:
    """What `hicl demo` runs without --methods: DEFAULT_METHODS."""
    return DEFAULT_METHODS


def all_methods() -> tuple[str, ...]:
    """`--methods all`: DEFAULT_METHODS, then every other registered method with its defaults."""
    from ..engine.methods import method_names

    listed = {label.split(":")[0] for label in DEFAULT_METHODS}
    return DEFAULT_METHODS + tuple(m for m in method_names() if m not in listed)


@dataclass
class DemoConfig:
    #: the first four benchmark tasks (shapes, chartqa, caption-scene, count: a multiple-choice
    #: task, a chart, a caption and a counting task); `--tasks 6` adds math and caption-style. Six
    #: tasks with these test sets and steps do not fit the demo's five minutes on two cores
    tasks: int = 4
    train: int = 250
    #: test samples per task: with 250, a 10-point gap on a right/wrong task lies outside its 95%
    #: paired bootstrap interval even when the two runs' errors are independent near 50% accuracy
    #: (half the samples answered differently: sd of a sample's difference 0.7, 1.96 x 0.7 / sqrt(250)
    #: = 8.7 points; at 200 it is 9.7, too close to call with 1000 resamples); 50 leave 19 points either way
    test: int = 250
    #: the seed of the benchmark, the base and (unless `train_seeds`) the training
    seed: int = 0
    #: training seeds (LoRA initialisation, data order): each method runs once per seed on the same
    #: benchmark and base (empty: `seed` alone)
    train_seeds: tuple[int, ...] = ()
    #: paired bootstrap resamples for the intervals against seq-lora (0: none)
    resamples: int = 1000
    methods: tuple[str, ...] = DEFAULT_METHODS
    #: fewer steps learn only each task's answer format (a constant answer); `--ceilings` shows
    #: what these steps reach on each task alone
    steps_per_task: int = 130
    batch_size: int = 8
    lr: float = 4e-3  # lower, a fresh LoRA still answers in the base's style after these steps
    rank: int = 8
    #: LoRA dropout: 0 here, where a stage sees its samples a few times and the dropout masks are a
    #: large part of each step's cost on a CPU
    dropout: float = 0.0
    max_new_tokens: int = 12
    #: the tiny base's pretraining, shorter than `hicl tiny-base`'s recipe (BaseRecipe) so that the
    #: build is about a third of the demo: its tower reads shapes and counts less well
    base_steps: int = 220
    base_samples: int = BaseRecipe.samples
    base_vision_steps: int = 800
    base_vision_samples: int = 12000
    extra_options: dict = field(default_factory=dict)
    #: also train each task alone (seq-lora on that task only) to measure its single-task ceiling
    ceilings: bool = False
    #: worker processes that drain the runs side by side (0: one per CPU core, at most one per run);
    #: the tiny model gains almost nothing from a second torch thread, so two runs at once on two
    #: cores take about the time of one. Each worker gets cores // workers torch threads.
    workers: int = 0
    #: architecture of the tiny base (`families.FAMILIES`); each is cached under its own key
    base_family: str = "llava"

    @classmethod
    def quick(cls, **overrides) -> "DemoConfig":
        """A small version for tests: three tasks, few samples and steps."""
        base = dict(tasks=3, train=48, test=16, steps_per_task=12, base_steps=60, base_samples=128,
                    base_vision_steps=60, base_vision_samples=640, resamples=200)
        return cls(**{**base, **overrides})


Log = Callable[[str], None]


def _base_events(log: Log, on_base=None):
    """An on_event for the base build that logs what its vision tower reads on held-out scenes and
    hands every event to `on_base` (the CLI's progress bar)."""
    from .tinybase import vision_summary

    def on_event(event: dict) -> None:
        if on_base is not None:
            on_base(event)
        if event.get("kind") == "vision_accuracy":
            log(vision_summary(event["accuracy"], ("kind", "shape0", "color0", "n_objects", "tallest_at", "shortest_at")))
    return on_event


def _benchmark(catalog: Catalog, cfg: DemoConfig, log: Log) -> tuple[Path, dict]:
    from .synth import generate, read_manifest

    folder = catalog.settings.cache / f"synth-s{cfg.seed}-t{cfg.tasks}-n{cfg.train}x{cfg.test}"
    if (folder / "manifest.json").is_file():
        return folder, read_manifest(folder)
    log(f"generating the benchmark ({cfg.tasks} tasks, {cfg.train} train / {cfg.test} test each) in {folder}")
    return folder, generate(folder, tasks=cfg.tasks, train=cfg.train, test=cfg.test, seed=cfg.seed, overwrite=True)


def _prepare(catalog: Catalog, cfg: DemoConfig, log: Log) -> list[str]:
    """The benchmark written (or found in the cache) and its tasks added: their names, general last."""
    folder, manifest = _benchmark(catalog, cfg, log)
    return _add_tasks(catalog, folder, manifest, log)


def _add_tasks(catalog: Catalog, folder: Path, manifest: dict, log: Log) -> list[str]:
    """Add the benchmark's tasks, reusing ones already added from the same files."""
    from sqlmodel import select

    from ..catalog.models import Task
    from ..catalog.tasks import add_task
    from ..core.fsio import sha256_file

    names = []
    for entry in manifest["tasks"] + [manifest["general"]]:
        name, train = entry["name"], folder / entry["name"] / "train.jsonl"
        with catalog.session() as s:
            existing = s.exec(select(Task).where(Task.name == name)).first()
        if existing is not None:
            if existing.source_sha256 != sha256_file(train):
                raise Conflict(f"this workspace already has a different task named {name!r}",
                               hint="run the demo with its own --home")
        else:
            add_task(catalog, train, test_file=folder / name / "test.jsonl", scorer=entry["scorer"], name=name)
            log(f"added task {name}")
        names.append(name)
    return names


def run_demo(catalog: Catalog, cfg: DemoConfig, log: Log, on_progress=None, on_status=None, on_base=None) -> dict:
    """Prepare everything, run each method (once per training seed) to the end, and return the
    catalog's figures. `on_status` gets the runs' progress (`demo_progress.runs_status`) once a
    second while they drain; `on_base` gets the base build's events."""
    from ..engine.methods import method_names
    from . import demo_progress, demo_summary, tinybase

    variants = {label: parse_variant(label) for label in cfg.methods}
    unknown = [m for m, _ in variants.values() if m not in method_names()]
    if unknown:
        raise InvalidInput(f"unknown method(s): {', '.join(unknown)}", hint=f"available: {', '.join(method_names())}")
    for label, (method, options) in variants.items():
        check_method(method, {**cfg.extra_options.get(method, {}), **options}, what=f"method variant {label!r}: ")
    started = time.monotonic()
    recipe = tinybase.BaseRecipe(seed=cfg.seed, steps=cfg.base_steps, samples=cfg.base_samples,
                                 vision_steps=cfg.base_vision_steps, vision_samples=cfg.base_vision_samples,
                                 family=cfg.base_family)
    t0 = time.monotonic()
    if tinybase.is_built(catalog.settings.cache / recipe.key(), recipe):
        names = _prepare(catalog, cfg, log)
        base, built = tinybase.ensure(catalog.settings.cache, recipe)
    else:
        # the benchmark and its tasks are written while the base builds: the build keeps about
        # one core busy (the tiny model gains little from a second thread), the other is free
        from concurrent.futures import ThreadPoolExecutor

        said: list[str] = []
        log("writing the benchmark and adding its tasks while the tiny base builds")
        with ThreadPoolExecutor(1, thread_name_prefix="demo-prepare") as pool:
            prepared = pool.submit(_prepare, catalog, cfg, said.append)
            base, built = tinybase.ensure(catalog.settings.cache, recipe, on_event=_base_events(log, on_base))
            names = prepared.result()
        for line in said:
            log(line)
    log(f"{'built' if built else 'reusing'} the tiny base {base.name}" + (f" in {time.monotonic() - t0:.0f}s" if built else ""))
    tasks, general = names[:-1], names[-1]
    seeds = cfg.train_seeds or (cfg.seed,)
    several = len(seeds) > 1
    runs = {(label if not several else f"{label}@{seed}"):
            _start_method(catalog, cfg, method, tasks, general, base, log, options=options, train_seed=seed,
                          name=f"demo-{label}" + (f"-seed{seed}" if several else ""))
            for seed in seeds for label, (method, options) in variants.items()}
    if cfg.ceilings:
        runs.update({f"alone:{task}": _start_method(catalog, cfg, "seq-lora", [task], None, base, log,
                                                    name=f"demo-alone-{task}") for task in tasks})
    try:
        with demo_progress.watching(catalog, {label: r.id for label, r in runs.items()}, on_status):
            _drain(catalog, [r.id for r in runs.values()], _workers(cfg, len(runs)), log, on_progress,
                   announce=on_status is None)
    except KeyboardInterrupt:
        log(f"interrupted: the stages left of runs {', '.join(str(r.id) for r in runs.values())} stay queued "
            "(`hicl worker` finishes them; `hicl jobs` lists them, `hicl jobs cancel ID` drops one)")
        raise
    reports = {label: _report(catalog, run.id, log) for label, run in runs.items()}
    key = (lambda label, seed: f"{label}@{seed}") if several else (lambda label, seed: label)
    results = {label: reports[key(label, seeds[0])] for label in variants}
    by_seed = {label: {seed: reports[key(label, seed)] for seed in seeds} for label in variants}
    summary = {"seeds": list(seeds)}
    if several:
        summary.update(by_seed={label: {str(seed): r for seed, r in per.items()} for label, per in by_seed.items()},
                       across_seeds=demo_summary.across_seeds(by_seed), gains=demo_summary.gains(by_seed))
    done = {label: r["id"] for label, r in results.items() if r["status"] == "completed"}
    if cfg.resamples and demo_summary.BASELINE in done:
        summary["intervals"] = demo_summary.intervals(catalog, done, resamples=cfg.resamples)
    ceilings = {}
    if cfg.ceilings:
        for task in tasks:
            run = reports[f"alone:{task}"]
            ceilings[task] = run["matrix"][0][0] if run["status"] == "completed" else None
    return {"tasks": tasks, "general": general, "base": str(base), "runs": results, **summary,
            **({"ceilings": ceilings, "chance": _chance(tasks)} if cfg.ceilings else {}),
            "wall_s": time.monotonic() - started}


def _chance(tasks: list[str]) -> dict[str, float | None]:
    """The score of a uniform guess over a task's closed answer space (None for free text)."""
    from .synth.tasks import get_task

    out = {}
    for name in tasks:
        answers = get_task(name).answers
        out[name] = 100.0 / len(answers) if answers else None
    return out


def _start_method(catalog: Catalog, cfg: DemoConfig, method: str, tasks: list[str], general: str | None, base: Path,
                  log: Log, name: str | None = None, options: dict | None = None, train_seed: int | None = None):
    """Record one run (its stage jobs queued) through the catalog, as `hicl run start` does."""
    from ..services.launch import start_run

    steps = cfg.steps_per_task * (len(tasks) if method == "joint" else 1)
    config = run_config(
        train={"rank": cfg.rank, "lr": cfg.lr, "max_steps": steps, "dropout": cfg.dropout,
               "batch_size": cfg.batch_size, "seed": cfg.seed if train_seed is None else train_seed,
               "checkpoint_every": max(steps, 50), "warmup_ratio": 0.1},
        eval={"batch_size": 64, "max_new_tokens": cfg.max_new_tokens},
        model={"device": "cpu", "dtype": "float32"},
        method_options={**cfg.extra_options.get(method, {}), **(options or {})}, general_task=general)
    run = start_run(catalog, method=method, tasks=tasks, base=str(base), name=name or f"demo-{method}", config=config)
    log(f"run {run.id}: {method} over {' → '.join(tasks)}")
    return run


def _workers(cfg: DemoConfig, n_runs: int) -> int:
    return max(1, min(n_runs, cfg.workers or os.cpu_count() or 1))


def _busy(catalog: Catalog, run_ids: list[int]) -> bool:
    from ..catalog import queue

    return queue.runnable_jobs(catalog, list(run_ids)) > 0


def _drain(catalog: Catalog, run_ids: list[int], workers: int, log: Log, on_progress, announce: bool = True) -> None:
    """Run the queued stages of `run_ids` to the end: here, or in `workers` processes side by side."""
    from ..worker.loop import Worker

    if workers > 1:
        import multiprocessing

        log(f"running {len(run_ids)} runs on {workers} workers side by side")
        ctx = multiprocessing.get_context("spawn")  # a fresh interpreter: no forked torch thread pools
        threads = max(1, (os.cpu_count() or 1) // workers)
        settings = catalog.settings
        procs = [ctx.Process(target=_worker_process, args=(str(settings.home), settings.db_url, run_ids, threads, announce),
                             daemon=True) for _ in range(workers)]
        for proc in procs:
            proc.start()
        try:
            for proc in procs:
                proc.join()
        finally:
            for proc in procs:
                if proc.is_alive():
                    proc.terminate()
        if not _busy(catalog, run_ids):
            return
        log("a demo worker stopped early; running what is left here")  # a crashed one's job is re-claimed
    Worker(catalog, on_progress=on_progress, poll=0.2).run(until=lambda: not _busy(catalog, run_ids))


def _worker_process(home: str, db_url: str, run_ids: list[int], threads: int, announce: bool = True) -> None:
    """One demo worker: claim the runs' stages until none is queued or running, print one line a stage
    (unless the parent draws the progress)."""
    import sys

    import torch

    from ..core.settings import Settings
    from ..worker.loop import Worker

    torch.set_num_threads(threads)
    catalog = Catalog(Settings(home=Path(home), db_url=db_url))

    def on_end(job, status: str) -> None:
        stage = job.payload.get("stage_index")
        where = f" stage {stage + 1}" if isinstance(stage, int) else ""
        print(f"  run {job.run_id}{where}: {status}", file=sys.stderr, flush=True)

    try:
        Worker(catalog, poll=0.2, on_end=on_end if announce else None).run(until=lambda: not _busy(catalog, run_ids))
    except KeyboardInterrupt:  # Ctrl-C reaches the whole group: the worker has put its job back; the parent says so
        pass


def _report(catalog: Catalog, run_id: int, log: Log) -> dict:
    """The catalog's report of a finished run, with its wall time from the run's own timestamps."""
    from ..catalog.report import run_detail
    from ..catalog.runs import get_run

    with catalog.session() as s:
        result = run_detail(s, get_run(s, run_id))
    started, finished = result.get("started_at"), result.get("finished_at")
    result["wall_s"] = (finished - started).total_seconds() if started and finished else None
    if result["status"] != "completed":
        log(f"run {run_id} {result['status']}: {result['error']}")
    return result
