"""The replay, EWC and LwF baselines: each one's defining property on the tiny model, and that what
each saves is a plain PEFT adapter. Their full two-stage runs (the matrix, reloading, resuming) are
the contract test's (`test_method_contract.py`), which every registered method goes through."""

from __future__ import annotations

import pytest
import torch

from hicl_app.core.taskfile import load_records
from hicl_app.engine.config import EvalConfig, ModelConfig, TrainConfig
from hicl_app.engine.errors import EngineError
from hicl_app.engine.methods import get_method
from hicl_app.engine.methods.base import StageContext
from hicl_app.engine.pipeline import StageSpec, run_stage

ORDER = ["color", "bg"]


def _spec(base, tasks, root, method, index, options=None, prev=None, n_stages=len(ORDER), **train) -> StageSpec:
    cfg = {"max_steps": 4, "lr": 1e-3, "rank": 4, "alpha": 8, "checkpoint_every": 0, "dropout": 0.0, **train}
    return StageSpec(method=method, method_options=dict(options or {}), stage_index=index, n_stages=n_stages,
                     train_tasks=[tasks[ORDER[index]]], eval_tasks=[tasks[n] for n in ORDER[:index + 1]],
                     model=ModelConfig(str(base)), train=TrainConfig(**cfg),
                     eval=EvalConfig(batch_size=32, max_new_tokens=4), stage_dir=root / f"stage-{index}",
                     prev_stage_dir=prev, checkpoint_dir=root / "ckpt" / f"stage-{index}",
                     earlier_tasks=[tasks[n] for n in ORDER[:index]])


def _stage_zero(base, tasks, root, method, options=None, *, fisher=False):
    """Stage 1 of `method` as its hooks leave it, without training (a fresh LoRA, its B then
    moved off zero so the model differs from the base), saved under `root`; returns its spec.
    The saved adapter alone, loaded by plain PEFT, gives the same logits as the stage's model."""
    from peft import PeftModel

    from hicl_app.engine.modeling.models import load_base

    spec = _spec(base, tasks, root, method, 0, options, n_stages=3)
    loaded = load_base(ModelConfig(str(base)))
    method_ = get_method(method, options)
    ctx = _ctx(spec, loaded)
    model = method_.prepare(loaded.model, ctx)
    torch.manual_seed(0)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.02)
    if fisher:
        method_.after_train(model, ctx)
    method_.save(model, ctx)
    exported = method_.export(spec.stage_dir)
    assert exported.peft and sorted(exported.files) == ["adapter/adapter_config.json", "adapter/adapter_model.safetensors"]
    inputs = {k: v for k, v in _batch(loaded, load_records(tasks["color"].test_path)[:4]).items() if k != "labels"}
    plain = PeftModel.from_pretrained(load_base(ModelConfig(str(base))).model, spec.stage_dir / "adapter").eval()
    with torch.no_grad():
        assert torch.equal(plain(**inputs).logits, model.eval()(**inputs).logits)
    return spec


def _ctx(spec: StageSpec, loaded=None) -> StageContext:
    records = [r for t in spec.train_tasks for r in load_records(t.train_path)]
    if loaded is None:
        return StageContext(spec=spec, processor=None, device=torch.device("cpu"), dtype=torch.float32, records=records)
    return StageContext(spec=spec, processor=loaded.processor, device=loaded.device, dtype=loaded.dtype,
                        records=records)


def _value(t: torch.Tensor) -> float:
    return float(t.detach())


def _batch(loaded, records):
    from hicl_app.engine.data.encoding import Encoder, collate

    enc = Encoder(loaded.processor)
    return collate([enc.encode(r) for r in records], loaded.processor.tokenizer.pad_token_id, "right")


# ------------------------------------------------------------------ replay

