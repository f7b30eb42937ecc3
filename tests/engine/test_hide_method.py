"""The `hide` method on the tiny LLaVA: two stages, the saved state, routing, batching and fusion."""

from __future__ import annotations

import json

import pytest
import torch
from engine_fixtures import read_jsonl

from hicl_app.engine.config import EvalConfig, ModelConfig, TrainConfig
from hicl_app.engine.data.encoding import Encoder, collate
from hicl_app.engine.errors import EngineError
from hicl_app.engine.eval.generate import generate_answers
from hicl_app.engine.methods import get_method
from hicl_app.engine.methods.base import StageContext
from hicl_app.engine.methods.hide.model import handle_of
from hicl_app.engine.methods.hide.state import load_state
from hicl_app.engine.modeling.models import load_base
from hicl_app.engine.pipeline import StageSpec, run_stage
from hicl_app.engine.train.loop import train

ORDER = ["color", "bg"]
STEPS = 30

# The first test of a process also builds the session's tiny base; on a shared CPU that alone can
# take minutes.
pytestmark = pytest.mark.timeout(1800)


def _spec(base, tasks, root, index, prev, **options):
    return StageSpec(method="hide", method_options=options, stage_index=index, n_stages=2,
                     train_tasks=[tasks[ORDER[index]]], eval_tasks=[tasks[n] for n in ORDER[:index + 1]],
                     model=ModelConfig(str(base)),
                     train=TrainConfig(max_steps=STEPS, lr=2e-3, checkpoint_every=0, warmup_ratio=0.1),
                     eval=EvalConfig(batch_size=16, max_new_tokens=4), stage_dir=root / f"stage-{index}",
                     prev_stage_dir=prev, checkpoint_dir=root / "ckpt" / f"stage-{index}")


def _batch(processor, records):
    enc = Encoder(processor)
    batch = collate([enc.encode(r, with_answer=False) for r in records], processor.tokenizer.pad_token_id, "left")
    batch.pop("labels")
    return batch


def _mixed_test_records(cl_tasks, n=4):
    return [r for name in ORDER for r in read_jsonl(cl_tasks[name].test_path)[:n]]


@pytest.fixture(scope="module")
def two_stages(tiny_base_dir, cl_tasks, tmp_path_factory):
    """Stage 0 through run_stage; stage 1 by hand so its in-memory evaluation model can be compared
    with the one loaded back from disk."""
    root = tmp_path_factory.mktemp("hide-run")
    first = run_stage(_spec(tiny_base_dir, cl_tasks, root, 0, None))
    spec = _spec(tiny_base_dir, cl_tasks, root, 1, root / "stage-0")
    method = get_method("hide")
    loaded = load_base(spec.model)
    torch.manual_seed(0)
    model = method.prepare(loaded.model, StageContext(spec, loaded.processor, loaded.device, loaded.dtype))
    train(model, loaded.processor, read_jsonl(cl_tasks["bg"].train_path), spec.train, device=loaded.device,
          dtype=loaded.dtype, checkpoint_dir=None, fingerprint={})
    files = method.save(model, StageContext(spec, loaded.processor, loaded.device, loaded.dtype))
    net = method.eval_model(model, StageContext(spec, loaded.processor, loaded.device, loaded.dtype))
    batch = _batch(loaded.processor, _mixed_test_records(cl_tasks))
    with torch.no_grad():
        logits = net(**batch).logits
    weights = handle_of(net).last_weights.clone()
    return {"root": root, "first": first, "files": files, "logits": logits, "weights": weights, "batch": batch,
            "processor": loaded.processor, "net": net}


def _hide_model(base_dir, stage_dir, **options):
    loaded = load_base(ModelConfig(str(base_dir)))
    return loaded, get_method("hide", options).load(loaded.model, stage_dir)


def test_stage_state_holds_every_expert_anchors_and_a_peft_adapter(two_stages, tiny_base_dir):
    from peft import PeftModel
    from transformers import AutoModelForImageTextToText

    root = two_stages["root"]
    assert set(two_stages["first"].files) >= {"adapter/adapter_model.safetensors", "hide/experts.safetensors",
                                              "hide/anchors.safetensors", "hide/manifest.json"}
    assert set(two_stages["files"]) >= {"adapter/adapter_config.json", "hide/manifest.json"}
    state = load_state(root / "stage-1")
    assert state.tasks == ORDER and state.expanded_layers == [3] and state.n_layers == 4
    assert state.anchors_txt.shape[0] == 2 and state.anchors_img.shape[0] == 2
    assert set(state.probes) == set(ORDER) and all(len(v) == 16 for v in state.probes.values())
    # stage 0's expert is carried over unchanged; stage 1's own expert is the PEFT adapter beside it
    first = load_state(root / "stage-0").experts[0]
    path = next(iter(first.factors))
    assert torch.equal(state.experts[0].factors[path][0], first.factors[path][0])
    assert not torch.equal(state.experts[1].factors[path][0], first.factors[path][0])  # a fresh expert per task
    PeftModel.from_pretrained(AutoModelForImageTextToText.from_pretrained(tiny_base_dir), root / "stage-1" / "adapter")
    manifest = json.loads((root / "stage-1" / "hide" / "manifest.json").read_text())
    assert manifest["tasks"] == ORDER and manifest["encoder"]["kind"] == "model"


