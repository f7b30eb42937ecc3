"""The contract every registered method keeps, checked for each one on the same 2-task tiny run.

A new method gets these checks by registering: its options round-trip through their JSON form,
its plan covers the tasks in order, each stage trains and scores, the saved stage rebuilds the
model that was scored (same predictions), a stage stopped at a checkpoint and resumed ends with
the same files as one run straight through, `fingerprint` sees every file it depends on, and
`export` names files that exist.
"""

from __future__ import annotations

import dataclasses

import pytest

from hicl_app.core.fsio import sha256_file
from hicl_app.engine.config import EvalConfig, ModelConfig, TrainConfig
from hicl_app.engine.errors import Stopped
from hicl_app.engine.methods import METHODS, get_method
from hicl_app.engine.methods.options import make_options, specs, to_json
from hicl_app.engine.pipeline import StageSpec, run_eval, run_stage

ORDER = ["color", "bg"]
STEPS = 6


def _stage(base, tasks, root, method, plan, index, prev=None) -> StageSpec:
    seen = list(dict.fromkeys(n for stage in plan[: index + 1] for n in stage))
    return StageSpec(method=method, method_options={}, stage_index=index, n_stages=len(plan),
                     train_tasks=[tasks[n] for n in plan[index]], eval_tasks=[tasks[n] for n in seen],
                     model=ModelConfig(str(base)),
                     train=TrainConfig(max_steps=STEPS, lr=1e-3, rank=4, alpha=8, checkpoint_every=2),
                     eval=EvalConfig(batch_size=16, max_new_tokens=4), stage_dir=root / f"stage-{index}",
                     prev_stage_dir=prev, checkpoint_dir=root / "ckpt" / f"stage-{index}",
                     earlier_tasks=[tasks[n] for n in dict.fromkeys(n for stage in plan[:index] for n in stage)])


@pytest.mark.parametrize("name", list(METHODS))
def test_options_round_trip_and_are_documented(name):
    cls = METHODS[name]
    method = get_method(name)
    assert dataclasses.is_dataclass(method.options) and method.summary() and cls.reference
    assert make_options(cls.Options, to_json(method.options), name) == method.options
    text = {s.name: (str(s.default) if s.default is not None else "none") for s in specs(cls.Options)}
    assert make_options(cls.Options, text, name) == method.options  # the CLI and the forms give text
    assert all(s.help for s in specs(cls.Options)), "every option needs help text"


@pytest.mark.parametrize("name", list(METHODS))
def test_a_two_task_run_saves_loads_resumes_and_exports(name, tiny_base_dir, cl_tasks, tmp_path):
    method = get_method(name)
    plan = method.plan(ORDER)
    assert plan and all(plan) and [n for n in dict.fromkeys(t for stage in plan for t in stage)] == ORDER

    prev, results = None, []
    for index in range(len(plan)):
        spec = _stage(tiny_base_dir, cl_tasks, tmp_path / "run", name, plan, index, prev)
        results.append(run_stage(spec))
        prev = spec.stage_dir
    last = spec
    assert set(results[-1].scores) == set(ORDER)
    for rel, digest in results[-1].files.items():
        assert sha256_file(last.stage_dir / rel) == digest

    # the saved stage alone rebuilds the model that was scored
    again = run_eval(last.model, [cl_tasks[n] for n in ORDER], last.eval, tmp_path / "again", method=name,
                     stage_dir=last.stage_dir)
    for task in ORDER:
        assert again[task]["score"] == results[-1].scores[task]["score"]
        assert (tmp_path / "again" / f"{task}.jsonl").read_text() == \
            (last.stage_dir / "predictions" / f"{task}.jsonl").read_text()

    # a stage stopped at a checkpoint and resumed ends with the same state as one run straight through
    resumed = _stage(tiny_base_dir, cl_tasks, tmp_path / "resumed", name, plan, len(plan) - 1, last.prev_stage_dir)
    steps = []
    with pytest.raises(Stopped):
        run_stage(resumed, on_event=lambda e: steps.append(e) if e["type"] == "loss" else None,
                  should_stop=lambda: len(steps) >= STEPS // 2)
    run_stage(resumed)
    state = {rel for rel in results[-1].files if rel != "stage.json"}
    for rel in state:
        assert sha256_file(resumed.stage_dir / rel) == sha256_file(last.stage_dir / rel), rel

    # resuming notices every file of the previous stage it depends on
    if last.prev_stage_dir is not None:
        seen = method.fingerprint(last.prev_stage_dir)
        assert {rel for rel in results[-2].files if rel != "stage.json"} <= set(seen)

    exported = method.export(last.stage_dir)
    assert exported.files and all((last.stage_dir / f).is_file() for f in exported.files)
    assert exported.peft == ("adapter/adapter_model.safetensors" in exported.files) and exported.loader
