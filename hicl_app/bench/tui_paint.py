"""First paint of the dashboard on a large workspace (1,000 runs, 100,000 metric points).

`populate` fills a catalog with plausible runs (seq-lora and joint, finished, running,
queued, failed, cancelled) with their stages, jobs, adapters, score cells and loss curves,
written in bulk; `measure` times the dashboard's first paint in this process and in a fresh
one (imports included). Run it as `python -m hicl_app.bench.tui_paint`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

from sqlalchemy import insert

from ..catalog.db import Catalog
from ..catalog.models import Adapter, CurvePoint, Job, Run, Score, Stage, Task
from ..core.settings import Settings

TASKS = ("arxivqa", "clevr-math", "flickr30k", "iconqa", "imagenet-r", "vizwiz")
SCORERS = ("relaxed", "exact", "caption", "choice", "exact", "relaxed")
EPOCH = datetime(2025, 1, 6, 9, 0, tzinfo=timezone.utc)


def populate(catalog: Catalog, *, runs: int = 1000, points: int = 100_000, seed: int = 0) -> dict:
    """Fill an empty catalog; returns counts of what was written. Deterministic for a seed.

    The newest runs are the live ones: one running (stage 1 half done), one queued, one
    failed and one cancelled; everything older is completed.
    """
    rng = random.Random(seed)
    now = EPOCH
    rows: dict[type, list[dict]] = {t: [] for t in (Task, Run, Stage, Job, Adapter, Score, CurvePoint)}
    for i, (name, scorer) in enumerate(zip(TASKS, SCORERS)):
        rows[Task].append(dict(id=i + 1, name=name, source_path=f"/data/{name}/train.jsonl", source_sha256="0" * 64,
                               source_format="llava", images_dir=f"/data/{name}", n_train=800 + 137 * i,
                               n_test=100 + 17 * i, scorer=scorer, data_dir=f"/data/ws/tasks/{name}", split_seed=0,
                               test_fraction=0.1, created_at=now))
    stage_id = job_id = 0
    live = {runs: "running", runs - 1: "queued", runs - 2: "failed", runs - 3: "cancelled"}
    # Every completed run holds the same number of loss points; together at least `points`.
    per_run = -(-points // max(1, sum(r not in live for r in range(1, runs + 1))))
    for run_id in range(1, runs + 1):
        joint = run_id % 10 == 0 and run_id not in live
        k = 3 + run_id % 4
        order = rng.sample(TASKS, k)
        plan = [order] if joint else [[t] for t in order]
        status = live.get(run_id, "completed")
        created = now + timedelta(minutes=run_id)
        rows[Run].append(dict(id=run_id, name=f"{'joint' if joint else 'seq-lora'}-{run_id:04d}",
                              method="joint" if joint else "seq-lora", base_model="llava-hf/llava-1.5-7b-hf",
                              task_order=order, config={"train": {"rank": 8, "lr": 2e-4}}, env={}, status=status,
                              created_at=created, started_at=created if status != "queued" else None,
                              finished_at=created + timedelta(hours=1) if status == "completed" else None))
        skill = {t: rng.uniform(35, 90) for t in order}
        n_done = {"completed": len(plan), "running": 1, "queued": 0, "failed": 1, "cancelled": 2}[status]
        n_done = min(n_done, len(plan))
        previous_job = None
        for index, tasks in enumerate(plan):
            steps = max(1, per_run // len(plan) + (per_run % len(plan) if index == len(plan) - 1 else 0))
            stage_id += 1
            job_id += 1
            if index < n_done:
                st = "done"
            elif index == n_done and status in ("running", "failed", "cancelled"):
                st = status
            else:
                st = "cancelled" if status in ("failed", "cancelled") else "queued"
            done = st == "done"
            rows[Stage].append(dict(id=stage_id, run_id=run_id, index=index, train_tasks=tasks, status=st,
                                    steps=steps if done else None, train_samples=steps * 8 if done else None))
            progress = {}
            if st in ("done", "running", "failed", "cancelled"):
                step = steps if st == "done" else steps // 2
                progress = {"step": step, "total": steps, "loss": 0.4 + 1.6 / (1 + step / 8), "lr": 2e-4,
                            "samples_per_s": 41.5, "eta_s": 3.1 * (steps - step)}
                loss = rng.uniform(1.8, 2.6)
                for s in range(1, step + 1):
                    loss = max(0.05, loss * 0.985 + rng.uniform(-0.04, 0.04))
                    rows[CurvePoint].append(dict(run_id=run_id, stage_index=index, name="loss", step=s, value=loss))
            rows[Job].append(dict(id=job_id, kind="stage", run_id=run_id, stage_id=stage_id,
                                  depends_on=previous_job, status=st, attempts=0 if st == "queued" else 1,
                                  max_attempts=3, cancel_requested=False,
                                  payload={"run_id": run_id, "stage_index": index},
                                  progress=progress, error="CUDA out of memory" if st == "failed" else None,
                                  created_at=created, finished_at=created + timedelta(minutes=20 * (index + 1))
                                  if st in ("done", "failed", "cancelled") else None))
            previous_job = job_id
            if st != "done":
                continue
            rows[Adapter].append(dict(run_id=run_id, stage_id=stage_id, kind="peft",
                                      path=f"/data/ws/adapters/run-{run_id}/stage-{index}/adapter",
                                      sha256=f"{rng.getrandbits(256):064x}", size_bytes=rng.randint(2, 40) * 1_048_576,
                                      files={"adapter/adapter_model.safetensors": "…"}, created_at=created))
            seen = [t for stage in plan[: index + 1] for t in stage]
            for t in seen:
                age = index - next(i for i, stage in enumerate(plan) if t in stage)
                score = max(0.0, skill[t] - age * rng.uniform(0.5, 6.0))
                rows[Score].append(dict(run_id=run_id, stage_index=index, task_name=t, score=round(score, 2), n=100,
                                        scorer="exact", details={}, created_at=created))
    with catalog.engine.begin() as conn:
        for table, values in rows.items():
            for chunk in range(0, len(values), 20_000):
                conn.execute(insert(table.__table__), values[chunk: chunk + 20_000])
    return {"runs": runs, "curve_points": len(rows[CurvePoint]), "scores": len(rows[Score]),
            "jobs": len(rows[Job]), "adapters": len(rows[Adapter])}


def paint_in_process(catalog: Catalog, size: tuple[int, int] = (80, 24)) -> float:
    """Seconds from creating the app to the dashboard's data on screen (Textual already imported)."""
    from ..tui.app import HiclApp

    start = time.perf_counter()
    app = HiclApp(catalog, poll_interval=None, exit_on_first_paint=True)

    async def go() -> None:
        async with app.run_test(size=size) as pilot:
            while app.painted_at is None:
                await pilot.pause(0.01)

    asyncio.run(go())
    return app.painted_at - start


