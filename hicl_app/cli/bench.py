"""`hicl bench`: measure hicl's speed-ups against the research-code way, side by side."""

from __future__ import annotations

import shutil
import tempfile
import time

import click

from ..core.errors import HiclError
from .context import AppContext, pass_app
from .output import emit_json, info, table


def _env(workload, repeats: int) -> dict:
    import os
    import platform

    env = {"python": platform.python_version(), "cpus": os.cpu_count(), "repeats": repeats}
    if workload is None:
        return env
    import torch

    device = workload.device or ("cuda" if torch.cuda.is_available() else "cpu")
    env.update({"torch": torch.__version__, "threads": torch.get_num_threads(), "device": device,
                "base": str(workload.base), "tiny_base": workload.tiny, "clock": workload.clock_name})
    if device.startswith("cuda"):
        env["gpu"] = torch.cuda.get_device_name()
    return env


@click.command("bench")
@click.option("--base", type=click.Path(file_okay=False),
              help="A saved image-text-to-text model folder (default: the demo's tiny base, built once).")
@click.option("--only", help="Comma-separated benchmarks: eval, train, hide-merge, hide-infer, cli-start, memory, "
                             "memory-checkpointing (default: all; memory runs both memory ones).")
@click.option("--repeats", type=click.IntRange(1, 20), default=3, show_default=True,
              help="Interleaved rounds per timed variant (the median is reported).")
@click.option("--json", "as_json", is_flag=True,
              help="{env: {device, clock, torch, base, ...}, results: [{name, measures, ours, baseline, figure, unit, "
                   "target, met, check, same, details}]}.")
@pass_app
def bench(app: AppContext, base, only, repeats, as_json) -> None:
    """Time the fast paths against the research-code way, side by side in one run.

    \b
    eval        batched evaluation vs one sample at a time (same predictions)
    train       vision cache + length grouping vs a PEFT + Trainer loop (same losses)
    hide-merge  HiDe merged fused layers vs rebuilt every forward (same predictions)
    hide-infer  the HiDe model vs base + one merged LoRA (cost ratio, parameters kept)
    cli-start   `hicl --help` vs `python -c pass`
    memory      peak RSS of a 6-task hide run vs seq-lora, each in a child process
    memory-checkpointing  peak RSS of LoRA training, gradient checkpointing on vs off (same losses)
    Exits 1 if a correctness check fails; a missed speed target is reported, not an error.
    """
    from ..bench import STANDALONE, run_benchmark, select
    from ..bench.workload import check_base, prepare

    names = select(only)
    if base is not None:
        check_base(base)
    cache = app.settings.cache
    cache.mkdir(parents=True, exist_ok=True)
    work = tempfile.mkdtemp(prefix="bench-", dir=cache)
    results = []
    try:
        workload = None
        if set(names) - STANDALONE:
            workload = prepare(cache, work, info, base=base, repeats=repeats)
        for name in names:
            t0 = time.monotonic()
            info(f"running {name} ...")
            results.append(run_benchmark(name, workload))
            info(f"{name}: {results[-1].figure_text()} ({time.monotonic() - t0:.0f}s)")
        env = _env(workload, repeats)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if as_json:
        emit_json({"env": env, "results": [r.to_dict() for r in results]})
    else:
        rows = [[r.name, r.ours, r.baseline, r.figure_text(), r.target,
                 "—" if r.met is None else ("yes" if r.met else "no"), r.check] for r in results]
        click.echo(table(["benchmark", "hicl", "baseline", "figure", "target", "met", "check"], rows,
                         align_right={1, 2, 3}))
        if "base" in env:
            info(f"{env['device']}, timed by {env['clock']}, median of {repeats} rounds; torch {env['torch']}; "
                 f"base {env['base']}")
    failed = [r.name for r in results if r.same is False]
    if failed:
        raise HiclError(f"correctness check failed: {', '.join(failed)}",
                        hint="the fast path disagrees with its reference; see the check column")


COMMANDS = [bench]