def test_a_stage_saved_and_loaded_back_gives_the_same_logits(two_stages, tiny_base_dir):
    loaded, net = _hide_model(tiny_base_dir, two_stages["root"] / "stage-1")
    with torch.no_grad():
        logits = net(**two_stages["batch"]).logits
    assert torch.allclose(logits, two_stages["logits"], atol=1e-5)
    assert torch.allclose(handle_of(net).last_weights, two_stages["weights"], atol=1e-6)
    # and it is not the base model's output
    base = load_base(ModelConfig(str(tiny_base_dir))).model
    with torch.no_grad():
        assert not torch.allclose(base(**two_stages["batch"]).logits, logits, atol=1e-3)


def test_with_one_task_the_hide_model_is_the_base_plus_that_expert(two_stages, tiny_base_dir):
    """Routing (w = 1), the merged fused layers and the reused image features add up to plain LoRA."""
    from hicl_app.engine.modeling.adapters import load_lora

    _, net = _hide_model(tiny_base_dir, two_stages["root"] / "stage-0")
    peft_model = load_lora(load_base(ModelConfig(str(tiny_base_dir))).model, two_stages["root"] / "stage-0" / "adapter")
    with torch.no_grad():
        assert torch.allclose(net(**two_stages["batch"]).logits, peft_model(**two_stages["batch"]).logits, atol=1e-4)


def test_routing_sends_each_test_sample_to_its_own_task(two_stages, cl_tasks):
    net, processor = two_stages["net"], two_stages["processor"]
    for t, name in enumerate(ORDER):
        records = read_jsonl(cl_tasks[name].test_path)
        with torch.no_grad():
            net(**_batch(processor, records))
        picked = handle_of(net).last_weights.argmax(1)
        assert (picked == t).float().mean() >= 0.9, (name, picked.tolist())


def test_batched_and_one_by_one_predictions_agree(two_stages, cl_tasks):
    net, processor = two_stages["net"], two_stages["processor"]
    records = _mixed_test_records(cl_tasks, n=5)
    kwargs = dict(device=torch.device("cpu"), dtype=torch.float32)
    batched = generate_answers(net, processor, records, EvalConfig(batch_size=10, max_new_tokens=4), **kwargs)
    single = generate_answers(net, processor, records, EvalConfig(batch_size=1, max_new_tokens=4), **kwargs)
    assert batched == single
    # the per-sample routing weights, too: row i of a batch is what sample i alone gets
    with torch.no_grad():
        net(**_batch(processor, records))
        together = handle_of(net).last_weights.clone()
        for i, r in enumerate(records):
            net(**_batch(processor, [r]))
            assert torch.allclose(handle_of(net).last_weights[0], together[i], atol=1e-5)
    assert len({tuple(w.round(decimals=3).tolist()) for w in together}) > 1  # samples really are routed apart


def test_generate_routes_each_sample_as_a_forward_does(two_stages, cl_tasks):
    """Generation (whose forwards transformers >= 5.24 gives pre-encoded images and a `cache`, not
    pixel_values) must route on the image and instruction, once, as a plain forward of the prompt."""
    net, processor = two_stages["net"], two_stages["processor"]
    kwargs = dict(device=torch.device("cpu"), dtype=torch.float32)
    for t, name in enumerate(ORDER):
        record = read_jsonl(cl_tasks[name].test_path)[0]
        with torch.no_grad():
            net(**_batch(processor, [record]))
        expected = handle_of(net).last_weights.clone()
        assert expected.argmax(1).tolist() == [t]
        handle_of(net).state.weights = None
        generate_answers(net, processor, [record], EvalConfig(batch_size=1, max_new_tokens=4), **kwargs)
        assert torch.allclose(handle_of(net).last_weights, expected, atol=1e-5), name


