"""Engine training: label masking, learning, exact resume, refusal of damaged checkpoints."""

from __future__ import annotations

import json

import pytest
import torch

from hicl_app.core.taskfile import load_records
from hicl_app.engine.config import ModelConfig, TrainConfig
from hicl_app.engine.data.encoding import IGNORE_INDEX, Encoder, collate
from hicl_app.engine.errors import EngineError, Stopped
from hicl_app.engine.modeling.models import load_base
from hicl_app.engine.train.checkpoint import latest_checkpoint


@pytest.fixture(scope="module")
def loaded(tiny_base_dir):
    return load_base(ModelConfig(str(tiny_base_dir)))


def _text(tok, ids):
    return tok.decode([i for i in ids if i != IGNORE_INDEX], skip_special_tokens=False)


def test_labels_cover_answers_and_eos_only(loaded, cl_tasks):
    tok = loaded.processor.tokenizer
    record = dict(load_records(cl_tasks["color"].train_path)[0],
                  history=[["What shape is in the image?", "circle"]])
    enc = Encoder(loaded.processor, max_length=512).encode(record)
    assert len(enc.input_ids) == len(enc.labels)
    # labelled text: each answer followed by eos, nothing else
    assert _text(tok, enc.labels) == f" circle{tok.eos_token} {record['answer']}{tok.eos_token}"
    image_id = loaded.processor.image_token_id
    n_image = sum(t == image_id for t in enc.input_ids)
    assert n_image == 16  # (32/8)^2 patches, CLS dropped
    assert all(lab == IGNORE_INDEX for t, lab in zip(enc.input_ids, enc.labels) if t == image_id)
    assert enc.labels[-1] == tok.eos_token_id
    prompt = Encoder(loaded.processor).encode(record, with_answer=False)
    assert set(prompt.labels) == {IGNORE_INDEX}
    assert enc.input_ids[:len(prompt.input_ids)] == prompt.input_ids
    assert tok.decode(prompt.input_ids).endswith("What color is the shape? ASSISTANT:")

    short = Encoder(loaded.processor).encode(load_records(cl_tasks["bg"].train_path)[0])
    batch = collate([enc, short], tok.pad_token_id, "right")
    n = len(short.input_ids)
    assert batch["input_ids"].shape == (2, len(enc.input_ids))
    assert batch["attention_mask"][1, n:].sum() == 0 and batch["attention_mask"][1, :n].all()
    assert (batch["labels"][1, n:] == IGNORE_INDEX).all()
    assert (batch["input_ids"][1, n:] == tok.pad_token_id).all()
    assert batch["pixel_values"].shape == (2, 3, 32, 32)
    left = collate([enc, short], tok.pad_token_id, "left")
    assert left["attention_mask"][1, :len(enc.input_ids) - n].sum() == 0

    # max_length counts the 16 image tokens as one
    cut = Encoder(loaded.processor, max_length=len(enc.input_ids) - 15 - 3).encode(record)
    assert cut.input_ids == enc.input_ids[:-3] and cut.labels == enc.labels[:-3]
    with pytest.raises(EngineError, match="max_length"):
        Encoder(loaded.processor, max_length=10).encode(record)


def test_config_round_trip_and_validation():
    from hicl_app.engine.config import from_dict, to_dict

    cfg = TrainConfig(rank=4, targets=["q_proj"], max_steps=10)
    assert from_dict(TrainConfig, to_dict(cfg)) == cfg
    with pytest.raises(EngineError, match="unknown TrainConfig option"):
        from_dict(TrainConfig, {"rnak": 4})
    with pytest.raises(EngineError, match="rank must be"):
        TrainConfig(rank=0)


def test_schedule_warmup_then_cosine():
    from hicl_app.engine.train.loop import Schedule

    s = Schedule(100, TrainConfig(max_steps=100, lr=1.0, warmup_ratio=0.1, batch_size=8))
    assert s.warmup_steps == 10 and s.total_steps == 100
    assert s.lr(0) == pytest.approx(0.1) and s.lr(9) == pytest.approx(1.0)
    assert s.lr(10) == pytest.approx(1.0) and s.lr(55) == pytest.approx(0.5, abs=0.02)
    assert s.lr(99) < 0.01
    assert s.epoch_order(0) == s.epoch_order(0) and s.epoch_order(0) != s.epoch_order(1)
    assert sorted(s.epoch_order(3)) == list(range(100))


