"""O-LoRA, MoELoRA and adapter merging: each method's defining property, and a short 2-stage run
of each whose exported model loads as its export says and answers like the engine's model.

The contract test (`test_method_contract.py`) runs each of them through the shared checks; here
the runs use non-default options (O-LoRA's L2 term on, MoELoRA's top-2 routing, DARE-TIES merging,
which draws random masks) on small test sets.
"""

from __future__ import annotations

import pytest
import torch
from engine_fixtures import add_tasks_by_cli, read_jsonl, write_jsonl

from hicl_app.engine.config import EvalConfig, ModelConfig, TrainConfig
from hicl_app.engine.methods import get_method
from hicl_app.engine.pipeline import StageSpec, TaskData, run_stage

ORDER = ["color", "bg"]
OPTIONS = {"o-lora": {"lambda_orth": 0.5, "lambda_l2": 0.01}, "moelora": {"experts": 4, "top_k": 2},
           "merge": {"merge_mode": "dare_ties", "density": 0.5}}


# ---------------------------------------------------------------------------- O-LoRA's penalty

def test_olora_penalty_is_its_formula_and_zero_for_orthogonal_factors():
    from hicl_app.engine.methods.o_lora.penalty import Factors, penalty

    g = torch.Generator().manual_seed(0)
    a_t, b_t = torch.randn(2, 6, generator=g), torch.randn(5, 2, generator=g)
    a_1, a_2 = torch.randn(2, 6, generator=g), torch.randn(3, 6, generator=g)
    other = Factors(torch.randn(2, 4, generator=g), torch.randn(3, 2, generator=g), [torch.randn(2, 4, generator=g)])
    modules = [Factors(a_t, b_t, [a_1, a_2]), other]
    orth = sum(abs(float(a_s[j] @ m.new_a[k])) for m in modules for a_s in m.old_a
               for j in range(a_s.shape[0]) for k in range(m.new_a.shape[0]))
    norms = sum(float(torch.sqrt((p ** 2).sum())) for m in modules for p in (m.new_a, m.new_b))
    assert float(penalty(modules, 0.5, 0.1)) == pytest.approx(0.5 * orth + 0.1 * norms, rel=1e-5)
    assert float(penalty(modules, 0.5, 0.0)) == pytest.approx(0.5 * orth, rel=1e-5)

    eye = torch.eye(6)
    orthogonal = [Factors(eye[:2] * 3.0, b_t, [eye[2:4], -eye[4:6] * 7.0])]  # disjoint input directions
    assert float(penalty(orthogonal, 0.5, 0.0)) == 0.0
    assert penalty([Factors(a_t, b_t, [])], 0.5, 0.0) is None  # the first task: nothing to be orthogonal to

    a_t.requires_grad_(True)
    penalty([Factors(a_t, b_t, [a_1])], 1.0, 0.0).backward()
    assert a_t.grad is not None and a_t.grad.abs().sum() > 0


# ---------------------------------------------------------------------------- MoELoRA's router

def test_moelora_gates_sum_to_one_and_top_k_keeps_k_experts():
    from hicl_app.engine.methods.moelora.layer import MoELoraLinear

    torch.manual_seed(0)
    for top_k in (0, 2):
        layer = MoELoraLinear(torch.nn.Linear(8, 5), experts=4, rank=2, top_k=top_k, scale=1.0, dropout=0.0)
        gates = layer.gates(torch.randn(3, 7, 8))
        assert gates.shape == (3, 7, 4) and torch.allclose(gates.sum(-1), torch.ones(3, 7), atol=1e-6)
        assert ((gates > 0).sum(-1) == (top_k or 4)).all()
    torch.nn.init.normal_(layer.lora_B)
    x = torch.randn(2, 5, 8)
    expected = layer.base_layer(x) + sum(layer.gates(x)[..., e:e + 1] * (x @ layer.lora_A[2 * e:2 * e + 2].T)
                                         @ layer.lora_B[:, 2 * e:2 * e + 2].T for e in range(4))
    assert torch.allclose(layer(x), expected, atol=1e-5)


# ---------------------------------------------------------------------------- 2-stage runs