@pytest.mark.parametrize("merge", [True, False])
def test_top1_routing_runs_each_sample_on_its_highest_weight_expert_alone(two_stages, tiny_base_dir, cl_tasks, merge):
    stage = two_stages["root"] / "stage-1"
    _, top1 = _hide_model(tiny_base_dir, stage, expand="0,1,2,3", routing="top1", merge_top1=merge)
    _, soft = _hide_model(tiny_base_dir, stage, expand="0,1,2,3")
    processor, state = two_stages["processor"], handle_of(soft).state
    linear = top1.get_submodule(handle_of(top1).expanded_paths[0])
    original = linear.weight.data_ptr()
    mixed = _mixed_test_records(cl_tasks)
    # both tasks (grouped paths), one task's (merged when merge_top1), both again (weights restored)
    for records in (mixed, mixed[:4], mixed):
        with torch.no_grad():
            got = top1(**_batch(processor, records)).logits[:, -1]
            soft(**_batch(processor, records))
            picked = state.weights.argmax(1)
            assert handle_of(top1).last_weights.tolist() == torch.nn.functional.one_hot(picked, 2).tolist()
            same = bool((picked == picked[0]).all())
            assert records is not mixed or not same  # the mixed batch does use both experts
            assert handle_of(top1).state.single == (int(picked[0]) if same else None)
            merged = handle_of(top1).state.merged
            assert merged == (int(picked[0]) if same and merge else None)
            assert (linear.weight.data_ptr() == original) == (merged is None)  # the very tensor back, no drift
            for i, record in enumerate(records):  # the soft model with all weight on that expert
                state.fixed = torch.nn.functional.one_hot(picked[i], 2).float()
                assert torch.allclose(got[i], soft(**_batch(processor, [record])).logits[0, -1], atol=1e-4)
                state.fixed = None
    with pytest.raises(EngineError, match="routing='top2' must be one of soft, top1"):
        get_method("hide", {"routing": "top2"})
    with pytest.raises(EngineError, match=r"merge_top1='sometimes' must be true or false"):
        get_method("hide", {"merge_top1": "sometimes"})


def test_top1_generation_of_a_mixed_batch_runs_each_expert_merged_and_answers_as_one_by_one(two_stages, tiny_base_dir, cl_tasks):
    stage = two_stages["root"] / "stage-1"
    processor, kwargs = two_stages["processor"], dict(device=torch.device("cpu"), dtype=torch.float32)
    mixed = _mixed_test_records(cl_tasks)
    _, merged = _hide_model(tiny_base_dir, stage, expand="0,1,2,3", routing="top1")
    _, paths = _hide_model(tiny_base_dir, stage, expand="0,1,2,3", routing="top1", merge_top1=False)
    calls = []
    state = handle_of(merged).state
    original_use = state.merger.use
    state.merger.use = lambda st, e: (calls.append(e), original_use(st, e))[1]
    cfg = EvalConfig(batch_size=len(mixed), max_new_tokens=6)
    got = generate_answers(merged, processor, mixed, cfg, **kwargs)
    assert set(calls) >= {0, 1}  # both experts were merged in turn for the one mixed batch
    assert got == generate_answers(paths, processor, mixed, cfg, **kwargs)  # the low-rank paths, in one call
    assert got == [generate_answers(merged, processor, [r], EvalConfig(batch_size=1, max_new_tokens=6), **kwargs)[0]
                   for r in mixed]


@pytest.mark.parametrize("fusion", ["sum", "mean-delta", "ties"])
def test_merged_and_per_forward_fused_layers_give_the_same_outputs(two_stages, tiny_base_dir, fusion):
    batch = two_stages["batch"]
    _, merged = _hide_model(tiny_base_dir, two_stages["root"] / "stage-1", fusion=fusion)
    _, rebuilt = _hide_model(tiny_base_dir, two_stages["root"] / "stage-1", fusion=fusion, merge_fused=False)
    assert handle_of(merged).fused_paths and handle_of(merged).expanded_paths
    with torch.no_grad():
        assert torch.allclose(merged(**batch).logits, rebuilt(**batch).logits, atol=1e-4)


def test_expand_list_and_the_expanded_split(two_stages, tiny_base_dir):
    _, net = _hide_model(tiny_base_dir, two_stages["root"] / "stage-1")
    handle = handle_of(net)
    assert all(".layers.3." in p for p in handle.expanded_paths)
    assert len(handle.expanded_paths) == 7 and len(handle.fused_paths) == 21  # q,k,v,o,gate,up,down x 4 layers


