"""`hicl compare` on runs written straight into a catalog with their predictions files (no training)."""

from __future__ import annotations

import json
import random
import re

from hicl_app.catalog.db import Catalog
from hicl_app.catalog.models import Run, utcnow
from hicl_app.catalog.runs import create_run, upsert_score
from hicl_app.core.settings import Settings

TASKS = ["shapes", "caption-scene"]
ENV = {"python": "3.11.7", "torch": "2.13.0", "transformers": "5.24.0", "peft": "0.21.2", "device": "cpu",
       "dtype": "float32", "threads": 2, "hicl": "0.1.0", "cpu": "Intel(R) Xeon(R) Processor"}


def make_run(home, name: str, seed: int, skill: float, *, env: dict | None = None, n: int = 120,
             method: str = "seq-lora") -> int:
    """A completed two-task sequential run whose closed-answer task is right with probability
    `skill` (forgotten by half after the second stage), with a caption task and predictions files."""
    cat = Catalog(Settings.resolve(home))
    rng = random.Random(seed * 1000 + int(skill * 100))
    config = {"train": {"seed": seed, "lr": 0.003}, "eval": {}, "model": {}, "method_options": {}, "eval_all": False}
    with cat.session() as s:
        run = create_run(s, name=name, method=method, base_model="/base", task_order=TASKS,
                         stages=[[t] for t in TASKS], config=config)
        s.commit()
        run_id = run.id
    with cat.session() as s:
        folder = home / "preds" / name
        folder.mkdir(parents=True)
        for stage in range(2):
            for task in TASKS[: stage + 1]:
                if task == "shapes":
                    p = skill if stage == 0 else skill / 2
                    scores = [float(rng.random() < p) for _ in range(n)]
                    value, scorer = 100.0 * sum(scores) / n, "exact"
                else:
                    scores = [rng.uniform(20, 80) for _ in range(n)]
                    value, scorer = sum(scores) / n + 3.0, "caption"  # a corpus-level score above the mean
                path = folder / f"s{stage}-{task}.jsonl"
                path.write_text("".join(json.dumps({"id": f"{task}-{i}", "question": "q", "prediction": "p",
                                                    "reference": "r", "score": sc}) + "\n"
                                        for i, sc in enumerate(scores)))
                upsert_score(s, run_id, stage, task, score=value, n=n, scorer=scorer, predictions_path=str(path))
        r = s.get(Run, run_id)
        r.status, r.finished_at, r.env = "completed", utcnow(), {**ENV, **(env or {}), "seed": seed}
        s.add(r)
        s.commit()
    cat.dispose()
    return run_id


DOCUMENTED = re.compile(r"keys: (.*)", re.S)


def test_compare_json_keys_are_the_documented_ones(cli, home):
    a = make_run(home, "base-0", 0, 0.5)
    b = make_run(home, "better-0", 0, 0.9, method="hide")
    res = cli("compare", a, b, "--json", "--resamples", "200")
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    helptext = " ".join(cli("compare", "--help").stdout.split())
    for key in out:
        assert key in helptext
    for key in out["runs"][0]:
        assert key in helptext
    pair = out["comparisons"][0]
    assert set(pair) == {"run", "against", "metrics"} and (pair["run"], pair["against"]) == (b, a)
    assert set(pair["metrics"]) == {"mft", "last", "avg", "bwt", "forgetting", "general"}
    for key in pair["metrics"]["last"]:
        assert key in helptext
    for key in out["groups"][0]["metrics"]["last"]:
        assert key in helptext
    mft = pair["metrics"]["mft"]
    assert mft["low"] <= mft["diff"] <= mft["high"] and mft["excludes_zero"]  # 50% against 90% on 120 samples
    assert mft["verdict"] == f"run {b} better on MFT, CI excludes 0"
    assert out["env_differences"] == {} and out["resamples"] == 200
    table = cli("compare", a, b, "--resamples", "100")
    assert table.exit_code == 0 and f"run {b} better on MFT, CI excludes 0" in table.stdout


def test_seeds_are_grouped_and_environments_flagged(cli, home):
    runs = [make_run(home, f"lora-{s}", s, 0.6) for s in (0, 1, 2)]
    other = make_run(home, "lora-gpu", 3, 0.6, env={"device": "cuda", "gpu": "NVIDIA H200"}, method="joint")
    res = cli("compare", *runs, other, "--json", "--resamples", "50")
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    groups = {tuple(g["runs"]): g for g in out["groups"]}
    assert set(groups) == {tuple(runs), (other,)}
    seeds = groups[tuple(runs)]
    assert seeds["seeds"] == [0, 1, 2] and seeds["metrics"]["mft"]["n"] == 3 and seeds["metrics"]["mft"]["std"] > 0
    assert set(out["env_differences"]) == {"device", "gpu"}
    assert out["env_differences"]["device"][str(other)] == "cuda"
    assert "environments differ" in res.stderr and "gpu" in res.stderr
    table = cli("compare", *runs, "--resamples", "20").stdout
    assert "across seeds" in table and "±" in table


def test_compare_refuses_what_it_cannot_pair(cli, home):
    a = make_run(home, "a", 0, 0.5)
    assert cli("compare", a).exit_code == 3
    assert cli("compare", a, a).exit_code == 3
    b = make_run(home, "b", 1, 0.5)
    (home / "preds" / "b" / "s1-shapes.jsonl").unlink()
    res = cli("compare", a, b)
    assert res.exit_code == 4 and "no stored predictions" in res.stderr
    assert cli("compare", a, "nosuchrun").exit_code == 4


def test_run_show_prints_the_environment(cli, home):
    run = make_run(home, "shown", 0, 0.5, env={"hicl_commit": "0123456789abcdef0123"})
    out = cli("run", "show", run).stdout
    line = next(x for x in out.splitlines() if x.startswith("environment:"))
    assert "hicl 0.1.0 (0123456789ab)" in line and "torch 2.13.0" in line and "Intel(R) Xeon(R) Processor" in line
    assert "seed 0" in line and "2 threads" in line


def test_demo_progress_reads_the_runs_from_the_catalog(home):
    from hicl_app.builtin.demo_progress import runs_status

    done = make_run(home, "finished", 0, 0.5)
    cat = Catalog(Settings.resolve(home))
    with cat.session() as s:
        queued = create_run(s, name="waiting", method="seq-lora", base_model="/base", task_order=TASKS,
                            stages=[[t] for t in TASKS], config={"train": {"max_steps": 10}}).id
        s.commit()
    status = runs_status(cat, {"finished": done, "waiting": queued})
    cat.dispose()
    by_label = {r["label"]: r for r in status["runs"]}
    assert by_label["finished"]["fraction"] == 1.0 and by_label["finished"]["eta_s"] == 0.0
    assert by_label["waiting"]["fraction"] == 0.0 and by_label["waiting"]["eta_s"] is None
    assert by_label["waiting"]["stages"] == 2 and by_label["waiting"]["done"] == 0
    assert 0 < status["fraction"] < 1
