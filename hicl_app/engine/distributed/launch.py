"""Run a stage (or an evaluation) on N data-parallel ranks through torchrun, from the caller's process.

The caller gets the same contract as `pipeline.run_stage`: events through `on_event`, a stop
when `should_stop()` turns true, and the result, `Stopped` or `EngineError` back. Rank 0 reports
over a loopback socket (see `rank.py`). A rank that dies is torchrun's to notice: its agent stops
the other ranks and exits non-zero, and this raises `RanksFailed` so the caller can re-queue the
stage, which then resumes from its last checkpoint. torchrun dies with this process
(PR_SET_PDEATHSIG) and each rank with torchrun, so nothing outlives a killed job.
"""

from __future__ import annotations

import json
import os
import select
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

from ...core.fsio import atomic_write_json
from ...core.process import die_with_parent
from ..errors import EngineError, RanksFailed, Stopped
from ..spec import StageResult, StageSpec, TaskData, json_ready, spec_to_json
from .rank import RELAY_ENV

EventFn = Callable[[dict], None]
StopFn = Callable[[], bool]
#: seconds torchrun gets to stop its ranks after a stop or an outcome, before it is killed
GRACE = 60.0
JOB_FILE = "distributed-job.json"


def run_stage_distributed(spec: StageSpec, nproc: int, *, on_event: EventFn | None = None,
                          should_stop: StopFn | None = None, launcher_args: list[str] | None = None) -> StageResult:
    """`pipeline.run_stage(spec)` on `nproc` ranks (per node; `launcher_args` go to torchrun)."""
    job_file = Path(spec.checkpoint_dir) / JOB_FILE
    out = _launch({"kind": "stage", "spec": spec_to_json(spec)}, job_file, nproc, on_event, should_stop, launcher_args)
    return StageResult(adapter_dir=Path(out["adapter_dir"]), files=out["files"], scores=out["scores"],
                       train_samples=out["train_samples"], steps=out["steps"], env=out["env"])


def run_eval_distributed(model: Any, tasks: list[TaskData], eval_cfg: Any, out_dir: str | os.PathLike, nproc: int, *,
                         method: str | None = None, method_options: dict | None = None,
                         stage_dir: str | os.PathLike | None = None, on_event: EventFn | None = None,
                         should_stop: StopFn | None = None,
                         launcher_args: list[str] | None = None) -> dict[str, dict[str, Any]]:
    """`pipeline.run_eval(...)` with the records of each task split between `nproc` ranks."""
    import dataclasses

    job = json_ready({"kind": "eval", "model": dataclasses.asdict(model), "eval": dataclasses.asdict(eval_cfg),
                      "tasks": [dataclasses.asdict(t) for t in tasks], "out_dir": str(out_dir), "method": method,
                      "method_options": method_options, "stage_dir": str(stage_dir) if stage_dir else None})
    return _launch(job, Path(out_dir) / JOB_FILE, nproc, on_event, should_stop, launcher_args)


def torchrun_command(job_file: Path, nproc: int, launcher_args: list[str] | None = None) -> list[str]:
    """The torchrun command line: one node on its own unless `launcher_args` say otherwise."""
    where = list(launcher_args) if launcher_args else ["--standalone"]
    return [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(nproc), *where,
            "--max-restarts", "0", "--monitor-interval", "0.5",
            "-m", "hicl_app.engine.distributed.rank", str(job_file)]


def _launch(job: dict, job_file: Path, nproc: int, on_event: EventFn | None, should_stop: StopFn | None,
            launcher_args: list[str] | None) -> Any:
    if nproc < 1:
        raise EngineError(f"nproc must be >= 1, not {nproc}")
    emit = on_event or (lambda event: None)
    # HICL_RELAY_HOST: an address the other nodes reach, when rank 0 may run on another node
    host = os.environ.get("HICL_RELAY_HOST", "127.0.0.1")
    server = socket.create_server((host if host == "127.0.0.1" else "", 0))
    address = f"{host}:{server.getsockname()[1]}"
    atomic_write_json(job_file, {**job, "relay": address})
    env = {**os.environ, RELAY_ENV: address}
    env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // nproc)))
    proc = subprocess.Popen(torchrun_command(job_file, nproc, launcher_args), env=env, stdin=subprocess.DEVNULL,
                            preexec_fn=die_with_parent if sys.platform.startswith("linux") else None)
    outcome = None
    try:
        conn = _accept(server, proc)
        if conn is not None:
            outcome = _relay(conn, proc, emit, should_stop)
    finally:
        server.close()
        if proc.poll() is None:
            # after a result the ranks end on their own; after a stop in evaluation the others wait
            # in a collective for rank 0, which has left
            _stop(proc, wait=GRACE if outcome is not None and outcome["type"] == "result" else 5.0)
    rc = proc.returncode
    if outcome is None:
        raise RanksFailed(f"a process of the {nproc}-rank job died before it reported (torchrun exit {rc}); "
                          "the job's log holds its output")
    kind = outcome["type"]
    if kind == "result":
        return outcome["result"]
    if kind == "stopped":
        raise Stopped(int(outcome["step"]), Path(outcome["checkpoint"]) if outcome["checkpoint"] else None)
    if kind == "error":
        raise EngineError(outcome["message"], hint=outcome.get("hint"))
    if kind == "ranks_failed":
        raise RanksFailed(f"a process of the {nproc}-rank job died (rank 0 saw: {outcome['message'][:300]})")
    raise RuntimeError(f"rank 0 failed: {outcome['message']}")


def _accept(server: socket.socket, proc: subprocess.Popen) -> socket.socket | None:
    """Rank 0's connection, once it has joined; None when torchrun ended first."""
    server.settimeout(0.2)
    while proc.poll() is None:
        try:
            conn, _ = server.accept()
            return conn
        except TimeoutError:
            continue
    return None


def _relay(conn: socket.socket, proc: subprocess.Popen, emit: EventFn, should_stop: StopFn | None) -> dict | None:
    """Relay events until rank 0 sends its outcome; returns it (None when the ranks died first)."""
    buffer, stop_sent, ended = b"", False, None
    with conn:
        while True:
            if not stop_sent and should_stop is not None and should_stop():
                try:
                    conn.sendall(b'{"type": "stop"}\n')
                except OSError:
                    pass  # rank 0 is gone; what it sent last is read below
                stop_sent = True
            ready, _, _ = select.select([conn], [], [], 0.2)
            if not ready:
                if ended is None and proc.poll() is not None:
                    ended = time.monotonic()  # what rank 0 sent before dying is still to be read
                if ended is not None and time.monotonic() - ended > 5.0:
                    return None
                continue
            chunk = conn.recv(1 << 16)
            if not chunk:
                return None
            buffer += chunk
            while b"\n" in buffer:
                line, buffer = buffer.split(b"\n", 1)
                message = json.loads(line)
                if message["type"] != "event":
                    return message
                checkpoint = message["event"].get("type") == "before_checkpoint"
                try:
                    emit(message["event"])
                except BaseException:
                    if checkpoint:  # the caller refused it (its lease is gone): rank 0 must not write
                        try:
                            conn.sendall(b'{"type": "veto"}\n')
                        except OSError:
                            pass
                    raise
                if checkpoint:
                    conn.sendall(b'{"type": "ack"}\n')


def _stop(proc: subprocess.Popen, wait: float) -> None:
    """Let torchrun end on its own for `wait` seconds, then SIGTERM it (it stops its ranks), then kill."""
    deadline = time.monotonic() + wait
    while proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.1)
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=GRACE)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
