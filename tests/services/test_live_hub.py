"""Live publishing and pulling, end to end against the Hub look-alike (the real huggingface_hub
client): a 3-stage run with --push-to ends with one commit and one tag per stage whose files are
the catalog's; the hub being down while the middle stage is pushed neither fails nor holds back
the run, and the push catches up when the hub is back; `hicl pull` of that repo into a fresh
workspace gives back the matrix and every stage's adapter (same logits); `run eval` on the
puller's own copy of a task scores what the publisher scored, and `run extend` continues the
pulled run.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from engine_fixtures import add_tasks_by_cli, write_jsonl
from hub_server import FakeHub
from sqlmodel import select

TOKEN = "hf_alice_SECRET_token_0123456789"
REPO = "alice/live"
RUN_ARGS = ["--method", "seq-lora", "--max-steps", "2", "--lr", "1e-3", "--batch-size", "4", "--eval-batch-size", "32",
            "--max-new-tokens", "2", "--device", "cpu", "--dtype", "float32", "--checkpoint-every", "0"]


@pytest.fixture
def hub(monkeypatch, tmp_path):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "HF_HUB_DISABLE_XET", True)
    monkeypatch.setenv("HF_HUB_DISABLE_XET", "1")
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(tmp_path / "no-login" / "token"))
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    monkeypatch.setenv("HICL_PUSH_BACKOFF", "1,2")
    with FakeHub({TOKEN: ("alice", "write")}) as server:
        monkeypatch.setenv("HF_ENDPOINT", server.endpoint)
        yield server


def logits(base_dir: Path, adapter_dir: Path):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForImageTextToText

    model = PeftModel.from_pretrained(AutoModelForImageTextToText.from_pretrained(base_dir), adapter_dir).eval()
    with torch.no_grad():
        return model(input_ids=torch.tensor([[1, 5, 9, 17, 33, 4]])).logits


def drain(catalog, on_end=None) -> None:
    from hicl_app.catalog.models import Job
    from hicl_app.worker.loop import Worker

    def over() -> bool:
        with catalog.session() as s:
            return all(j.status not in ("queued", "running") for j in s.exec(select(Job)))

    Worker(catalog, poll=0.05, on_end=on_end).run(until=over)


def test_live_push_with_the_hub_down_then_pull_and_extend(cli, home, tmp_path, tiny_base_dir, cl_tasks, hub,
                                                          monkeypatch):
    import torch

    from hicl_app.catalog.db import Catalog
    from hicl_app.catalog.models import Adapter, Job, Push, Run, Score, Stage
    from hicl_app.core.settings import Settings
    from hicl_app.hub.live import publish_stage

    add_tasks_by_cli(cli, tmp_path, cl_tasks)
    started = cli("run", "start", *RUN_ARGS, "--tasks", "color,bg,tone", "--base", tiny_base_dir, "--push-to", REPO,
                  "--no-worker", "--json")
    assert started.exit_code == 0, started.output
    run_id = json.loads(started.stdout)["run_id"]
    catalog = Catalog(Settings.resolve())
    seen = {}

    def on_end(job, status):
        stage = job.payload.get("stage_index")
        if job.kind == "stage" and stage == 1:
            hub.down = "503"  # the hub goes down as the middle stage is to be pushed
        if job.kind == "push" and stage == 1 and "down" not in seen:
            seen["down"] = status
        if job.kind == "stage" and stage == 2:
            with catalog.session() as s:  # the run ended while its push still waits for the hub
                seen["run_at_end"] = s.get(Run, run_id).status
                seen["pushed_at_end"] = sorted(p.stage_index for p in s.exec(select(Push)))
            hub.down = None

    drain(catalog, on_end)
    assert seen == {"down": "queued", "run_at_end": "completed", "pushed_at_end": [0]}

    repo = hub.repos[REPO]
    chain, head = [], hub.head(REPO)
    while head.parent is not None:
        chain.append(head)
        head = repo.commits[head.parent]
    assert len(chain) == 3 and set(repo.tags) == {"stage-1", "stage-2", "stage-3"}
    assert [repo.tags[f"stage-{k + 1}"] for k in (2, 1, 0)] == [c.oid for c in chain]  # one commit per stage, in order
    with catalog.session() as s:
        adapters = {a.stage_id: a for a in s.exec(select(Adapter).where(Adapter.run_id == run_id))}
        by_stage = {st.index: adapters[st.id] for st in s.exec(select(Stage).where(Stage.run_id == run_id))}
        pushes = list(s.exec(select(Job).where(Job.kind == "push").order_by(Job.id)))
    assert [j.status for j in pushes] == ["done"] * 3 and pushes[1].attempts >= 2
    for k, adapter in by_stage.items():
        commit = repo.commits[repo.tags[f"stage-{k + 1}"]]
        for rel, sha in adapter.files.items():
            assert commit.files[f"stages/stage-{k + 1}/{rel}"].sha256 == sha
        assert commit.files["adapter_model.safetensors"].sha256 == adapter.sha256
    listed = cli("jobs", "--json")
    assert {(j["kind"], j["stage_index"], j["repo_id"]) for j in json.loads(listed.stdout) if j["kind"] == "push"} == \
        {("push", k, REPO) for k in range(3)}

    # never twice: again from the catalog, and from the hub when the catalog lost the record
    n_commits = len(repo.commits)
    endpoint = hub.endpoint
    assert publish_stage(catalog, run_id=run_id, stage_index=2, repo_id=REPO, endpoint=endpoint).how == "already"
    with catalog.session() as s:
        s.delete(s.exec(select(Push).where(Push.stage_index == 2)).one())
    assert publish_stage(catalog, run_id=run_id, stage_index=2, repo_id=REPO, endpoint=endpoint).how == "found"
    assert len(repo.commits) == n_commits
    shown = json.loads(cli("run", "show", run_id, "--json").stdout)
    for path in home.rglob("*"):
        if path.is_file():
            assert TOKEN.encode() not in path.read_bytes(), path

    # pull into a fresh workspace
    other = tmp_path / "ws2"
    monkeypatch.setenv("HICL_HOME", str(other))
    pulled = cli("pull", REPO, "--base", tiny_base_dir, "--json")
    assert pulled.exit_code == 0, pulled.output
    got = json.loads(pulled.stdout)
    assert got["stages"] == 3 and got["tasks"] == {"color": "absent", "bg": "absent", "tone": "absent"}
    mine = json.loads(cli("run", "show", got["run_id"], "--json").stdout)
    assert mine["matrix"] == shown["matrix"] and mine["task_order"] == shown["task_order"]
    assert mine["method"] == "seq-lora" and mine["status"] == "completed"
    for k in range(3):
        ours = Path(mine["adapters"][k]["path"])
        assert ours.is_relative_to(other)
        assert torch.equal(logits(tiny_base_dir, ours), logits(tiny_base_dir, Path(by_stage[k].path)))
    at = json.loads(cli("pull", REPO, "--revision", "stage-1", "--base", tiny_base_dir, "--json").stdout)
    assert at["stages"] == 1
    assert cli("pull", REPO, "--revision", "stage-9", "--base", tiny_base_dir).exit_code == 4

    # continue the pulled run with a new task, scored with the tasks this workspace has
    add_tasks_by_cli(cli, tmp_path, cl_tasks, names=("color",))
    records = [json.loads(line) for line in open(cl_tasks["tone"].test_path)]
    src = write_jsonl(tmp_path / "shape.jsonl", [{"id": f"s{i}", "image": r["image"], "question": "What shape is it?",
                                                  "answer": "circle"} for i, r in enumerate(records)])
    added = cli("add-task", src, "--name", "shape", "--images", Path(records[0]["image"]).parent,
                "--test-fraction", "0.25", "--scorer", "exact")
    assert added.exit_code == 0, added.output
    evaluated = cli("run", "eval", got["run_id"], "--tasks", "color", "--no-worker", "--json")
    assert evaluated.exit_code == 0, evaluated.output
    drain(Catalog(Settings.resolve()))
    with Catalog(Settings.resolve()).session() as s:
        ours = {c.stage_index: c for c in s.exec(select(Score).where(Score.run_id == got["run_id"],
                                                                     Score.task_name == "color"))}
    assert sorted(k for k, c in ours.items() if c.details.get("eval_job")) == [0, 1, 2]  # scored here, on our copy
    assert [ours[k].score for k in range(3)] == [row[0] for row in shown["matrix"]]  # the same adapters, the same data
    extended = cli("run", "extend", got["run_id"], "--tasks", "shape", "--no-worker", "--json")
    assert extended.exit_code == 0, extended.output
    drain(Catalog(Settings.resolve()))
    after = json.loads(cli("run", "show", got["run_id"], "--json").stdout)
    assert after["status"] == "completed" and len(after["stages"]) == 4, (after["error"], after["stages"][-1])
    assert after["task_order"] == ["color", "bg", "tone", "shape"]
    assert [row[:3] for row in after["matrix"][:3]] == shown["matrix"]
    last = dict(zip(after["task_order"], after["matrix"][3]))
    assert last["shape"] is not None and last["color"] is not None and last["bg"] is None  # bg is not here
    for path in other.rglob("*"):
        if path.is_file():
            assert TOKEN.encode() not in path.read_bytes(), path


def test_push_to_is_checked_before_anything_is_recorded(cli, home, tmp_path, monkeypatch):
    base = tmp_path / "base"
    base.mkdir()
    (base / "config.json").write_text("{}")
    args = ["run", "start", "--method", "seq-lora", "--tasks", "ghost", "--base", base, "--no-worker"]
    monkeypatch.setenv("HF_ENDPOINT", "https://bob:hunter2@hub.example")
    res = cli(*args, "--push-to", REPO)
    assert res.exit_code == 3 and "credentials" in res.stderr and "hunter2" not in res.stderr
    assert cli(*args, "--push-to", "no-namespace").exit_code == 3
    assert cli(*args, "--private").exit_code == 3
    assert json.loads(cli("runs", "--json").stdout) == []
