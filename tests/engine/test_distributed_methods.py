"""hide and llava-c on two ranks (torchrun, gloo) end where one process ends: the same adapters,
the same extra state (HiDe's experts and anchors, LLaVA-c's consolidated deltas) and scores."""

from __future__ import annotations

import pytest
from safetensors.torch import load_file

from hicl_app.engine.config import EvalConfig, ModelConfig, TrainConfig
from hicl_app.engine.distributed.launch import run_stage_distributed
from hicl_app.engine.pipeline import StageSpec, run_stage

ORDER = ["color", "bg"]
TOL = 1e-4


def _spec(base, tasks, root, method="seq-lora", k=0, prev=None) -> StageSpec:
    return StageSpec(method=method, method_options={}, stage_index=k, n_stages=len(ORDER),
                     train_tasks=[tasks[ORDER[k]]], eval_tasks=[tasks[n] for n in ORDER[:k + 1]],
                     model=ModelConfig(str(base), device="cpu"),
                     train=TrainConfig(max_steps=12, lr=1e-3, batch_size=7, checkpoint_every=5, dropout=0.0),
                     eval=EvalConfig(batch_size=16, max_new_tokens=4), stage_dir=root / f"stage-{k}",
                     prev_stage_dir=prev, checkpoint_dir=root / "ckpt" / f"stage-{k}")


def _rel(a, b) -> float:
    return float((a.float() - b.float()).norm() / max(float(a.float().norm()), 1e-12))


def _compare(one, two, rel_file: str, *, factors: bool = False) -> float:
    a, b = load_file(one / rel_file), load_file(two / rel_file)
    assert a.keys() == b.keys()
    if not factors:
        return max(_rel(a[k], b[k]) for k in a)
    # SVD factors are defined up to a rotation inside near-tied singular values: compare U S Vᵀ
    return max(_rel(a[k] @ a[k[:-3] + ".vt"], b[k] @ b[k[:-3] + ".vt"]) for k in a if k.endswith(".us"))


@pytest.mark.parametrize("method, state", [("hide", ["hide/experts.safetensors", "hide/anchors.safetensors"]),
                                           ("llava-c", ["sac/consolidated.safetensors"])])
def test_two_ranks_match_one_process(method, state, tiny_base_dir, cl_tasks, tmp_path):
    """Stage 1 from one shared stage 0: where the method's own work happens (HiDe's expansion and
    fusion over the earlier experts, LLaVA-c's consolidation of the earlier delta), on one
    process and on two ranks."""
    first = _spec(tiny_base_dir, cl_tasks, tmp_path / "zero", method, 0)
    run_stage(first)
    one = run_stage(_spec(tiny_base_dir, cl_tasks, tmp_path / "one", method, 1, first.stage_dir))
    two = run_stage_distributed(_spec(tiny_base_dir, cl_tasks, tmp_path / "two", method, 1, first.stage_dir), 2)
    a, b = tmp_path / "one" / "stage-1", tmp_path / "two" / "stage-1"
    assert _compare(a, b, "adapter/adapter_model.safetensors") < TOL
    for rel_file in state:
        assert _compare(a, b, rel_file, factors=rel_file.startswith("sac/")) < TOL, rel_file
    assert {n: s["score"] for n, s in one.scores.items()} == {n: s["score"] for n, s in two.scores.items()}
    assert two.env["world_size"] == 2 and two.steps == one.steps
    for name in ORDER:
        assert (b / "predictions" / f"{name}.jsonl").read_text() == (a / "predictions" / f"{name}.jsonl").read_text()


def test_two_nodes_through_launcher_args(tiny_base_dir, cl_tasks, tmp_path):
    """Two torchrun agents on this machine (`--nnodes 2`, c10d rendezvous) train one stage: the
    flags hicl passes through, with the other node started from the job file as the README says."""
    import socket
    import subprocess
    import sys
    import threading
    import time

    from hicl_app.engine.distributed.launch import JOB_FILE

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    flags = ["--nnodes", "2", "--rdzv-backend", "c10d", "--rdzv-endpoint", f"127.0.0.1:{port}", "--rdzv-id", "t"]
    spec_one = _spec(tiny_base_dir, cl_tasks, tmp_path / "one")
    spec_two = _spec(tiny_base_dir, cl_tasks, tmp_path / "two")
    job, other = spec_two.checkpoint_dir / JOB_FILE, {}

    def second_node():
        deadline = time.monotonic() + 120
        while not job.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        other["proc"] = subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "1",
                                          *flags, "-m", "hicl_app.engine.distributed.rank", str(job)])

    thread = threading.Thread(target=second_node)
    thread.start()
    two = run_stage_distributed(spec_two, 1, launcher_args=flags)
    thread.join()
    assert other["proc"].wait(timeout=120) == 0
    one = run_stage(spec_one)
    assert two.env["world_size"] == 2
    assert _compare(spec_one.stage_dir, spec_two.stage_dir, "adapter/adapter_model.safetensors") < TOL
    assert {n: s["score"] for n, s in one.scores.items()} == {n: s["score"] for n, s in two.scores.items()}


def test_fsdp_stops_resumes_and_matches_one_process(tiny_base_dir, cl_tasks, tmp_path):
    """--strategy fsdp: the language model sharded over two ranks; stopped mid-stage (sharded
    optimizer state made whole in the checkpoint) and resumed, it ends where one process ends."""
    import dataclasses

    from hicl_app.engine.errors import Stopped

    one = run_stage(_spec(tiny_base_dir, cl_tasks, tmp_path / "one"))
    spec = dataclasses.replace(_spec(tiny_base_dir, cl_tasks, tmp_path / "fsdp"), strategy="fsdp")
    events = []
    with pytest.raises(Stopped) as stop:
        run_stage_distributed(spec, 2, on_event=events.append,
                              should_stop=lambda: sum(e["type"] == "loss" for e in events) >= 6)
    assert 6 <= stop.value.step < 12 and stop.value.checkpoint is not None
    assert any("2 ranks (fsdp)" in e.get("message", "") for e in events)
    before = len(events)
    resumed = run_stage_distributed(spec, 2, on_event=events.append)
    assert any("resumed from checkpoint" in e.get("message", "") for e in events[before:])
    assert resumed.steps == 12
    assert _compare(tmp_path / "one" / "stage-0", spec.stage_dir, "adapter/adapter_model.safetensors") < TOL
    assert {n: s["score"] for n, s in one.scores.items()} == {n: s["score"] for n, s in resumed.scores.items()}