@pytest.fixture(scope="module")
def small_tasks(cl_tasks, tmp_path_factory):
    root = tmp_path_factory.mktemp("small-tasks")
    return {n: TaskData(n, cl_tasks[n].train_path, write_jsonl(root / f"{n}.jsonl", read_jsonl(cl_tasks[n].test_path)[:6]),
                        "exact") for n in ORDER}


def _run(method: str, base, tasks, root):
    stages, prev = [], None
    for index, name in enumerate(ORDER):
        spec = StageSpec(method=method, method_options=OPTIONS[method], stage_index=index, n_stages=2,
                         train_tasks=[tasks[name]], eval_tasks=[tasks[n] for n in ORDER[:index + 1]],
                         model=ModelConfig(str(base)),
                         train=TrainConfig(max_steps=3, lr=3e-3, rank=4, alpha=8, checkpoint_every=0, seed=3),
                         eval=EvalConfig(batch_size=6, max_new_tokens=3), stage_dir=root / f"stage-{index}",
                         prev_stage_dir=prev, checkpoint_dir=root / "ckpt" / f"stage-{index}")
        stages.append((spec, run_stage(spec)))
        prev = spec.stage_dir
    return stages


@pytest.fixture(scope="module", params=list(OPTIONS))
def two_stages(request, tiny_base_dir, small_tasks, tmp_path_factory):
    name = request.param
    return name, _run(name, tiny_base_dir, small_tasks, tmp_path_factory.mktemp(name))


def _base(tiny_base_dir):
    from hicl_app.engine.modeling.models import load_base

    return load_base(ModelConfig(str(tiny_base_dir)))


def _inputs(loaded, records):
    from hicl_app.engine.data.encoding import Encoder, collate

    enc = Encoder(loaded.processor, 10**9)
    batch = collate([enc.encode(r, with_answer=False) for r in records], loaded.processor.tokenizer.pad_token_id, "left")
    batch.pop("labels")
    return batch


@torch.no_grad()
def _logits(model, batch):
    return model(**batch, use_cache=False).logits


def test_each_run_fills_the_matrix_and_its_export_loads_as_documented(two_stages, tiny_base_dir, small_tasks):
    from peft import PeftModel

    name, stages = two_stages
    (first, r0), (last, r1) = stages
    assert set(r0.scores) == {"color"} and set(r1.scores) == set(ORDER)
    assert all(r1.scores[t]["n"] == 6 for t in ORDER)
    method = get_method(name, OPTIONS[name])
    exported = method.export(last.stage_dir)
    batch = _inputs(_base(tiny_base_dir), read_jsonl(small_tasks["bg"].test_path)[:4])
    engine = _logits(method.load(_base(tiny_base_dir).model, last.stage_dir), batch)
    plain = _logits(_base(tiny_base_dir).model, batch)
    assert not torch.allclose(engine, plain, atol=1e-4)  # the stages changed the model
    if exported.peft:
        assert exported.loader.startswith("PeftModel.from_pretrained(base, 'adapter')")
        published = PeftModel.from_pretrained(_base(tiny_base_dir).model, last.stage_dir / "adapter")
        assert torch.equal(_logits(published, batch), engine)
    else:
        assert "get_method('moelora').load(base, stage_dir)" in exported.loader


def test_olora_exported_sum_equals_every_task_lora_applied_at_once(two_stages, tiny_base_dir, small_tasks):
    from peft import PeftModel

    name, stages = two_stages
    if name != "o-lora":
        pytest.skip("O-LoRA's sum")
    last = stages[-1][0]
    loaded = _base(tiny_base_dir)
    batch = _inputs(loaded, read_jsonl(small_tasks["color"].test_path)[:4])
    model = PeftModel.from_pretrained(loaded.model, last.stage_dir / "tasks" / "0", adapter_name="t0")
    model.load_adapter(str(last.stage_dir / "tasks" / "1"), adapter_name="t1")
    model.base_model.set_adapter(["t0", "t1"])  # what the engine trains: both LoRAs active, summed
    summed = _logits(model, batch)
    exported = _logits(PeftModel.from_pretrained(_base(tiny_base_dir).model, last.stage_dir / "adapter"), batch)
    assert torch.allclose(summed, exported, atol=1e-5), (summed - exported).abs().max()
    from safetensors.torch import load_file

    ranks = {v.shape[0] for k, v in load_file(last.stage_dir / "adapter" / "adapter_model.safetensors").items()
             if "lora_A" in k}
    assert ranks == {8}  # two tasks of rank 4, stacked


