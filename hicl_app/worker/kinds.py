"""Job kinds and how one claimed job is carried out, whatever its kind.

`stage` trains and scores one stage of a run (in a child process). `push` publishes a scored
stage of a `--push-to` run to the hub (in the worker: it is network I/O, no model). `eval`
scores finished stages of a run on tasks of this workspace (`hicl run eval`), in a child. `noop` and `sleep` belong to
no run and exercise the queue and the workers: `noop` finishes at once inside the worker (200
of them test claims under contention in seconds); `sleep` runs in a child like a stage,
reports progress, honours cancel and shutdown at each tick, and can be told to fail, exit or
kill itself with a signal (a stand-in for an out-of-memory kill or a segfault).
"""

from __future__ import annotations

import json
import os
import signal
import time
import traceback
from dataclasses import dataclass
from typing import Callable

from ..catalog import queue
from ..catalog.runs import add_event
from ..core.errors import HiclError
from ..core.fsio import atomic_write_json
from .context import CANCEL, LEASE, JobContext


class JobFailed(HiclError):
    """A job asked to fail (the `sleep` kind's `fail` payload)."""


@dataclass(frozen=True)
class Kind:
    run: Callable[[JobContext], str]
    inline: bool = False  # True: cheap and safe enough to run inside the worker process


def _stage(ctx: JobContext) -> str:
    from .stage import run_stage_job

    return run_stage_job(ctx)


def _eval(ctx: JobContext) -> str:
    from .evaluate import run_eval_job

    return run_eval_job(ctx)


def _push(ctx: JobContext) -> str:
    from .publish import run_push_job

    return run_push_job(ctx)


def _noop(ctx: JobContext) -> str:
    """payload: seconds (default 0) to sleep before closing the job."""
    time.sleep(float(ctx.job.payload.get("seconds", 0)))

    def write() -> None:
        with ctx.catalog.session() as s:
            queue.close_job(s, ctx.job.id, "done", owner=ctx.owner)
            add_event(s, f"noop job {ctx.job.id} ran", job_id=ctx.job.id, data={"owner": ctx.owner})

    queue.with_busy_retry(write)
    return "done"


def _sleep(ctx: JobContext) -> str:
    """payload: seconds (default 1), ticks (default 10), fail (message), exit (code) or
    signal (number) after `at` ticks (default 0)."""
    from ..engine.errors import Stopped

    p = ctx.job.payload
    ticks, seconds, at = int(p.get("ticks", 10)), float(p.get("seconds", 1.0)), int(p.get("at", 0))
    checkpoint = ctx.catalog.settings.checkpoints / f"job-{ctx.job.id}.json"  # like a stage's, kept on cancel
    start = json.loads(checkpoint.read_text())["tick"] if checkpoint.is_file() else 0
    if start:
        ctx.say(f"resuming at tick {start}/{ticks}")
    t0 = time.monotonic()
    for tick in range(start, ticks):
        if ctx.should_stop():
            raise Stopped(tick, checkpoint if checkpoint.is_file() else None)
        if tick == at:
            if "fail" in p:
                raise JobFailed(str(p["fail"]), hint="the job was told to fail")
            if "exit" in p:
                os._exit(int(p["exit"]))
            if "signal" in p:
                os.kill(os.getpid(), int(p["signal"]))
        time.sleep(seconds / max(ticks, 1))
        done = tick + 1
        atomic_write_json(checkpoint, {"tick": done})
        rate = (done - start) / max(time.monotonic() - t0, 1e-9)
        ctx.set_progress({"step": done, "total": ticks, "samples_per_s": rate, "eta_s": (ticks - done) / rate})
    ctx.say(f"slept {seconds}s in {ticks} ticks")
    return "done" if queue.finish(ctx.catalog, ctx.job.id, "done", owner=ctx.owner) else "lost"


KINDS: dict[str, Kind] = {"stage": Kind(_stage), "eval": Kind(_eval), "push": Kind(_push, inline=True),
                          "noop": Kind(_noop, inline=True), "sleep": Kind(_sleep)}


def one_line(exc: BaseException) -> str:
    """The first line a user reads: the error's own message (and hint), on one line."""
    render = getattr(exc, "render", None)
    text = render() if callable(render) else f"{exc.__class__.__name__}: {exc}"
    return " ".join(text.split())[:500]


def execute(ctx: JobContext) -> str:
    """Run a claimed job to its end and leave the catalog saying how it ended. Returns the
    status: done, failed, cancelled, queued (given back: the worker is stopping) or lost (the
    lease went to someone else; nothing was written)."""
    from ..engine.errors import RanksFailed, Stopped

    kind = KINDS.get(ctx.job.kind)
    try:
        if kind is None:
            raise JobFailed(f"unknown job kind {ctx.job.kind!r}", hint=f"this worker runs {', '.join(KINDS)}")
        return kind.run(ctx)
    except Stopped as stop:
        return _stopped(ctx, stop)
    except queue.LeaseLost:
        ctx.say("the job's lease was lost (it expired or the job was closed): stopping without writing")
        return "lost"
    except RanksFailed as exc:
        ctx.say(f"{exc}: the stage goes back to the queue and resumes from its last checkpoint")
        return queue.requeue_failed_attempt(ctx.catalog, ctx.job.id, ctx.owner, str(exc))
    except KeyboardInterrupt:
        ctx.say("interrupted: the job goes back to the queue and resumes from its last checkpoint")
        queue.release(ctx.catalog, ctx.job.id, ctx.owner, note="interrupted; back in the queue")
        raise
    except Exception as exc:
        reason = one_line(exc)
        tb = traceback.format_exc()
        ctx.say(f"failed: {reason}\n{tb}")
        if ctx.reason == LEASE or not queue.finish(ctx.catalog, ctx.job.id, "failed", error=reason, tb=tb,
                                                   owner=ctx.owner):
            return "lost"
        return "failed"


def _stopped(ctx: JobContext, stop) -> str:
    where = f" at step {stop.step}" if stop.step >= 0 else ""
    if ctx.reason == CANCEL:
        ctx.say(f"cancelled{where}; the last checkpoint is kept" if stop.checkpoint else f"cancelled{where}")
        ok = queue.finish(ctx.catalog, ctx.job.id, "cancelled", error="cancelled by the user", owner=ctx.owner)
        return "cancelled" if ok else "lost"
    if ctx.reason == LEASE:
        ctx.say(f"stopped{where}: the job's lease was lost")
        return "lost"
    ctx.say(f"stopped{where} ({ctx.reason}); the job goes back to the queue and resumes from its checkpoint")
    ok = queue.release(ctx.catalog, ctx.job.id, ctx.owner, note=f"given back to the queue ({ctx.reason})")
    return "queued" if ok else "lost"


def install_stop_signals(ctx: JobContext) -> None:
    """SIGTERM / SIGINT ask the job to stop at its next step boundary (child process only)."""
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: ctx.interrupt())
