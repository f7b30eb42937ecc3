"""Stored paths follow the workspace, and no catalog is silently lost (issue 27, data loss).

A copied or moved workspace uses its own files; `hicl task rm` deletes nothing outside the
workspace's tasks/; old catalogs are migrated to relative paths; an in-memory catalog and a
fresh catalog beside existing workspace data are refused.
"""

from __future__ import annotations

import gc
import json
import shutil
import sqlite3
from pathlib import Path

import pytest
from conftest import write_images, write_jsonl
from engine_fixtures import read_jsonl


def _task_file(folder: Path, n: int = 10) -> Path:
    """A LLaVA task file with its images beside it in img/."""
    names = write_images(folder / "img", n)
    recs = [{"id": f"s{i}", "image": name, "conversations": [
        {"from": "human", "value": "<image>\nWhat colour is it?"}, {"from": "gpt", "value": "blue"}]}
        for i, name in enumerate(names)]
    return write_jsonl(folder / "colour.jsonl", recs)


def _relocate(cli, monkeypatch, src: Path, dst: Path, *, move: bool) -> None:
    """`cp -a src dst` (or `mv`), then point HICL_HOME at dst."""
    gc.collect()  # close the catalog connections of earlier in-process commands
    if move:
        shutil.move(src, dst)
    else:
        shutil.copytree(src, dst, symlinks=True)
    monkeypatch.setenv("HICL_HOME", str(dst))


def _rows(db: Path, sql: str) -> list[tuple]:
    with sqlite3.connect(db) as conn:
        return conn.execute(sql).fetchall()


# --- task rm deletes only this workspace's task folders -------------------------------------------
def test_task_rm_in_a_copied_workspace_leaves_the_original_intact(cli, home, tmp_path, llava_file, monkeypatch):
    assert cli("add-task", llava_file).exit_code == 0
    copy = tmp_path / "ws2"
    _relocate(cli, monkeypatch, home, copy, move=False)
    res = cli("task", "rm", "colour")
    assert res.exit_code == 0, res.output
    assert not (copy / "tasks" / "colour").exists()
    assert (home / "tasks" / "colour" / "train.jsonl").is_file()
    monkeypatch.setenv("HICL_HOME", str(home))
    assert [t["name"] for t in json.loads(cli("tasks", "--json").stdout)] == ["colour"]


@pytest.mark.parametrize("how", ["outside", "dotdot", "symlink", "other-task"])
def test_task_rm_refuses_a_folder_that_is_not_its_own(cli, home, tmp_path, llava_file, how):
    assert cli("add-task", llava_file).exit_code == 0
    assert cli("add-task", llava_file, "--name", "other").exit_code == 0
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "precious.txt").write_text("keep me")
    task_dir = home / "tasks" / "colour"
    target = {"outside": str(victim), "dotdot": str(home / "tasks" / ".." / ".." / "victim"),
              "symlink": None, "other-task": str(home / "tasks" / "other")}[how]
    if how == "symlink":
        shutil.rmtree(task_dir)
        task_dir.symlink_to(victim, target_is_directory=True)
    else:
        with sqlite3.connect(home / "hicl.db") as conn:
            conn.execute("UPDATE tasks SET data_dir=? WHERE name='colour'", (target,))
    res = cli("task", "rm", "colour")
    assert res.exit_code == 5, res.output
    assert "refusing to delete" in res.stderr and "nothing was removed" in res.stderr
    assert (victim / "precious.txt").read_text() == "keep me"
    assert (home / "tasks" / "other" / "train.jsonl").is_file()
    assert cli("task", "show", "colour").exit_code == 0


# --- a moved workspace keeps working ---------------------------------------------------------------
def test_a_moved_workspace_starts_runs_on_its_own_images(cli, home, tmp_path, monkeypatch):
    """The images live inside the workspace (as the demo's benchmark does): stored relative."""
    assert cli("add-task", _task_file(home / "cache" / "src"), "--name", "colour").exit_code == 0
    base = tmp_path / "base"
    base.mkdir()
    (base / "config.json").write_text("{}")
    moved = tmp_path / "moved"
    _relocate(cli, monkeypatch, home, moved, move=True)
    res = cli("run", "start", "--method", "seq-lora", "--tasks", "colour", "--base", base, "--no-worker")
    assert res.exit_code == 0, res.output
    assert "went missing" not in res.stderr
    assert str(home) not in (moved / "tasks" / "colour" / "train.jsonl").read_text()
    shown = json.loads(cli("task", "show", "colour", "--json").stdout)
    assert shown["data_dir"] == str(moved / "tasks" / "colour")
    assert shown["source_path"] == str(moved / "cache" / "src" / "colour.jsonl")


