"""Activation checkpointing changes memory, not the trajectory: each method's training model, with
it off and on, gives the same per-step losses and the same LoRA weights, and the decoder layers
really are recomputed in the backward pass (the vision tower is not)."""

from __future__ import annotations

import random
import warnings

import pytest
import torch

from hicl_app.core.taskfile import load_records
from hicl_app.engine.config import EvalConfig, ModelConfig, TrainConfig
from hicl_app.engine.methods import get_method
from hicl_app.engine.methods.base import StageContext
from hicl_app.engine.modeling import checkpointing
from hicl_app.engine.modeling.checkpointing import enable_gradient_checkpointing, hf_model
from hicl_app.engine.modeling.models import decoder_layers, load_base
from hicl_app.engine.modeling.precision import autocast_context
from hicl_app.engine.spec import StageSpec
from hicl_app.engine.train.loop import train

STEPS = 4
#: llava-c with a larger inquiry weight, so its extra forward weighs in the loss
METHODS = {"seq-lora": {}, "joint": {}, "hide": {}, "llava-c": {"uir_weight": 0.5}}


def _spec(base, tasks, root, method, options) -> StageSpec:
    cfg = TrainConfig(max_steps=STEPS, lr=3e-3, rank=4, alpha=8, dropout=0.0, batch_size=8, checkpoint_every=0)
    return StageSpec(method=method, method_options=dict(options), stage_index=0, n_stages=2,
                     train_tasks=[tasks["color"]], eval_tasks=[tasks["color"]], model=ModelConfig(str(base)),
                     train=cfg, eval=EvalConfig(), stage_dir=root / "stage-0", prev_stage_dir=None,
                     checkpoint_dir=root / "ckpt")


def _prepared(spec: StageSpec):
    """The stage's training model, made as the pipeline makes it."""
    method = get_method(spec.method, spec.method_options)
    loaded = load_base(spec.model)
    random.seed(spec.train.seed)
    torch.manual_seed(spec.train.seed)
    ctx = StageContext(spec, loaded.processor, loaded.device, loaded.dtype,
                       records=load_records(spec.train_tasks[0].train_path)[:32])
    ctx.records = method.train_records(ctx)
    return method, loaded, ctx, method.prepare(loaded.model, ctx)


def _train(spec: StageSpec, checkpoint: bool) -> tuple[list[float], dict[str, torch.Tensor]]:
    method, loaded, ctx, model = _prepared(spec)
    assert enable_gradient_checkpointing(model, checkpoint) is checkpoint
    losses: list[float] = []
    train(model, loaded.processor, ctx.records, spec.train, device=loaded.device, dtype=loaded.dtype,
          checkpoint_dir=None, fingerprint={}, extra_loss=method.extra_loss,
          on_event=lambda e: losses.append(e["loss"]) if e["type"] == "loss" else None)
    return losses, {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}


@pytest.mark.parametrize("name", list(METHODS))
def test_checkpointing_keeps_losses_and_weights(name, tiny_base_dir, cl_tasks, tmp_path):
    spec = _spec(tiny_base_dir, cl_tasks, tmp_path, name, METHODS[name])
    plain_losses, plain = _train(spec, False)
    ckpt_losses, ckpt = _train(spec, True)
    assert len(plain_losses) == STEPS and plain_losses[0] != plain_losses[-1]
    assert max(abs(a - b) for a, b in zip(plain_losses, ckpt_losses)) < 1e-5
    assert plain.keys() == ckpt.keys() and plain
    assert max(float((plain[k] - ckpt[k]).abs().max()) for k in plain) < 1e-5


def test_decoder_layers_are_recomputed_in_the_backward_pass(tiny_base_dir, cl_tasks, tmp_path):
    from hicl_app.engine.data.encoding import Encoder, collate

    _, loaded, ctx, model = _prepared(_spec(tiny_base_dir, cl_tasks, tmp_path, "seq-lora", {}))
    encoder = Encoder(loaded.processor, 64)
    batch = collate([encoder.encode(r) for r in ctx.records[:2]], loaded.processor.tokenizer.pad_token_id, "right")
    batch.pop("labels")
    _, layers = decoder_layers(hf_model(model))
    vision_layer = next(m for n, m in hf_model(model).named_modules() if "vision_tower" in n and n.endswith("layers.0"))
    calls = {"mlp": 0, "vision": 0}
    layers[0].mlp.register_forward_pre_hook(lambda *_: calls.__setitem__("mlp", calls["mlp"] + 1))
    vision_layer.mlp.register_forward_pre_hook(lambda *_: calls.__setitem__("vision", calls["vision"] + 1))

    def step() -> tuple[int, int]:
        calls.update(mlp=0, vision=0)
        model.train()
        model(**batch, use_cache=False).logits.sum().backward()
        return calls["mlp"], calls["vision"]

    assert step() == (1, 1)
    assert enable_gradient_checkpointing(model, True)
    assert step() == (2, 1)  # the decoder layer ran again for the backward pass
    assert not vision_layer.gradient_checkpointing  # the frozen tower is left alone
    with torch.no_grad():
        model.eval()
        model(**batch)
    assert calls["mlp"] == 3  # evaluation runs each layer once


def test_auto_turns_on_only_above_the_threshold(tiny_base_dir, monkeypatch):
    model = load_base(ModelConfig(str(tiny_base_dir))).model
    assert enable_gradient_checkpointing(model, None) is False
    assert enable_gradient_checkpointing(model, False) is False
    assert not any(getattr(m, "gradient_checkpointing", False) for m in model.modules())
    monkeypatch.setattr(checkpointing, "GRADIENT_CHECKPOINTING_ABOVE", 1000)
    assert enable_gradient_checkpointing(model, None) is True
    assert all(layer.gradient_checkpointing for layer in decoder_layers(model)[1])


def test_autocast_only_on_cuda_in_low_precision():
    for device, dtype in [("cpu", torch.float32), ("cpu", torch.bfloat16), ("cuda", torch.float32)]:
        with autocast_context(device, dtype):
            assert not torch.is_autocast_enabled("cuda")
    with warnings.catch_warnings():  # without CUDA torch warns that it disables it
        warnings.simplefilter("ignore", UserWarning)
        ctx = autocast_context(torch.device("cuda", 0), torch.bfloat16)
    assert isinstance(ctx, torch.autocast) and ctx.fast_dtype == torch.bfloat16