def test_replay_mixes_the_requested_share_and_draws_it_again_the_same(cl_tasks, tmp_path):
    tasks = dict(cl_tasks)
    spec = _spec("base", tasks, tmp_path, "replay", 1, prev=tmp_path / "stage-0")
    colors = load_records(tasks["color"].train_path)

    mixed = get_method("replay", {"replay_ratio": 0.25}).train_records(_ctx(spec))
    own = load_records(tasks["bg"].train_path)
    replayed = mixed[len(own):]
    assert mixed[:len(own)] == own and len(replayed) == round(0.25 * len(colors))
    assert all(r in colors for r in replayed) and len({r["id"] for r in replayed}) == len(replayed)
    # a resumed stage plans again from scratch: a new method, a new spec, the same sample
    again = get_method("replay", {"replay_ratio": 0.25}).train_records(
        _ctx(_spec("base", tasks, tmp_path, "replay", 1, prev=tmp_path / "stage-0")))
    assert again == mixed
    other_seed = get_method("replay", {"replay_ratio": 0.25}).train_records(_ctx(
        _spec("base", tasks, tmp_path, "replay", 1, prev=tmp_path / "stage-0", seed=1)))
    assert other_seed[len(own):] != replayed

    per_task = get_method("replay", {"replay_per_task": 10}).train_records(_ctx(spec))
    assert len(per_task) == len(own) + 10
    assert get_method("replay").train_records(_ctx(_spec("base", tasks, tmp_path, "replay", 0))) == \
        load_records(tasks["color"].train_path)  # the first stage has nothing to replay
    with pytest.raises(EngineError, match="no earlier tasks"):
        spec.earlier_tasks = []
        get_method("replay").train_records(_ctx(spec))
    for bad in ({"replay_ratio": 1.5}, {"replay_per_task": -1}):
        with pytest.raises(EngineError):
            get_method("replay", bad)


def test_a_replay_stage_trains_on_the_mixed_records(tiny_base_dir, cl_tasks, tmp_path):
    first = _stage_zero(tiny_base_dir, cl_tasks, tmp_path, "replay")
    spec = _spec(tiny_base_dir, cl_tasks, tmp_path, "replay", 1, prev=first.stage_dir, max_steps=1)
    spec.eval_tasks = []
    logs = []
    result = run_stage(spec, on_event=lambda e: logs.append(e.get("message", "")))
    n_own = len(load_records(cl_tasks["bg"].train_path))
    assert result.train_samples == n_own + round(0.1 * n_own)
    assert any(f"{result.train_samples} samples from bg" in m for m in logs)


# ------------------------------------------------------------------ EWC

def test_ewc_fisher_is_non_negative_and_the_penalty_is_zero_at_the_anchor(tiny_base_dir, cl_tasks, tmp_path):
    from hicl_app.engine.methods.ewc.fisher import Penalty, load_state
    from hicl_app.engine.modeling.models import load_base

    options = {"fisher_samples": 16}
    first = _stage_zero(tiny_base_dir, cl_tasks, tmp_path, "ewc", options, fisher=True)
    fisher, anchor = load_state(first.stage_dir / "ewc" / "state.safetensors")
    assert fisher and fisher.keys() == anchor.keys()
    assert all(bool((f >= 0).all()) for f in fisher.values()) and any(bool((f > 0).any()) for f in fisher.values())

    method = get_method("ewc", {**options, "ewc_lambda": 3.0})
    loaded = load_base(ModelConfig(str(tiny_base_dir)))
    second = _spec(tiny_base_dir, cl_tasks, tmp_path, "ewc", 1, options, prev=first.stage_dir, n_stages=3)
    ctx = _ctx(second, loaded)
    model = method.prepare(loaded.model, ctx)  # stage 2 starts at stage 1's anchor
    assert _value(method.extra_loss(model, {}, 0)) == 0.0
    named = dict(model.named_parameters())
    name = next(n for n in fisher if float(fisher[n].abs().max()) > 0)
    with torch.no_grad():
        named[name].add_(0.1)
    expected = 0.5 * 3.0 * float((fisher[name] * 0.1 ** 2).sum())
    assert _value(method.extra_loss(model, {}, 0)) == pytest.approx(expected, rel=1e-4) and expected > 0
    # online accumulation: F_2 = γ F_1 + F(task 2) ≥ F_1 elementwise at γ = 1
    method.after_train(model, ctx)
    method.save(model, ctx)
    accumulated, _ = load_state(second.stage_dir / "ewc" / "state.safetensors")
    assert all(bool((accumulated[n] >= fisher[n]).all()) for n in fisher)
    assert any(bool((accumulated[n] > fisher[n]).any()) for n in fisher)
    with pytest.raises(EngineError, match="does not fit"):
        Penalty({"x": fisher[name]}, {"x": anchor[name]}, 1.0)(model)
    with pytest.raises(EngineError, match="ewc option"):
        get_method("ewc", {"gamma": 0})


