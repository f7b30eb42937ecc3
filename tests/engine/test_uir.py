"""Unsupervised Inquiry Regularization: the inquiries, the loss, and where its gradients go."""

from __future__ import annotations

import pytest
import torch

from hicl_app.core.taskfile import load_records
from hicl_app.engine.config import ModelConfig, TrainConfig
from hicl_app.engine.methods.llava_c.uir import (
    GENERAL_INQUIRIES,
    MAX_TASK_INQUIRIES,
    encode_inquiries,
    feature_distance,
    pick,
    task_instructions,
    uir_loss,
)
from hicl_app.engine.modeling.models import load_base


@pytest.fixture()
def lora_model(tiny_base_dir):
    from hicl_app.engine.modeling.adapters import new_lora

    loaded = load_base(ModelConfig(str(tiny_base_dir)))
    torch.manual_seed(0)
    model = new_lora(loaded.model, TrainConfig(rank=4, dropout=0.0))
    return loaded, model


def _inquiries(loaded, cl_tasks):
    records = load_records(cl_tasks["color"].train_path)
    return encode_inquiries(loaded.processor, task_instructions(records) + list(GENERAL_INQUIRIES), 64)


def _scale_lora_b(model, value: float, seed: int = 0) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.copy_(value * torch.randn(p.shape, generator=g))


def test_instructions_without_answers_and_never_the_held_out_prompts(cl_tasks):
    from hicl_app.builtin.synth.tasks import GENERAL_PROMPTS

    records = load_records(cl_tasks["color"].train_path)
    assert task_instructions(records) == ["What color is the shape?"]
    many = [{"question": f"q{i % 300}", "answer": "x"} for i in range(900)] + [{"question": " ", "answer": "y"}]
    assert task_instructions(many) == [f"q{i}" for i in range(MAX_TASK_INQUIRIES)]
    held_out = {p.casefold().strip() for p in GENERAL_PROMPTS}
    assert not held_out & {q.casefold().strip() for q in GENERAL_INQUIRIES}


def test_inquiries_are_text_only_prompts(tiny_base_dir, cl_tasks):
    loaded = load_base(ModelConfig(str(tiny_base_dir)))
    ids = _inquiries(loaded, cl_tasks)
    tok = loaded.processor.tokenizer
    assert all(loaded.processor.image_token_id not in seq for seq in ids)
    text = tok.decode(ids[0])
    assert "What color is the shape?" in text and text.rstrip().endswith("ASSISTANT:")
    assert max(len(s) for s in encode_inquiries(loaded.processor, list(GENERAL_INQUIRIES), 6)) <= 6


def test_pick_mixes_both_pools_and_depends_on_seed_and_step_only():
    assert pick(1, 24, 4, 0, 7) == pick(1, 24, 4, 0, 7)
    tasks, general = pick(10, 24, 4, 0, 7)
    assert len(tasks) == 2 and len(general) == 2 and len(set(general)) == 2
    assert len({tuple(map(tuple, pick(10, 24, 4, 0, step))) for step in range(10)}) > 1
    assert len({tuple(map(tuple, pick(10, 24, 4, seed, 3))) for seed in range(10)}) > 1
    assert pick(1, 24, 5, 0, 0)[0] == [0] and len(pick(1, 24, 5, 0, 0)[1]) == 4  # one instruction: the rest general
    assert pick(0, 24, 4, 0, 0)[0] == [] and len(pick(0, 24, 4, 0, 0)[1]) == 4
    assert sorted(pick(10, 0, 4, 0, 0)[0]) == sorted(set(pick(10, 0, 4, 0, 0)[0])) and len(pick(10, 0, 4, 0, 0)[0]) == 4
    assert len(pick(10, 1, 4, 0, 0)[0]) == 3  # a short general pool is topped up from the tasks
    small = pick(2, 1, 9, 0, 0)  # fewer inquiries than asked: all of them, once
    assert sorted(small[0]) == [0, 1] and small[1] == [0]


@pytest.mark.parametrize("distance", ["mse", "cos"])
def test_loss_is_zero_at_init_and_with_the_adapter_off_and_grows_with_drift(lora_model, cl_tasks, distance):
    loaded, model = lora_model
    inquiries = _inquiries(loaded, cl_tasks)[:4]
    pad = loaded.processor.tokenizer.pad_token_id
    model.train()
    assert float(uir_loss(model, inquiries, pad_id=pad, distance=distance).detach()) == 0.0  # B = 0 at init
    losses = []
    for scale in (0.01, 0.05, 0.2):
        _scale_lora_b(model, scale)
        losses.append(float(uir_loss(model, inquiries, pad_id=pad, distance=distance).detach()))
        with model.disable_adapter():
            assert float(uir_loss(model, inquiries, pad_id=pad, distance=distance).detach()) == 0.0
    assert 0.0 < losses[0] < losses[1] < losses[2], losses


def test_reference_features_kept_once_give_the_loss_computed_each_step(lora_model, cl_tasks):
    from hicl_app.engine.methods.llava_c.uir import ReferenceFeatures

    loaded, model = lora_model
    pool = _inquiries(loaded, cl_tasks)[:6]
    pad = loaded.processor.tokenizer.pad_token_id
    model.train()
    reference = ReferenceFeatures(pool, pad, batch_size=4)  # two batches of different lengths
    assert float(uir_loss(model, pool[:3], pad_id=pad, distance="mse", reference=reference.batch(model, [0, 1, 2]))) == 0.0
    kept = reference.features
    for scale in (0.05, 0.2):  # the LoRA drifts; the kept features are the adapter-off ones
        _scale_lora_b(model, scale)
        for picked in ([5, 0, 3], [2, 4]):
            chosen = [pool[i] for i in picked]
            want = float(uir_loss(model, chosen, pad_id=pad, distance="cos").detach())
            got = float(uir_loss(model, chosen, pad_id=pad, distance="cos", reference=reference.batch(model, picked)).detach())
            assert want > 0 and got == pytest.approx(want, rel=1e-4, abs=1e-7)
    assert reference.features is kept and [f.shape[0] for f in kept] == [len(q) for q in pool]


def test_gradients_reach_only_the_lora(lora_model, cl_tasks):
    loaded, model = lora_model
    inquiries = _inquiries(loaded, cl_tasks)[:3]
    _scale_lora_b(model, 0.05)
    model.train()
    uir_loss(model, inquiries, pad_id=loaded.processor.tokenizer.pad_token_id, distance="mse").backward()
    with_grad = {n for n, p in model.named_parameters() if p.grad is not None}
    assert with_grad and all(".lora_A." in n or ".lora_B." in n for n in with_grad)
    assert any(".lora_A." in n for n in with_grad) and any(float(model.get_parameter(n).grad.abs().sum()) > 0
                                                            for n in with_grad)
    frozen = [n for n, p in model.named_parameters() if "multi_modal_projector" in n or "lora_" not in n]
    assert frozen and all(model.get_parameter(n).grad is None for n in frozen)


def test_feature_distance_masks_padding():
    h = torch.tensor([[[1.0, 0.0], [5.0, 5.0]]])
    ref = torch.tensor([[[0.0, 0.0], [0.0, 0.0]]])
    mask = torch.tensor([[1, 0]])
    assert float(feature_distance(h, ref, mask, "mse")) == 1.0
    assert float(feature_distance(h, h * 3, torch.tensor([[1, 1]]), "cos")) == pytest.approx(0.0, abs=1e-6)
    with pytest.raises(ValueError):
        feature_distance(h, ref, mask, "l1")