def test_training_reduces_loss(tiny_base_dir, cl_tasks):
    records = load_records(cl_tasks["color"].train_path)
    losses = []
    from hicl_app.engine.modeling.adapters import new_lora
    from hicl_app.engine.train.loop import train

    loaded = load_base(ModelConfig(str(tiny_base_dir)))
    cfg = TrainConfig(max_steps=40, lr=1e-3, checkpoint_every=0)
    torch.manual_seed(0)
    model = new_lora(loaded.model, cfg)
    result = train(model, loaded.processor, records, cfg, device=loaded.device, dtype=loaded.dtype,
                   checkpoint_dir=None, fingerprint={},
                   on_event=lambda e: losses.append(e["loss"]) if e["type"] == "loss" else None)
    assert result.steps == 40 and len(losses) == 40
    first, last = losses[0], sum(losses[-10:]) / 10
    assert last < 0.5 * first, (first, last)


def _run(base_dir, records, ckpt, cfg, stop_after=None, events=None):
    from hicl_app.engine.modeling.adapters import new_lora
    from hicl_app.engine.train.loop import train

    loaded = load_base(ModelConfig(str(base_dir)))
    torch.manual_seed(cfg.seed)
    model = new_lora(loaded.model, cfg)
    done = []

    def on_event(e):
        if e["type"] == "loss":
            done.append(e["step"])
        if events is not None:
            events.append(e)

    stop = (lambda: bool(done) and done[-1] >= stop_after) if stop_after else None
    train(model, loaded.processor, records, cfg, device=loaded.device, dtype=loaded.dtype,
          checkpoint_dir=ckpt, fingerprint={"test": 1}, on_event=on_event, should_stop=stop)
    return {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}


def test_resume_follows_the_uninterrupted_trajectory(tiny_base_dir, cl_tasks, tmp_path):
    # 40 samples / batch 8 = 5 batches per epoch; 12 steps x 2 micro-batches cross several epochs;
    # dropout on, so the RNG state must be restored too.
    records = load_records(cl_tasks["color"].train_path)[:40]
    cfg = TrainConfig(max_steps=12, grad_accum=2, lr=1e-3, dropout=0.1, checkpoint_every=4, warmup_ratio=0.2, seed=3)
    straight = _run(tiny_base_dir, records, tmp_path / "a", cfg)

    with pytest.raises(Stopped) as info:
        _run(tiny_base_dir, records, tmp_path / "b", cfg, stop_after=6)
    assert info.value.step == 6 and info.value.checkpoint.name == "step-00000006"
    events = []
    resumed = _run(tiny_base_dir, records, tmp_path / "b", cfg, events=events)
    assert any(e["type"] == "log" and "resumed" in e["message"] for e in events)
    assert [e["step"] for e in events if e["type"] == "loss"] == list(range(7, 13))
    assert straight.keys() == resumed.keys()
    for name in straight:
        assert torch.allclose(straight[name], resumed[name], atol=1e-6, rtol=0), name
    assert latest_checkpoint(tmp_path / "b").name == "step-00000012"
    # a finished stage resumed again trains no further
    again = _run(tiny_base_dir, records, tmp_path / "b", cfg)
    assert all(torch.equal(again[n], resumed[n]) for n in resumed)


def test_damaged_or_foreign_checkpoint_is_refused(tiny_base_dir, cl_tasks, tmp_path):
    records = load_records(cl_tasks["color"].train_path)[:16]
    cfg = TrainConfig(max_steps=2, lr=1e-3, checkpoint_every=1)
    _run(tiny_base_dir, records, tmp_path, cfg)
    ckpt = latest_checkpoint(tmp_path)
    tensors = ckpt / "state.safetensors"
    manifest = ckpt / "checkpoint.json"
    assert not list(ckpt.glob("*.pt")) and not list(ckpt.glob("*.bin"))

    blob = bytearray(tensors.read_bytes())
    blob[-5] ^= 0xFF
    tensors.write_bytes(bytes(blob))
    with pytest.raises(EngineError, match="corrupt"):
        _run(tiny_base_dir, records, tmp_path, cfg)
    blob[-5] ^= 0xFF
    tensors.write_bytes(bytes(blob))

    original = manifest.read_text()
    data = json.loads(original)
    data["step"] = 1
    manifest.write_text(json.dumps(data))
    with pytest.raises(EngineError, match="corrupt"):
        _run(tiny_base_dir, records, tmp_path, cfg)
    manifest.write_text(original[: len(original) // 2])
    with pytest.raises(EngineError, match="unreadable"):
        _run(tiny_base_dir, records, tmp_path, cfg)
    manifest.write_text(original)

    with pytest.raises(EngineError, match="different stage"):
        _run(tiny_base_dir, records, tmp_path, TrainConfig(max_steps=2, lr=5e-4, checkpoint_every=1))
