"""The durable worker on real stages (tiny model, CPU, one stage of 60 steps, checkpoint every 5):

- kill -9 of the worker mid-stage, then a new worker: the stage resumes from its checkpoint and
  ends with the same adapter bytes, scores and loss curve as an uninterrupted run, with no row
  lost or duplicated;
- cancel stops a running stage within seconds and keeps its checkpoint; a corrupted checkpoint
  is refused (sha256) and the job fails saying so; `hicl run resume` then finishes the run with
  the uninterrupted run's adapter.

The uninterrupted reference run goes through `hicl run start` without --no-worker: the
background worker it starts runs it.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner
from engine_fixtures import read_jsonl
from sqlmodel import select

from hicl_app.catalog.db import Catalog
from hicl_app.catalog.models import Adapter, CurvePoint, Job, Score
from hicl_app.core.fsio import sha256_file
from hicl_app.core.settings import Settings

STEPS, EVERY = 60, 5  # steps take ~50 ms: a short stage can end before a cancel lands
RUN_ARGS = ["--method", "seq-lora", "--tasks", "color", "--max-steps", str(STEPS), "--checkpoint-every", str(EVERY),
            "--lr", "1e-3", "--batch-size", "4", "--eval-batch-size", "32", "--max-new-tokens", "4",
            "--device", "cpu", "--dtype", "float32", "--json"]


def hicl(home: Path, *args, code: int = 0):
    from hicl_app.cli.main import cli

    res = CliRunner().invoke(cli, ["--home", str(home), *map(str, args)], catch_exceptions=False)
    assert res.exit_code == code, res.output
    return res


def add_color(home: Path, tmp: Path, cl_tasks) -> None:
    t = cl_tasks["color"]
    root = Path(read_jsonl(t.train_path)[0]["image"]).parent
    files = {}
    for split, path in (("train", t.train_path), ("test", t.test_path)):
        files[split] = tmp / f"color-{split}.jsonl"
        files[split].write_text("".join(json.dumps({k: r[k] for k in ("id", "image", "question", "answer")}) + "\n"
                                        for r in read_jsonl(path)))
    hicl(home, "add-task", files["train"], "--test", files["test"], "--images", root, "--name", "color",
         "--scorer", "exact")


def worker(home: Path, *args, log: Path) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if k != "HICL_DB_URL"}
    return subprocess.Popen([sys.executable, "-m", "hicl_app", "--home", str(home), "worker", *args],
                            stdout=subprocess.DEVNULL, stderr=open(log, "ab"), env=env)


def wait(what: str, cond, timeout: float = 300.0, every: float = 0.02):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = cond()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"timed out waiting for {what} (last: {value!r})")


def the_job(cat: Catalog, run_id: int) -> Job:
    with cat.session() as s:
        return s.exec(select(Job).where(Job.run_id == run_id)).one()


def ckpt_steps(home: Path, run_id: int) -> list[int]:
    folder = home / "checkpoints" / f"run-{run_id}" / "stage-0"
    return sorted(int(p.name[5:]) for p in folder.glob("step-*")) if folder.is_dir() else []


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[-1].split()[0] not in ("Z", "X")
    except OSError:
        return False


def child_pid(job: Job) -> int:
    pids = re.findall(r"child pid (\d+)", Path(job.log_path).read_text())
    return int(pids[-1])


def record(cat: Catalog, run_id: int) -> dict:
    """What the catalog holds of a finished one-stage run."""
    with cat.session() as s:
        adapters = list(s.exec(select(Adapter).where(Adapter.run_id == run_id)))
        scores = [(c.stage_index, c.task_name, c.score, c.n) for c in s.exec(select(Score).where(Score.run_id == run_id)
                                                                             .order_by(Score.id))]
        points = [(p.name, p.step, p.value) for p in s.exec(select(CurvePoint).where(CurvePoint.run_id == run_id)
                                                            .order_by(CurvePoint.name, CurvePoint.step))]
    assert len(adapters) == 1, adapters
    a = adapters[0]
    assert sha256_file(Path(a.path) / "adapter_model.safetensors") == a.sha256
    return {"sha256": a.sha256, "scores": scores, "points": points}


def assert_same_as(ref: dict, got: dict) -> None:
    assert got["sha256"] == ref["sha256"]  # the adapter bytes are identical
    assert got["scores"] == ref["scores"]
    for name in ("loss", "lr"):
        steps = [s for n, s, _ in got["points"] if n == name]
        assert steps == list(range(1, STEPS + 1)), f"{name} points lost or duplicated: {steps}"
    assert [(n, s) for n, s, _ in got["points"]] == [(n, s) for n, s, _ in ref["points"]]
    assert all(abs(a[2] - b[2]) <= 1e-6 * max(1.0, abs(a[2])) for a, b in zip(got["points"], ref["points"]))


@pytest.fixture(scope="module")
def bench(tmp_path_factory, cl_tasks, tiny_base_dir):
    """A workspace with the colour task and the reference: one uninterrupted run, run by the
    background worker that `hicl run start` starts."""
    home = tmp_path_factory.mktemp("worker-ws")
    add_color(home, tmp_path_factory.mktemp("task"), cl_tasks)
    res = hicl(home, "run", "start", *RUN_ARGS, "--base", tiny_base_dir)
    run_id = json.loads(res.stdout)["run_id"]
    started = re.search(r"started a background worker \(pid (\d+)", res.stderr)
    assert started, res.stderr
    bg = int(started.group(1))
    # a second start finds that worker alive and starts none
    from hicl_app.worker.daemon import start_background_worker, worker_alive

    settings = Settings.resolve(home)
    assert worker_alive(settings) and start_background_worker(settings) is None
    cat = Catalog(settings)
    try:
        wait("the background worker to finish the reference run", lambda: the_job(cat, run_id).status not in ("queued", "running"),
             every=0.5)  # one read: two reads could see "queued" then "running" and pass
        assert the_job(cat, run_id).status == "done", the_job(cat, run_id).error
        ref = record(cat, run_id)
    finally:
        os.kill(bg, signal.SIGTERM)
    wait("the background worker to exit on SIGTERM", lambda: not alive(bg), timeout=30)
    assert not worker_alive(settings)
    yield home, cat, ref
    cat.dispose()


def test_kill9_mid_stage_then_new_worker_resumes_to_the_same_adapter(bench, tiny_base_dir, tmp_path):
    home, cat, ref = bench
    run_id = json.loads(hicl(home, "run", "start", *RUN_ARGS, "--base", tiny_base_dir, "--no-worker").stdout)["run_id"]
    errors = tmp_path / "workers.err"
    w1 = worker(home, "--once", log=errors)
    wait("a mid-stage checkpoint", lambda: any(EVERY * 2 <= s < STEPS for s in ckpt_steps(home, run_id)))
    os.kill(w1.pid, signal.SIGKILL)
    w1.wait()
    job = the_job(cat, run_id)
    assert job.status == "running" and job.attempts == 1  # killed mid-stage, lease still held by the dead worker
    child = child_pid(job)
    wait("the job's process to die with its worker", lambda: not alive(child), timeout=10)
    at_kill = max(ckpt_steps(home, run_id))
    assert at_kill < STEPS

    t0 = time.monotonic()
    w2 = worker(home, "--once", log=errors)
    wait("the new worker to claim the dead worker's job", lambda: the_job(cat, run_id).attempts == 2, timeout=60)
    claim_s = time.monotonic() - t0
    assert w2.wait(timeout=300) == 0
    job = the_job(cat, run_id)
    assert job.status == "done", job.error
    log = Path(job.log_path).read_text()
    assert re.search(r"resumed from checkpoint step-0+(\d+)", log), log
    assert_same_as(ref, record(cat, run_id))
    assert "database is locked" not in errors.read_text()
    print(f"\nkill -9 at checkpoint {at_kill}/{STEPS}; new worker claimed the job in {claim_s:.1f}s")


def test_cancel_keeps_checkpoint_corrupt_checkpoint_is_refused_resume_finishes(bench, tiny_base_dir, tmp_path):
    home, cat, ref = bench
    run_id = json.loads(hicl(home, "run", "start", *RUN_ARGS, "--base", tiny_base_dir, "--no-worker").stdout)["run_id"]
    errors = tmp_path / "workers.err"
    w1 = worker(home, "--idle-exit", "60", log=errors)
    try:
        wait("a mid-stage checkpoint", lambda: any(EVERY <= s < STEPS for s in ckpt_steps(home, run_id)))
        job_id = the_job(cat, run_id).id
        t0 = time.monotonic()
        assert "cancel requested" in hicl(home, "jobs", "cancel", job_id).stderr
        wait("the job to stop", lambda: the_job(cat, run_id).status == "cancelled", timeout=30, every=0.05)
        latency = time.monotonic() - t0
        assert w1.poll() is None  # the worker lives on
    finally:
        w1.send_signal(signal.SIGTERM)
        assert w1.wait(timeout=60) == 0
    job = the_job(cat, run_id)
    assert job.error == "cancelled by the user" and "the last checkpoint is kept" in Path(job.log_path).read_text()
    kept = ckpt_steps(home, run_id)
    assert kept and kept[-1] < STEPS
    detail = json.loads(hicl(home, "run", "show", run_id, "--json").stdout)
    assert detail["status"] == "cancelled" and detail["adapters"] == []

    # a flipped byte in the checkpoint's tensors: refused by its sha256, the job fails saying so
    tensors = home / "checkpoints" / f"run-{run_id}" / "stage-0" / f"step-{kept[-1]:08d}" / "state.safetensors"
    good = tensors.read_bytes()
    bad = bytearray(good)
    bad[len(bad) // 2] ^= 0xFF
    tensors.write_bytes(bytes(bad))
    hicl(home, "jobs", "retry", job_id, "--no-worker")
    subprocess.run([sys.executable, "-m", "hicl_app", "--home", str(home), "worker", "--once"], check=True,
                   capture_output=True, timeout=300)
    job = the_job(cat, run_id)
    assert job.status == "failed" and "is corrupt" in job.error and "sha256" in job.error, job.error
    assert "\n" not in job.error and "Traceback" in job.traceback
    assert "is corrupt" in Path(job.log_path).read_text()
    assert json.loads(hicl(home, "run", "show", run_id, "--json").stdout)["status"] == "failed"

    # the checkpoint repaired, `run resume` finishes the run from it, as if never interrupted
    tensors.write_bytes(good)
    hicl(home, "run", "resume", run_id, "--wait")
    job = the_job(cat, run_id)
    assert job.status == "done"
    assert f"resumed from checkpoint step-{kept[-1]:08d}" in Path(job.log_path).read_text()
    assert_same_as(ref, record(cat, run_id))
    assert "database is locked" not in errors.read_text()
    print(f"\ncancel took {latency:.2f}s to stop the stage (checkpoint kept at step {kept[-1]})")