# ------------------------------------------------------------------ LwF

def test_lwf_loss_is_zero_for_the_teacher_itself_and_grows_as_the_student_moves(tiny_base_dir, cl_tasks, tmp_path):
    from peft import PeftModel

    from hicl_app.engine.methods.lwf.distill import teacher_logits
    from hicl_app.engine.modeling.models import load_base

    first = _stage_zero(tiny_base_dir, cl_tasks, tmp_path, "lwf")
    method = get_method("lwf")
    loaded = load_base(ModelConfig(str(tiny_base_dir)))
    second = _spec(tiny_base_dir, cl_tasks, tmp_path, "lwf", 1, prev=first.stage_dir)
    model = method.prepare(loaded.model, _ctx(second, loaded))
    assert not any(p.requires_grad for n, p in model.named_parameters() if "lwf_teacher" in n)
    batch = _batch(loaded, load_records(cl_tasks["bg"].train_path)[:4])
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    model.train()
    model(**inputs)  # the loop's forward: its logits are reused
    assert _value(method.extra_loss(model, batch, 0)) == 0.0
    assert _value(method.extra_loss(model, batch, 0)) == 0.0  # without that forward: computed afresh

    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B.default" in name:
                param.add_(0.05)
    out = model(**inputs)
    cached = method.extra_loss(model, batch, 0)
    assert cached.requires_grad and _value(cached) > 0
    assert _value(method.extra_loss(model, batch, 0)) == pytest.approx(_value(cached), rel=1e-5)
    with torch.no_grad():  # the teacher is the previous stage's model
        teacher = teacher_logits(model, inputs, "lwf_teacher")
        prev = PeftModel.from_pretrained(load_base(ModelConfig(str(tiny_base_dir))).model, first.stage_dir / "adapter")
        assert torch.allclose(teacher, prev(**inputs).logits, atol=1e-5)
    assert not torch.allclose(out.logits.detach(), teacher, atol=1e-5)
    # what is saved is the trained adapter alone, loadable by plain PEFT
    method.after_train(model, _ctx(second, loaded))
    assert "lwf_teacher" not in model.peft_config
    method.save(model, _ctx(second, loaded))
    assert not [p for p in (second.stage_dir / "adapter").iterdir() if p.is_dir()]
    plain = PeftModel.from_pretrained(load_base(ModelConfig(str(tiny_base_dir))).model, second.stage_dir / "adapter")
    with torch.no_grad():
        assert torch.equal(plain.eval()(**inputs).logits, model.eval()(**inputs).logits)
    with pytest.raises(EngineError, match="temperature"):
        get_method("lwf", {"temperature": 0})


def test_the_worker_gives_each_stage_the_tasks_earlier_stages_trained(home, tmp_path):
    from sqlmodel import select
    from tui_support import add_tasks, fake_base, open_catalog

    from hicl_app.catalog.models import Run, Stage
    from hicl_app.catalog.runs import create_run
    from hicl_app.engine.spec import spec_from_json, spec_to_json
    from hicl_app.worker.stage import build_spec

    catalog = open_catalog(home)
    add_tasks(catalog, tmp_path, ["a", "b", "c", "gen"])
    with catalog.session() as s:
        run = create_run(s, name="r", method="replay", base_model=str(fake_base(tmp_path)), task_order=["a", "b", "c"],
                         stages=[["a"], ["b"], ["c"]], config={"general_task": "gen"})
        run_id = run.id
    with catalog.session() as s:
        run = s.get(Run, run_id)
        stages = list(s.exec(select(Stage).where(Stage.run_id == run_id).order_by(Stage.index)))
        specs = [build_spec(catalog, run, stage) for stage in stages]
    assert [[t.name for t in spec.earlier_tasks] for spec in specs] == [[], ["a"], ["a", "b"]]
    assert all(t.train_path.is_file() for t in specs[2].earlier_tasks)
    assert spec_from_json(spec_to_json(specs[2])).earlier_tasks == specs[2].earlier_tasks  # how it reaches the ranks
