"""`hicl bench`: the references it times against give the same results (never timings)."""

from __future__ import annotations

import json

import pytest
from engine_fixtures import quick_lora

from hicl_app.bench import MODULES, select
from hicl_app.core.errors import InvalidInput
from hicl_app.core.taskfile import load_records


def test_only_selects_known_benchmarks_in_suite_order():
    assert select(None) == list(MODULES)
    assert select("memory, eval") == ["eval", "memory", "memory-checkpointing"]  # a name selects its family
    assert select("memory-checkpointing") == ["memory-checkpointing"]
    with pytest.raises(InvalidInput, match="nope"):
        select("eval,nope")


def test_bad_base_is_refused_before_anything_runs(cli, home, tmp_path):
    result = cli("bench", "--base", tmp_path, "--only", "eval")
    assert result.exit_code == 3
    assert "no config.json" in result.stderr
    assert not (home / "cache").exists() or not any((home / "cache").iterdir())


def test_cli_start_reports_json(cli):
    result = cli("bench", "--only", "cli-start", "--repeats", "1", "--json")
    assert result.exit_code == 0, result.stderr
    data = json.loads(result.stdout)
    [entry] = data["results"]
    assert entry["name"] == "cli-start" and entry["unit"] == "s"
    cpu = entry["details"]["cpu_seconds"]
    assert entry["figure"] == pytest.approx(cpu["hicl"] - cpu["python"]) and cpu["python"] > 0


def test_reference_loop_answers_like_batched_evaluation(tiny_base_dir, cl_tasks):
    from hicl_app.bench.eval_batched import one_by_one
    from hicl_app.engine.config import EvalConfig
    from hicl_app.engine.eval.generate import generate_answers

    loaded, model = quick_lora(tiny_base_dir, load_records(cl_tasks["color"].train_path), steps=15)
    test = load_records(cl_tasks["color"].test_path)[:5] + load_records(cl_tasks["tone"].test_path)[:5]
    kw = dict(device=loaded.device, dtype=loaded.dtype)
    batched = generate_answers(model, loaded.processor, test, EvalConfig(batch_size=4, max_new_tokens=5), **kw)
    assert one_by_one(model, loaded.processor, test, 5, **kw) == batched
    assert any(batched)


def test_trainer_baseline_follows_the_same_loss_curve(tiny_base_dir, cl_tasks, tmp_path):
    pytest.importorskip("accelerate")
    from hicl_app.bench.train_loop import _config, hicl_trial, trainer_trial
    from hicl_app.bench.workload import Workload

    workload = Workload(base=tiny_base_dir, tiny=True, tasks=[cl_tasks["color"], cl_tasks["bg"]], work=tmp_path,
                        log=lambda message: None)
    records = workload.records("train")[::16]
    cfg = _config(epochs=2, batch_size=4)
    _, ours = hicl_trial(workload, records, cfg)
    _, theirs = trainer_trial(workload, records, cfg, log_every_step=True)
    assert len(ours) == len(theirs) == 8
    assert ours == pytest.approx(theirs, abs=1e-4, rel=0)  # the Trainer logs 4 decimals
    _, grouped = hicl_trial(workload, records, _config(epochs=2, batch_size=4, group_by_length=True))
    assert len(grouped) == 8 and grouped != ours


def test_checkpointing_bench_samples_fill_max_length(tiny_base_dir, cl_tasks):
    from hicl_app.bench.checkpointing import MAX_LENGTH, long_records
    from hicl_app.engine.config import ModelConfig
    from hicl_app.engine.data.encoding import Encoder
    from hicl_app.engine.modeling.models import load_base

    encoder = Encoder(load_base(ModelConfig(str(tiny_base_dir))).processor, MAX_LENGTH)
    records = long_records(load_records(cl_tasks["color"].train_path)[:2], 3)
    assert len(records) == 3 and all(encoder.length(r) == MAX_LENGTH for r in records)
