"""The training and evaluation fast paths change speed, never results.

Frozen vision features are cached before the projector: logits, gradients (the projector's
included), losses, trained weights and generated answers must equal the uncached path's.
Grouping by length is a different, seeded sample order: deterministic per (seed, epoch), a
permutation with unchanged batch boundaries, less padding, and an exact resume.
"""

from __future__ import annotations

import random

import pytest
import torch

from hicl_app.core.taskfile import load_records
from hicl_app.engine.config import EvalConfig, ModelConfig, TrainConfig
from hicl_app.engine.data.encoding import Encoder, collate
from hicl_app.engine.data.vision_cache import feature_store, vision_feature_cache
from hicl_app.engine.errors import EngineError, Stopped
from hicl_app.engine.eval.generate import generate_answers
from hicl_app.engine.modeling.models import load_base


def _lora(base_dir, cfg):
    from hicl_app.engine.modeling.adapters import new_lora

    loaded = load_base(ModelConfig(str(base_dir)))
    torch.manual_seed(cfg.seed)
    return loaded, new_lora(loaded.model, cfg)


def _batch(loaded, records):
    enc = Encoder(loaded.processor)
    return collate([enc.encode(r) for r in records], loaded.processor.tokenizer.pad_token_id, "right")


def _projector(model):
    return model.get_base_model().model.multi_modal_projector


def _logits_and_grads(model, batch):
    from hicl_app.engine.train.loop import token_loss_sum

    model.zero_grad(set_to_none=True)
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    logits = model(**inputs, use_cache=False).logits.detach()
    token_loss_sum(model, batch).backward()
    return logits, [p.grad.clone() for p in _projector(model).parameters()]


def test_cached_features_give_the_same_logits_and_gradients(tiny_base_dir, cl_tasks):
    loaded, model = _lora(tiny_base_dir, TrainConfig(dropout=0.0))
    for p in _projector(model).parameters():  # some methods tune the projector: it must still learn
        p.requires_grad_(True)
    records = load_records(cl_tasks["color"].train_path)[:6]
    batch = _batch(loaded, records)
    logits, grads = _logits_and_grads(model, batch)
    with vision_feature_cache(model) as store:
        assert store is not None
        for expected_hits in (0, 12):  # two forwards per call: the first fills the store
            got_logits, got_grads = _logits_and_grads(model, batch)
            assert store.hits == expected_hits + 6 and store.misses == 6
            assert torch.allclose(got_logits, logits, atol=1e-6, rtol=0)
            for got, want in zip(got_grads, grads):
                assert torch.allclose(got, want, atol=1e-6, rtol=0)
    assert "get_image_features" not in vars(model.get_base_model().model)  # the hook is gone afterwards
    assert feature_store(model) is store and len(store.features) == 6  # kept for a later evaluation


def test_cache_stays_off_for_a_trainable_tower_and_drops_stale_features(tiny_base_dir, cl_tasks):
    loaded, model = _lora(tiny_base_dir, TrainConfig(dropout=0.0))
    tower = model.get_base_model().model.vision_tower
    batch = {k: v for k, v in _batch(loaded, load_records(cl_tasks["bg"].train_path)[:3]).items() if k != "labels"}
    first = next(tower.parameters())
    first.requires_grad_(True)
    with vision_feature_cache(model) as store, torch.no_grad():
        model(**batch)
        assert store.misses == 0 and not store.features  # a tower that trains is never cached
    first.requires_grad_(False)
    with torch.no_grad(), vision_feature_cache(model) as store:
        model(**batch)
        assert len(store.features) == 3
        first.mul_(0.5)  # an in-place update of the tower (e.g. a loaded state dict)
        cached = model(**batch).logits
    with torch.no_grad():
        fresh = model(**batch).logits
    assert store.misses == 6 and torch.allclose(cached, fresh, atol=1e-6, rtol=0)
    with torch.no_grad(), vision_feature_cache(model, enabled=False) as off:
        assert off is None and "get_image_features" not in vars(model.get_base_model().model)


def _train(base_dir, records, cfg, ckpt=None, stop_after=None):
    from hicl_app.engine.train.loop import train

    loaded, model = _lora(base_dir, cfg)
    losses: list[float] = []
    stop = (lambda: len(losses) >= stop_after) if stop_after else None
    train(model, loaded.processor, records, cfg, device=loaded.device, dtype=loaded.dtype, checkpoint_dir=ckpt,
          fingerprint={"test": 1}, should_stop=stop,
          on_event=lambda e: losses.append(e["loss"]) if e["type"] == "loss" else None)
    params = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    return loaded, model, losses, params


