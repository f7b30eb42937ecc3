"""General retention in the reports, demo method variants, and the worker resolving a method's extra task."""

from __future__ import annotations

import json

import pytest
from sqlmodel import select
from tui_support import add_tasks, fake_base, open_catalog

from hicl_app.catalog.models import Run, Stage
from hicl_app.catalog.runs import create_run, upsert_score
from hicl_app.core.clmetrics import general_retention
from hicl_app.core.errors import InvalidInput


def test_general_retention_arithmetic():
    assert general_retention(40.0, [35.0, 30.0]) == {"base": 40.0, "last": 30.0, "retention": -10.0, "ratio": 0.75}
    assert general_retention(40.0, [35.0, None])["last"] == 35.0  # the latest stage evaluated so far
    assert general_retention(None, [35.0])["retention"] is None
    assert general_retention(0.0, [5.0]) == {"base": 0.0, "last": 5.0, "retention": 5.0, "ratio": None}
    assert general_retention(10.0, [])["last"] is None
    with pytest.raises(ValueError):
        general_retention("high", [1.0])


def _run(catalog, home, general: str | None, scores: dict) -> int:
    with catalog.session() as s:
        run = create_run(s, name="r", method="llava-c", base_model=str(fake_base(home)), task_order=["a", "b"],
                         stages=[["a"], ["b"]], config={"general_task": general} if general else {})
        for (stage, task), value in scores.items():
            upsert_score(s, run.id, stage, task, score=value, n=10, scorer="exact")
        return run.id


def test_run_show_and_metrics_report_general_retention(cli, home):
    catalog = open_catalog(home)
    scores = {(-1, "gen"): 40.0, (0, "a"): 90.0, (0, "gen"): 35.0, (1, "a"): 60.0, (1, "b"): 80.0, (1, "gen"): 30.0}
    run_id = _run(catalog, home, "gen", scores)
    line = "general retention on gen: 40.00 before -> 30.00 after = -10.00 points (ratio 0.75)"
    shown = cli("run", "show", run_id)
    assert shown.exit_code == 0 and line in shown.stdout
    assert line in cli("metrics", run_id).stdout
    data = json.loads(cli("metrics", run_id, "--json").stdout)
    assert data["general"] == {"task": "gen", "after": [35.0, 30.0], "base": 40.0, "last": 30.0,
                               "retention": -10.0, "ratio": 0.75}
    assert data["last"] == 70.0 and data["tasks"] == ["a", "b"]  # the general task stays out of the matrix
    assert json.loads(cli("run", "show", run_id, "--json").stdout)["general"]["retention"] == -10.0

    plain = _run(catalog, home, None, {(0, "a"): 50.0})
    assert "general retention" not in cli("run", "show", plain).stdout
    assert json.loads(cli("metrics", plain, "--json").stdout)["general"] is None


def test_demo_variants_parse_and_bad_ones_fail_before_anything_is_made(home):
    from hicl_app.builtin.demo import DemoConfig, run_demo
    from hicl_app.services.method_options import parse_variant, split_methods

    assert split_methods("seq-lora, hide:expand=0,3,-1,joint") == ("seq-lora", "hide:expand=0,3,-1", "joint")
    assert split_methods("hide:expand=2,3:routing=top1,llava-c") == ("hide:expand=2,3:routing=top1", "llava-c")
    assert split_methods("3,hide") == ("3", "hide")  # a lone index with nothing to continue stays a (bad) name
    assert parse_variant("hide:expand=0,3") == ("hide", {"expand": "0,3"})
    assert parse_variant("llava-c") == ("llava-c", {})
    assert parse_variant("llava-c:sac=off:uir-weight=0:sac_gamma=0.5") == \
        ("llava-c", {"sac": "off", "uir_weight": 0, "sac_gamma": 0.5})
    with pytest.raises(InvalidInput, match="bad method variant"):
        parse_variant("llava-c:sac")
    catalog = open_catalog(home)
    for methods, match in [(("llava-c:sac=maybe",), "true or false"), (("seq-lora:sac=off",), "unknown option"),
                           (("nope:x=1",), "unknown method")]:
        with pytest.raises(InvalidInput, match=match):
            run_demo(catalog, DemoConfig.quick(methods=methods), log=lambda msg: None)
    assert not (home / "cache").exists() or not any((home / "cache").iterdir())


def test_worker_resolves_the_pretrain_task_and_refuses_the_general_one(home, tmp_path):
    from hicl_app.worker.stage import PreflightError, build_spec

    catalog = open_catalog(home)
    add_tasks(catalog, tmp_path, ["a", "caps", "gen"])
    with catalog.session() as s:
        run = create_run(s, name="r", method="llava-c", base_model=str(fake_base(tmp_path)), task_order=["a"],
                         stages=[["a"]], config={"general_task": "gen", "method_options": {"pretrain_task": "caps"}})
        run_id = run.id
    with catalog.session() as s:
        run, stage = s.get(Run, run_id), s.exec(select(Stage).where(Stage.run_id == run_id)).first()
        spec = build_spec(catalog, run, stage)
        assert list(spec.extra_tasks) == ["caps"] and spec.extra_tasks["caps"].train_path.is_file()
        assert [t.name for t in spec.train_tasks] == ["a"] and "caps" not in [t.name for t in spec.eval_tasks]
        run.config = {**run.config, "method_options": {"pretrain_task": "gen"}}
        with pytest.raises(PreflightError, match="held-out general task"):
            build_spec(catalog, run, stage)
        run.config = {**run.config, "method_options": {"pretrain_task": "missing"}}
        with pytest.raises(Exception, match="no task named 'missing'"):
            build_spec(catalog, run, stage)