def test_expand_auto_follows_the_cka_threshold(two_stages, tiny_base_dir):
    # stage 1 was trained with expand=top, so loading with auto measures CKA on the state's probes
    _, everything = _hide_model(tiny_base_dir, two_stages["root"] / "stage-1", expand="auto", cka_threshold=1.0)
    assert len(handle_of(everything).expanded_paths) == 28 and not handle_of(everything).fused_paths
    _, nothing = _hide_model(tiny_base_dir, two_stages["root"] / "stage-1", expand="auto", cka_threshold=1e-6)
    assert not handle_of(nothing).expanded_paths and len(handle_of(nothing).fused_paths) == 28
    _, listed = _hide_model(tiny_base_dir, two_stages["root"] / "stage-1", expand="0,-1")
    assert {p.split(".layers.")[1].split(".")[0] for p in handle_of(listed).expanded_paths} == {"0", "3"}


def test_a_later_stage_without_the_previous_state_fails_before_training(tiny_base_dir, cl_tasks, tmp_path):
    spec = _spec(tiny_base_dir, cl_tasks, tmp_path, 1, tmp_path / "missing")
    loaded = load_base(spec.model)
    with pytest.raises(EngineError, match="needs the HiDe state of the previous stage"):
        get_method("hide").prepare(loaded.model, StageContext(spec, loaded.processor, loaded.device, loaded.dtype))


def test_benchmark_helpers_count_parameters_and_time_both_models(two_stages, tiny_base_dir, cl_tasks):
    from hicl_app.bench.hide_model import inference_ratio, param_report

    stage = two_stages["root"] / "stage-1"
    report = param_report(stage)
    per_layer = report["one_adapter"] // 4  # 4 decoder layers with the same 7 linears each
    assert report["tasks"] == 2 and report["expanded_layers"] == [3]
    assert report["expanded_experts"] == 2 * per_layer  # t top-layer experts...
    assert report["kept"] == 3 * per_layer + 2 * per_layer  # ...plus the fused layers as one adapter
    assert report["stored_factors"] == 2 * report["one_adapter"]
    records = _mixed_test_records(cl_tasks, n=2)
    timing = inference_ratio(tiny_base_dir, stage, records, eval_cfg=EvalConfig(batch_size=4, max_new_tokens=3),
                             repeats=1)
    assert timing["hide_s"] > 0 and timing["merged_lora_s"] > 0 and timing["n"] == 4
    assert timing["ratio"] == pytest.approx(timing["hide_s"] / timing["merged_lora_s"])


def test_expert_rank_keeps_each_expert_truncated_and_the_adapter_at_the_trained_rank(two_stages, tiny_base_dir,
                                                                                     cl_tasks, tmp_path):
    import shutil

    from hicl_app.bench.hide_model import param_report
    from hicl_app.engine.methods.hide.state import save_state
    from hicl_app.engine.modeling.lora_factors import truncate

    # the same first stage with expert_rank=2: the trained expert is the fixture's, truncated
    run_stage(_spec(tiny_base_dir, cl_tasks, tmp_path, 0, None, expert_rank=2))
    got = load_state(tmp_path / "stage-0").experts[0]
    want = truncate(load_state(two_stages["root"] / "stage-0").experts[0], 2)
    energy = want.energy_kept
    assert got.energy_kept == pytest.approx(energy) and 0 < energy < 1
    for path, (a, b) in want.factors.items():
        assert got.factors[path][0].shape[0] == 2
        assert torch.allclose(got.factors[path][1] @ got.factors[path][0], b @ a, atol=1e-6)
    full = param_report(two_stages["root"] / "stage-0")
    small = param_report(tmp_path / "stage-0")
    assert small["one_adapter"] == full["one_adapter"]  # the PEFT adapter keeps the trained rank 8
    assert small["kept"] * 4 == full["kept"]

    # a two-expert state at rank 2 serves top-1 routing merged as through the low-rank paths
    state = load_state(two_stages["root"] / "stage-1")
    state.experts = [truncate(e, 2) for e in state.experts]
    stage = tmp_path / "small-1"
    shutil.copytree(two_stages["root"] / "stage-1" / "adapter", stage / "adapter")
    save_state(state, stage)
    assert param_report(stage)["stored_factors"] * 4 == param_report(two_stages["root"] / "stage-1")["stored_factors"]
    processor = two_stages["processor"]
    records = _mixed_test_records(cl_tasks)[:4]  # one task's: the merged path
    outs = []
    for merge in (True, False):
        _, net = _hide_model(tiny_base_dir, stage, expand="0,1,2,3", routing="top1", merge_top1=merge)
        with torch.no_grad():
            outs.append(net(**_batch(processor, records)).logits[:, -1])
        assert handle_of(net).state.merged == (handle_of(net).state.single if merge else None)
    assert torch.allclose(outs[0], outs[1], atol=1e-4)
