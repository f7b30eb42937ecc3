"""run_stage end to end: a three-stage Seq-LoRA run, Joint, stopping and resuming."""

from __future__ import annotations

import json

import pytest
import torch

from hicl_app.core.fsio import sha256_file
from hicl_app.engine.config import EvalConfig, ModelConfig, TrainConfig
from hicl_app.engine.errors import EngineError, Stopped
from hicl_app.engine.methods import get_method, method_names
from hicl_app.engine.pipeline import StageSpec, run_eval, run_stage

ORDER = ["color", "bg", "tone"]


def _spec(base, tasks, root, method, index, train_names, seen, prev=None, **train):
    cfg = {"max_steps": 60, "lr": 1e-3, "checkpoint_every": 20, **train}
    return StageSpec(method=method, method_options={}, stage_index=index, n_stages=len(ORDER),
                     train_tasks=[tasks[n] for n in train_names], eval_tasks=[tasks[n] for n in seen],
                     model=ModelConfig(str(base)), train=TrainConfig(**cfg),
                     eval=EvalConfig(batch_size=16, max_new_tokens=4), stage_dir=root / f"stage-{index}",
                     prev_stage_dir=prev, checkpoint_dir=root / "ckpt" / f"stage-{index}")


def test_seq_lora_three_stages(tiny_base_dir, cl_tasks, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForImageTextToText

    plan = get_method("seq-lora").plan(ORDER)
    assert plan == [["color"], ["bg"], ["tone"]]
    results, prev, events = [], None, []
    for k, stage_tasks in enumerate(plan):
        spec = _spec(tiny_base_dir, cl_tasks, tmp_path, "seq-lora", k, stage_tasks, ORDER[:k + 1], prev)
        result = run_stage(spec, on_event=events.append)
        results.append(result)
        prev = spec.stage_dir
        assert set(result.scores) == set(ORDER[:k + 1])
        for s in result.scores.values():
            assert 0.0 <= s["score"] <= 100.0 and s["n"] == 32
            assert len(open(s["predictions_path"]).readlines()) == 32
        assert result.steps == 60 and result.train_samples == 128
        assert result.adapter_dir == spec.stage_dir / "adapter"
        for rel, digest in result.files.items():
            assert sha256_file(spec.stage_dir / rel) == digest
        assert {"adapter/adapter_config.json", "adapter/adapter_model.safetensors", "stage.json"} <= set(result.files)
        assert {"torch", "transformers", "peft", "device", "dtype", "seed"} <= set(result.env)
    matrix = [[r.scores.get(n, {}).get("score") for n in ORDER] for r in results]
    print("seq-lora accuracy matrix (rows: after stage; cols: color, bg, tone):", matrix)
    assert matrix[0][0] >= 80 and matrix[1][1] >= 80 and matrix[2][2] >= 70  # each task is learnt...
    assert matrix[1][0] < matrix[0][0]                  # ...and the conflicting next one makes it forget

    kinds = {e["type"] for e in events}
    assert {"progress", "loss", "checkpoint", "eval", "log"} <= kinds
    progress = [e for e in events if e["type"] == "progress"]
    assert set(progress[-1]) == {"type", "step", "total", "loss", "lr", "samples_per_s", "eta_s"}

    # the last adapter reloads with PEFT alone, and answers as the stage's scores say
    base = AutoModelForImageTextToText.from_pretrained(tiny_base_dir)
    PeftModel.from_pretrained(base, results[-1].adapter_dir)
    again = run_eval(ModelConfig(str(tiny_base_dir)), [cl_tasks["tone"]], EvalConfig(batch_size=16, max_new_tokens=4),
                     tmp_path / "re-eval", method="seq-lora", stage_dir=tmp_path / "stage-2")
    assert again["tone"]["score"] == results[-1].scores["tone"]["score"]
    manifest = json.loads((tmp_path / "stage-2" / "stage.json").read_text())
    assert manifest["train_tasks"] == ["tone"] and manifest["steps"] == 60


def test_joint_single_stage_and_zero_shot(tiny_base_dir, cl_tasks, tmp_path):
    plan = get_method("joint").plan(ORDER[:2])
    assert plan == [["color", "bg"]]
    spec = _spec(tiny_base_dir, cl_tasks, tmp_path, "joint", 0, plan[0], ORDER[:2], max_steps=150, lr=2e-3)
    result = run_stage(spec)
    assert result.train_samples == 256
    print("joint scores:", {n: s["score"] for n, s in result.scores.items()})
    assert all(s["score"] >= 50 for s in result.scores.values())
    zero = run_eval(ModelConfig(str(tiny_base_dir)), [cl_tasks["color"]], EvalConfig(max_new_tokens=4), tmp_path / "zs")
    assert zero["color"]["n"] == 32


def test_stop_then_rerun_resumes(tiny_base_dir, cl_tasks, tmp_path):
    spec = _spec(tiny_base_dir, cl_tasks, tmp_path, "seq-lora", 0, ["color"], ["color"], max_steps=10,
                 checkpoint_every=0)
    steps = []

    def on_event(e):
        if e["type"] == "loss":
            steps.append(e["step"])

    with pytest.raises(Stopped) as info:
        run_stage(spec, on_event=on_event, should_stop=lambda: len(steps) >= 4)
    assert info.value.step == 4 and info.value.checkpoint is not None
    assert not (spec.stage_dir / "adapter").exists()
    steps.clear()
    result = run_stage(spec, on_event=on_event)
    assert steps == list(range(5, 11)) and result.steps == 10

    straight = _spec(tiny_base_dir, cl_tasks, tmp_path / "straight", "seq-lora", 0, ["color"], ["color"],
                     max_steps=10, checkpoint_every=0)
    run_stage(straight)
    from safetensors.torch import load_file

    a = load_file(spec.stage_dir / "adapter" / "adapter_model.safetensors")
    b = load_file(straight.stage_dir / "adapter" / "adapter_model.safetensors")
    assert a.keys() == b.keys() and all(torch.allclose(a[k], b[k], atol=1e-6, rtol=0) for k in a)


def test_specs_and_method_registry_import_without_torch():
    import subprocess
    import sys

    code = ("import sys, hicl_app.engine.methods as m, hicl_app.engine.spec, hicl_app.engine.config; "
            "m.get_method('joint').plan(['a', 'b']); print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_bad_method_or_options(tiny_base_dir, cl_tasks, tmp_path):
    assert {"seq-lora", "joint"} <= set(method_names())
    with pytest.raises(EngineError, match="unknown method"):
        get_method("nope")
    with pytest.raises(EngineError, match="unknown option"):
        get_method("seq-lora", {"rank": 4})
    spec = _spec(tiny_base_dir, cl_tasks, tmp_path, "seq-lora", 1, ["bg"], ["bg"], prev=None)
    with pytest.raises(EngineError, match="previous stage"):
        run_stage(spec)