def test_an_old_task_file_with_absolute_images_finds_them_in_a_moved_workspace(cli, home, tmp_path, monkeypatch):
    """Task files of an older hicl hold workspace images absolute: after a move they are found
    under the new place, without rewriting the file."""
    from hicl_app.core.taskfile import load_records

    assert cli("add-task", _task_file(home / "cache" / "src"), "--name", "colour").exit_code == 0
    task_dir = home / "tasks" / "colour"
    for split in ("train.jsonl", "test.jsonl"):  # as an older hicl wrote them
        write_jsonl(task_dir / split, [{**r, "image": str(Path(r["image"]))} for r in load_records(task_dir / split)])
    old_text = (task_dir / "train.jsonl").read_text()
    assert str(home / "cache" / "src" / "img") in old_text
    moved = tmp_path / "moved"
    _relocate(cli, monkeypatch, home, moved, move=True)
    res = cli("run", "start", "--method", "seq-lora", "--tasks", "colour", "--base", _base(tmp_path), "--no-worker")
    assert res.exit_code == 0, res.output
    records = load_records(moved / "tasks" / "colour" / "train.jsonl")
    assert records and all(r["image"].startswith(str(moved / "cache" / "src" / "img")) for r in records)
    assert (moved / "tasks" / "colour" / "train.jsonl").read_text() == old_text  # not rewritten

    # an image gone from the moved workspace too stays missing, and is named
    (moved / "cache" / "src" / "img" / "0.png").unlink()
    res = cli("run", "start", "--method", "seq-lora", "--tasks", "colour", "--base", _base(tmp_path), "--no-worker")
    assert res.exit_code == 3 and "went missing" in res.stderr


def _base(tmp_path: Path) -> Path:
    base = tmp_path / "base"
    base.mkdir(exist_ok=True)
    (base / "config.json").write_text("{}")
    return base


def test_a_moved_workspace_resumes_on_its_own_copy_of_a_base_inside_it(cli, home, tmp_path, monkeypatch):
    """The demo's base lives in the workspace's cache/: the run records it relative, so that a
    moved workspace's stages load the moved copy (the original is gone)."""
    from hicl_app.catalog.db import Catalog
    from hicl_app.catalog.models import Run, Stage
    from hicl_app.core.settings import Settings
    from hicl_app.worker.stage import build_spec

    assert cli("add-task", _task_file(home / "cache" / "src"), "--name", "colour").exit_code == 0
    base = home / "cache" / "tiny-base"
    base.mkdir(parents=True)
    (base / "config.json").write_text("{}")
    res = cli("run", "start", "--method", "seq-lora", "--tasks", "colour", "--base", base, "--no-worker", "--json")
    assert res.exit_code == 0, res.output
    assert _rows(home / "hicl.db", "SELECT base_model FROM runs") == [("./cache/tiny-base",)]
    moved = tmp_path / "moved"
    _relocate(cli, monkeypatch, home, moved, move=True)
    shown = json.loads(cli("run", "show", "1", "--json").stdout)
    assert shown["base_model"] == str(moved / "cache" / "tiny-base")
    catalog = Catalog(Settings.resolve())
    with catalog.session() as s:
        run, stage = s.get(Run, 1), s.get(Stage, 1)
    assert build_spec(catalog, run, stage).model.base == str(moved / "cache" / "tiny-base")
    catalog.dispose()