def test_training_and_generation_with_the_cache_match_the_plain_path(tiny_base_dir, cl_tasks):
    # two epochs, so the second reads every image from the store; dropout on, so any extra use of
    # the RNG by the cached path would show as different dropout masks
    records = load_records(cl_tasks["color"].train_path)[:16]
    test = load_records(cl_tasks["color"].test_path)[:6] + records[:4]
    runs = {}
    for cache in (False, True):
        cfg = TrainConfig(epochs=2, batch_size=4, lr=1e-3, dropout=0.1, checkpoint_every=0, cache_vision=cache)
        loaded, model, losses, params = _train(tiny_base_dir, records, cfg)
        answers = generate_answers(model, loaded.processor, test, EvalConfig(batch_size=4, max_new_tokens=4, cache_vision=cache),
                                   device=loaded.device, dtype=loaded.dtype)
        runs[cache] = (losses, params, answers, feature_store(model))
    (plain_losses, plain_params, plain_answers, none), (losses, params, answers, store) = runs[False], runs[True]
    assert none is None and len(losses) == 8
    assert losses == pytest.approx(plain_losses, abs=1e-6, rel=0)
    for name, value in plain_params.items():
        assert torch.allclose(params[name], value, atol=1e-6, rtol=0), name
    assert answers == plain_answers
    # 16 images computed once in training; evaluation reused the 4 it had seen and added 6
    assert store.misses == 16 + 6 and len(store.features) == 22 and store.hits >= 16 + 4


def test_length_grouping_is_a_seeded_permutation_with_less_padding():
    from hicl_app.engine.train.loop import Schedule

    rng = random.Random(0)
    lengths = tuple(rng.choice([20, 40, 60, 200]) + rng.randrange(5) for _ in range(203))
    cfg = TrainConfig(batch_size=8, seed=5, group_by_length=True)
    grouped, plain = Schedule(203, cfg, lengths), Schedule(203, TrainConfig(batch_size=8, seed=5), lengths)

    def padded(order):
        return sum(8 * max(lengths[i] for i in order[k:k + 8]) for k in range(0, len(order) - 3, 8))

    for epoch in range(3):
        order = grouped.epoch_order(epoch)
        assert sorted(order) == list(range(203))
        assert order == Schedule(203, cfg, lengths).epoch_order(epoch)  # a pure function of (seed, epoch)
        assert sorted(lengths[i] for i in order[-3:]) == sorted(lengths)[:3]  # the short batch stays last
        assert max(lengths) == max(lengths[i] for i in order[:8])  # the longest batch comes first
        assert padded(order) < 0.8 * padded(plain.epoch_order(epoch))
    assert grouped.epoch_order(0) != grouped.epoch_order(1)
    assert Schedule(203, TrainConfig(batch_size=8, seed=6, group_by_length=True), lengths).epoch_order(0) \
        != grouped.epoch_order(0)


def test_text_length_tracks_the_encoded_length(tiny_base_dir, cl_tasks):
    loaded = load_base(ModelConfig(str(tiny_base_dir)))
    enc = Encoder(loaded.processor)
    records = load_records(cl_tasks["tone"].train_path)[:3]
    records[1] = dict(records[1], history=[["What shape is in the image?", "circle"]] * 2)
    image_id = loaded.processor.image_token_id
    gaps = {len(e.input_ids) - sum(t == image_id for t in e.input_ids) - enc.length(r)
            for r, e in ((r, enc.encode(r)) for r in records)}
    assert len(gaps) == 1  # the same offset (bos, image as one) for every sample


def test_grouped_training_resumes_exactly_and_refuses_an_ungrouped_checkpoint(tiny_base_dir, cl_tasks, tmp_path):
    records = load_records(cl_tasks["color"].train_path)[:20]
    records += [dict(r, history=[["What shape is in the image?", "circle"]] * (i % 3)) for i, r in
                enumerate(load_records(cl_tasks["bg"].train_path)[:20])]
    cfg = TrainConfig(max_steps=10, batch_size=6, lr=1e-3, dropout=0.1, checkpoint_every=3, seed=2,
                      group_by_length=True)
    *_, straight = _train(tiny_base_dir, records, cfg, ckpt=tmp_path / "a")
    with pytest.raises(Stopped):
        _train(tiny_base_dir, records, cfg, ckpt=tmp_path / "b", stop_after=4)
    *_, losses, resumed = _train(tiny_base_dir, records, cfg, ckpt=tmp_path / "b")
    assert len(losses) == 6
    for name, value in straight.items():
        assert torch.allclose(resumed[name], value, atol=1e-6, rtol=0), name
    ungrouped = TrainConfig(**{**cfg.__dict__, "group_by_length": False})
    with pytest.raises(EngineError, match="different stage"):
        _train(tiny_base_dir, records, ungrouped, ckpt=tmp_path / "b")
