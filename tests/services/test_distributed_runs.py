"""`hicl run start --nproc 2 --device cpu --wait` (torchrun, gloo): the same adapters and matrix
as `--nproc 1`, and a rank killed mid-stage re-queues the stage, which resumes to the same adapter
and leaves no process behind."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
from engine_fixtures import add_tasks_by_cli
from safetensors.torch import load_file

RANK_MODULE = "hicl_app.engine.distributed.rank"
TIMEOUT = 420


def _args(base: Path, tasks: str = "color,bg") -> list[str]:
    return ["--method", "seq-lora", "--tasks", tasks, "--base", str(base), "--max-steps", "32",
            "--batch-size", "6", "--checkpoint-every", "4", "--dropout", "0", "--lr", "1e-3", "--device", "cpu",
            "--eval-all", "--eval-batch-size", "16", "--max-new-tokens", "4", "--wait", "--json"]


@pytest.fixture(scope="module")
def ws(tmp_path_factory, tiny_base_dir, cl_tasks):
    """A workspace with the color and bg tasks, and the `--nproc 1` reference run in it."""
    root = tmp_path_factory.mktemp("dist")
    env = {**os.environ, "HICL_HOME": str(root / "ws")}
    env.pop("HICL_DB_URL", None)

    def hicl(*args, **kw):
        done = subprocess.run([sys.executable, "-m", "hicl_app", *map(str, args)], env=env, capture_output=True,
                              text=True, timeout=TIMEOUT, **kw)
        return SimpleNamespace(exit_code=done.returncode, output=done.stdout + done.stderr, stdout=done.stdout)

    add_tasks_by_cli(hicl, root, cl_tasks, names=("color", "bg"))
    ref = hicl("run", "start", *_args(tiny_base_dir), "--nproc", "1")
    assert ref.exit_code == 0, ref.output
    return SimpleNamespace(root=root / "ws", env=env, hicl=hicl, base=tiny_base_dir,
                           ref=json.loads(ref.stdout)["run_id"])


def _adapter(ws, run_id: int, stage: int) -> dict:
    return load_file(ws.root / "adapters" / f"run-{run_id}" / f"stage-{stage}" / "adapter" / "adapter_model.safetensors")


def _assert_same_adapters(ws, run_a: int, run_b: int, stages=(0, 1)) -> None:
    for stage in stages:
        a, b = _adapter(ws, run_a, stage), _adapter(ws, run_b, stage)
        assert a.keys() == b.keys()
        worst = max(float((a[k] - b[k]).norm() / a[k].norm()) for k in a)
        assert worst < 1e-4, f"stage {stage}: adapters differ by {worst:.2e} (relative)"


def _show(ws, run_id: int) -> dict:
    res = ws.hicl("run", "show", run_id, "--json")
    assert res.exit_code == 0, res.output
    return json.loads(res.stdout)


def test_two_ranks_match_one(ws):
    res = ws.hicl("run", "start", *_args(ws.base), "--nproc", "2")
    assert res.exit_code == 0, res.output
    run_id = json.loads(res.stdout)["run_id"]
    _assert_same_adapters(ws, ws.ref, run_id)
    one, two = _show(ws, ws.ref), _show(ws, run_id)
    assert two["matrix"] == one["matrix"] and two["zero_shot"] == one["zero_shot"]
    assert two["config"]["launch"] == {"nproc": 2} and one["config"]["launch"] == {"nproc": 1}
    assert two["env"]["world_size"] == 2 and one["env"]["world_size"] == 1


def _rank_pids(marker: str) -> dict[int, int]:
    """{pid: RANK} of the rank processes whose command line mentions `marker`."""
    found = {}
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmd = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            if RANK_MODULE not in cmd or marker not in cmd:
                continue
            env = dict(e.split("=", 1) for e in (proc / "environ").read_bytes().decode().split("\0") if "=" in e)
        except OSError:
            continue
        if "RANK" in env:
            found[int(proc.name)] = int(env["RANK"])
    return found


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="finds the ranks through /proc")
def test_killed_rank_requeues_and_resumes(ws):
    before = {p.name for p in (ws.root / "checkpoints").glob("run-*")}
    # one task: the kill, the requeue and the resume all happen in stage 0
    proc = subprocess.Popen([sys.executable, "-m", "hicl_app", "run", "start", *_args(ws.base, "color"), "--nproc", "2"],
                            env=ws.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline, victim, ckpt = time.monotonic() + TIMEOUT, None, None
    while victim is None and time.monotonic() < deadline and proc.poll() is None:
        new = [p for p in (ws.root / "checkpoints").glob("run-*") if p.name not in before]
        ckpt = new[0] / "stage-0" if new else None
        if ckpt is not None and any(ckpt.glob("step-0*")):
            victim = next((pid for pid, r in _rank_pids(str(ckpt)).items() if r == 1), None)
        time.sleep(0.02)
    assert victim is not None, "never saw rank 1 of stage 0 running after its first checkpoint"
    os.kill(victim, signal.SIGKILL)
    out, err = proc.communicate(timeout=TIMEOUT)
    assert proc.returncode == 0, out + err
    run_id = json.loads(out)["run_id"]
    jobs = [j for j in json.loads(ws.hicl("jobs", "--all", "--json").stdout) if j["run_id"] == run_id]
    first = next(j for j in jobs if j["stage_index"] == 0)
    assert first["status"] == "done" and first["attempts"] == 2, first
    assert "died" in (ws.root / "logs" / f"job-{first['id']}.log").read_text()
    _assert_same_adapters(ws, ws.ref, run_id, stages=(0,))
    assert _rank_pids(str(ws.root)) == {}, "a rank outlived its job"