def test_a_moved_workspace_trains_a_stage(cli, home, tmp_path, monkeypatch, cl_tasks, tiny_base_dir):
    src = home / "cache" / "color"
    files = {}
    for split, path in (("train", cl_tasks["color"].train_path), ("test", cl_tasks["color"].test_path)):
        recs = read_jsonl(path)[:16 if split == "train" else 4]
        for r in recs:
            (src / "img").mkdir(parents=True, exist_ok=True)
            shutil.copy(r["image"], src / "img" / Path(r["image"]).name)
        files[split] = write_jsonl(src / f"{split}.jsonl", [
            {"id": r["id"], "image": f"img/{Path(r['image']).name}", "question": r["question"], "answer": r["answer"]}
            for r in recs])
    res = cli("add-task", files["train"], "--test", files["test"], "--name", "color", "--scorer", "exact")
    assert res.exit_code == 0, res.output
    moved = tmp_path / "moved"
    _relocate(cli, monkeypatch, home, moved, move=True)
    res = cli("run", "start", "--method", "seq-lora", "--tasks", "color", "--base", tiny_base_dir,
              "--max-steps", "2", "--batch-size", "4", "--wait", "--json")
    assert res.exit_code == 0, res.output
    detail = json.loads(cli("run", "show", "1", "--json").stdout)
    assert detail["status"] == "completed"
    assert Path(detail["adapters"][0]["path"]).is_relative_to(moved)


def test_a_moved_workspace_pushes_its_adapters(cli, home, tmp_path, monkeypatch):
    from sqlmodel import select

    from hicl_app.catalog.db import Catalog
    from hicl_app.catalog.models import Adapter, Run, Stage
    from hicl_app.catalog.runs import create_run, upsert_score
    from hicl_app.core.fsio import sha256_file
    from hicl_app.core.settings import Settings

    catalog = Catalog(Settings.resolve())
    with catalog.session() as s:
        run = create_run(s, name="r", method="seq-lora", base_model="org/tiny", task_order=["colour"],
                         stages=[["colour"]], config={})
        stage = s.exec(select(Stage).where(Stage.run_id == run.id)).one()
        adapter = catalog.settings.adapters / f"run-{run.id}" / "stage-0" / "adapter"
        adapter.mkdir(parents=True)
        (adapter / "adapter_config.json").write_text("{}")
        (adapter / "adapter_model.safetensors").write_bytes(b"weights")
        files = {f"adapter/{p.name}": sha256_file(p) for p in adapter.iterdir()}
        s.add(Adapter(run_id=run.id, stage_id=stage.id, path=str(adapter), sha256=files["adapter/adapter_model.safetensors"],
                      size_bytes=1, files=files))
        stage.status = "done"
        s.add(stage)
        upsert_score(s, run.id, 0, "colour", score=90.0, n=5, scorer="exact")
        s.get(Run, run.id).status = "completed"
        run_id = run.id
    catalog.dispose()
    moved = tmp_path / "moved"
    _relocate(cli, monkeypatch, home, moved, move=True)
    res = cli("push", run_id, "--hub", "alice/r", "--dry-run", "--json")
    assert res.exit_code == 0, res.output
    sources = [f["source"] for f in json.loads(res.stdout)["files"] if f["source"]]
    assert sources and all(Path(p).is_relative_to(moved) for p in sources)