def paint_fresh_process(home: Path, size: tuple[int, int] = (80, 24)) -> float:
    """Seconds from starting a new Python to the dashboard's data on screen, imports included."""
    code = ("import sys, time, asyncio\n"
            "from hicl_app.core.settings import Settings\n"
            "from hicl_app.catalog.db import Catalog\n"
            "from hicl_app.tui.app import HiclApp\n"
            f"app = HiclApp(Catalog(Settings.resolve({str(home)!r})), poll_interval=None, exit_on_first_paint=True)\n"
            "async def go():\n"
            f"    async with app.run_test(size={size!r}) as pilot:\n"
            "        while app.painted_at is None:\n"
            "            await pilot.pause(0.01)\n"
            "asyncio.run(go())\n"
            "print(time.time() - (time.perf_counter() - app.painted_at))\n")
    env = {**os.environ, "HICL_HOME": str(home)}
    env.pop("HICL_DB_URL", None)
    start = time.time()
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True).stdout
    return float(out.strip().splitlines()[-1]) - start


def measure(home: Path | None = None, *, runs: int = 1000, points: int = 100_000, repeat: int = 3) -> dict:
    """Build the workspace (in a temporary folder unless `home` is given) and time first paint."""
    with tempfile.TemporaryDirectory(prefix="hicl-tui-bench-") as tmp:
        home = Path(home or tmp)
        settings = Settings.resolve(home, db_url=f"sqlite:///{home / 'hicl.db'}")
        catalog = Catalog(settings)
        t0 = time.perf_counter()
        counts = populate(catalog, runs=runs, points=points)
        build_s = time.perf_counter() - t0
        in_process = min(paint_in_process(catalog) for _ in range(repeat))
        fresh = min(paint_fresh_process(home) for _ in range(repeat))
        catalog.dispose()
    return {**counts, "build_s": round(build_s, 2), "first_paint_s": round(in_process, 3),
            "first_paint_fresh_process_s": round(fresh, 3), "limit_s": 1.0}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m hicl_app.bench.tui_paint", description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=1000)
    parser.add_argument("--points", type=int, default=100_000, help="Loss-curve points in all.")
    parser.add_argument("--repeat", type=int, default=3, help="Best of this many paints.")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    result = measure(runs=args.runs, points=args.points, repeat=args.repeat)
    if args.json:
        print(json.dumps(result))
    else:
        print(f"workspace: {result['runs']} runs, {result['curve_points']} loss points, {result['scores']} score "
              f"cells, {result['jobs']} jobs (built in {result['build_s']} s)")
        print(f"first paint, in process:          {result['first_paint_s']:.3f} s")
        print(f"first paint, fresh process:       {result['first_paint_fresh_process_s']:.3f} s (imports included)")
    return 0 if result["first_paint_s"] <= result["limit_s"] else 1


if __name__ == "__main__":
    sys.exit(main())