def test_merge_is_peft_add_weighted_adapter_and_linear_is_the_mean_delta(two_stages, tiny_base_dir):
    from peft import PeftModel, get_peft_model_state_dict
    from safetensors.torch import load_file

    from hicl_app.engine.methods.merge.method import merge_seed

    name, stages = two_stages
    if name != "merge":
        pytest.skip("merging")
    last = stages[-1][0]
    tasks = last.stage_dir / "tasks"
    model = PeftModel.from_pretrained(_base(tiny_base_dir).model, tasks / "0", adapter_name="a")
    model.load_adapter(str(tasks / "1"), adapter_name="b")
    torch.manual_seed(merge_seed(3, 1))
    model.add_weighted_adapter(["a", "b"], [1.0, 1.0], "m", combination_type="dare_ties_svd", density=0.5, svd_rank=8)
    expected = get_peft_model_state_dict(model, adapter_name="m")
    saved = load_file(last.stage_dir / "adapter" / "adapter_model.safetensors")
    assert set(saved) == set(expected) and all(torch.equal(saved[k], expected[k].cpu()) for k in saved)
    # the same two LoRAs merged by task arithmetic: exactly the mean of the task deltas
    method = get_method("merge", {"merge_mode": "linear"})
    how = method.merge(model, ["a", "b"], seed=0)
    assert how["combination_type"] == "cat" and how["weights"] == [0.5, 0.5]
    layer = next(m for m in model.modules() if hasattr(m, "lora_A") and "merged" in m.lora_A)
    mean = 0.5 * (layer.get_delta_weight("a") + layer.get_delta_weight("b"))
    assert torch.allclose(layer.get_delta_weight("merged"), mean, atol=1e-6)


def test_moelora_batched_answers_equal_one_by_one(two_stages, tiny_base_dir, small_tasks):
    from hicl_app.engine.eval.generate import generate_answers

    name, stages = two_stages
    if name != "moelora":
        pytest.skip("MoELoRA's routing")
    last = stages[-1][0]
    loaded = _base(tiny_base_dir)
    model = get_method(name, OPTIONS[name]).load(loaded.model, last.stage_dir)
    records = read_jsonl(small_tasks["color"].test_path)[:3] + read_jsonl(small_tasks["bg"].test_path)[:3]
    for i, record in enumerate(records):  # prompts of different lengths: the batch is padded
        record["question"] += " Please answer." * i
    batch = _inputs(loaded, records)
    assert len(set(batch["attention_mask"].sum(1).tolist())) == len(records)
    together = _logits(model, batch)
    for i, record in enumerate(records):
        alone = _logits(model, _inputs(loaded, [record]))
        n = alone.shape[1]
        assert torch.allclose(together[i, -n:], alone[0], atol=1e-5), i  # left padding: the last n positions
    kw = {"device": loaded.device, "dtype": loaded.dtype}
    batched = generate_answers(model, loaded.processor, records, EvalConfig(batch_size=6, max_new_tokens=3), **kw)
    single = generate_answers(model, loaded.processor, records, EvalConfig(batch_size=1, max_new_tokens=3), **kw)
    assert batched == single and any(batched)


# ---------------------------------------------------------------------------- the CLI

def test_run_methods_prints_the_equations_and_bad_options_exit_3(cli, tmp_path, cl_tasks, tiny_base_dir):
    add_tasks_by_cli(cli, tmp_path, cl_tasks, names=("color",))
    shown = cli("run", "methods", "o-lora")
    assert shown.exit_code == 0 and "A_s A_tᵀ" in shown.stdout and "--lambda-orth" in shown.stdout
    assert "Wang et al." in shown.stdout
    for method, option, words in [("o-lora", "lambda_orth=-1", "lambda_orth must be a number >= 0"),
                                  ("moelora", "top_k=9", "top_k must be between 0"),
                                  ("merge", "merge_mode=sum", "merge_mode='sum' must be one of linear")]:
        res = cli("run", "start", "--method", method, "--tasks", "color", "--base", tiny_base_dir, "-o", option)
        assert res.exit_code == 3, res.output
        assert words in res.stderr and len(res.stderr.strip().splitlines()) <= 2