# --- migration of catalogs that stored absolute paths ----------------------------------------------
@pytest.mark.parametrize("db_in_home", [True, False])
def test_migration_makes_absolute_workspace_paths_relative(home, tmp_path, monkeypatch, db_in_home):
    from sqlmodel import Session

    from hicl_app.catalog import db
    from hicl_app.catalog.models import Adapter, Run, Score, Stage, Task
    from hicl_app.core.settings import Settings

    if not db_in_home:
        monkeypatch.setenv("HICL_DB_URL", f"sqlite:///{tmp_path / 'elsewhere.db'}")
    settings = Settings.resolve().ensure()
    engine = db.make_engine(settings.db_url)  # no workspace bound: values are written as given
    db.upgrade(engine, "0003_cka")
    other = tmp_path / "other-ws"
    with Session(engine) as s:
        s.add(Task(name="mine", source_path="/data/mine.jsonl", source_sha256="0" * 64, source_format="llava",
                   images_dir="/data", n_train=1, n_test=1, scorer="exact", data_dir=str(home / "tasks" / "mine")))
        s.add(Task(name="theirs", source_path=str(home / "cache" / "src.jsonl"), source_sha256="1" * 64,
                   source_format="llava", images_dir=str(home / "cache"), n_train=1, n_test=1, scorer="exact",
                   data_dir=str(other / "tasks" / "theirs")))
        s.add(Run(id=1, name="r", method="seq-lora", base_model="org/tiny"))
        s.add(Run(id=2, name="in-ws", method="seq-lora", base_model=str(home / "cache" / "tiny-base")))
        s.add(Run(id=3, name="outside", method="seq-lora", base_model="/models/base"))
        s.add(Stage(id=1, run_id=1, index=0))
        s.flush()
        s.add(Adapter(run_id=1, stage_id=1, path=str(home / "adapters" / "run-1" / "stage-0" / "adapter"),
                      sha256="", size_bytes=0))
        s.add(Score(run_id=1, stage_index=0, task_name="mine", score=1.0, n=1, scorer="exact",
                    predictions_path=str(home / "adapters" / "run-1" / "stage-0" / "predictions" / "mine.jsonl")))
        s.commit()
        # raw SQL: the Job model has columns later revisions added (not_before), which 0003 lacks
        s.connection().exec_driver_sql(
            "INSERT INTO jobs (kind, run_id, status, attempts, max_attempts, cancel_requested, payload, progress, "
            "log_path, created_at) VALUES ('stage', 1, 'queued', 0, 3, 0, '{}', '{}', ?, '2026-01-01 00:00:00')",
            (str(home / "logs" / "job-1.log"),))
        s.commit()
    engine.dispose()

    catalog = db.Catalog(settings)
    assert db.current_revision(catalog.engine) == db.HEAD_REVISION
    catalog.dispose()
    path = Path(settings.db_url.removeprefix("sqlite:///"))
    assert _rows(path, "SELECT name, source_path, images_dir, data_dir FROM tasks ORDER BY name") == [
        ("mine", "/data/mine.jsonl", "/data", "tasks/mine"),
        ("theirs", "cache/src.jsonl", "cache", str(other / "tasks" / "theirs"))]
    assert _rows(path, "SELECT path FROM adapters") == [("adapters/run-1/stage-0/adapter",)]
    assert _rows(path, "SELECT predictions_path FROM scores") == [("adapters/run-1/stage-0/predictions/mine.jsonl",)]
    assert _rows(path, "SELECT log_path FROM jobs") == [("logs/job-1.log",)]
    assert _rows(path, "SELECT base_model FROM runs ORDER BY id") == [("org/tiny",), ("./cache/tiny-base",),
                                                                      ("/models/base",)]
    with db.Catalog(settings).session() as s:  # read back absolute, against the workspace
        assert s.get(Task, 1).data_dir == str(home / "tasks" / "mine")
        assert [s.get(Run, i).base_model for i in (1, 2, 3)] == ["org/tiny", str(home / "cache" / "tiny-base"),
                                                                 "/models/base"]


# --- catalogs that would lose what is recorded -----------------------------------------------------
@pytest.mark.parametrize("url", ["sqlite://", "sqlite:///:memory:"])
def test_an_in_memory_catalog_is_refused(cli, llava_file, monkeypatch, url):
    monkeypatch.setenv("HICL_DB_URL", url)
    res = cli("add-task", llava_file)
    assert res.exit_code == 3, res.output
    assert "in-memory" in res.stderr and "added task" not in res.output


@pytest.mark.parametrize("state", ["zero-byte", "missing"])
def test_a_fresh_catalog_beside_workspace_data_is_refused(cli, home, tmp_path, state):
    empty = tmp_path / "first-use"  # empty folders are no data: first use creates the catalog
    for folder in ("tasks", "adapters", "checkpoints"):
        (empty / folder).mkdir(parents=True)
    assert cli("--home", empty, "tasks").exit_code == 0 and (empty / "hicl.db").stat().st_size > 0

    for folder in ("tasks/colour", "adapters/run-1", "checkpoints/run-1"):
        (home / folder).mkdir(parents=True)
        (home / folder / "data.bin").write_bytes(b"x")
    if state == "zero-byte":
        (home / "hicl.db").write_bytes(b"")
    res = cli("tasks")
    assert res.exit_code == 5, res.output
    assert "tasks/, adapters/, checkpoints/" in res.stderr
    assert "restore hicl.db from a backup" in res.stderr and "hicl init --force" in res.stderr
    assert (home / "hicl.db").exists() == (state == "zero-byte")
    if state == "zero-byte":
        assert (home / "hicl.db").stat().st_size == 0
    assert cli("init").exit_code == 5

    res = cli("init", "--force")
    assert res.exit_code == 0, res.output
    assert cli("tasks", "--json").stdout.strip() == "[]"
    assert (home / "tasks" / "colour" / "data.bin").is_file()

