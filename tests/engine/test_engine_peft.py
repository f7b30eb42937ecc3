"""Adapters are plain PEFT: reloadable without hicl, and confined to the language model."""

from __future__ import annotations

import pytest
import torch
from engine_fixtures import quick_lora

from hicl_app.core.taskfile import load_records
from hicl_app.engine.config import ModelConfig, TrainConfig
from hicl_app.engine.data.encoding import Encoder, collate
from hicl_app.engine.errors import EngineError
from hicl_app.engine.modeling.adapters import lora_module_names, new_lora, save_adapter
from hicl_app.engine.modeling.models import load_base, lora_target_regex


def test_peft_from_pretrained_gives_the_same_logits(tiny_base_dir, cl_tasks, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForImageTextToText

    records = load_records(cl_tasks["color"].train_path)
    loaded, model = quick_lora(tiny_base_dir, records, steps=8)
    hashes = save_adapter(model, tmp_path / "adapter")
    assert {"adapter_config.json", "adapter_model.safetensors"} <= set(hashes)
    assert not list((tmp_path).glob(".*staging"))

    base = AutoModelForImageTextToText.from_pretrained(tiny_base_dir)
    reloaded = PeftModel.from_pretrained(base, tmp_path / "adapter").eval()
    model.eval()
    encoder = Encoder(loaded.processor)
    batch = collate([encoder.encode(r) for r in records[:4]], loaded.processor.tokenizer.pad_token_id, "right")
    batch.pop("labels")
    with torch.no_grad():
        ours = model(**batch).logits
        theirs = reloaded(**batch).logits
    assert torch.allclose(ours, theirs, atol=1e-6), (ours - theirs).abs().max()
    with torch.no_grad():
        with reloaded.disable_adapter():
            plain = reloaded(**batch).logits
    assert not torch.allclose(plain, ours, atol=1e-4), "the adapter was trained, it must change the logits"


def test_lora_stays_inside_the_language_model(tiny_base_dir, cl_tasks):
    loaded = load_base(ModelConfig(str(tiny_base_dir)))
    regex = lora_target_regex(loaded.model)
    before = {n: p.detach().clone() for n, p in loaded.model.named_parameters()}
    torch.manual_seed(0)
    model = new_lora(loaded.model, TrainConfig())
    names = lora_module_names(model)
    layers = loaded.model.config.text_config.num_hidden_layers
    assert len(names) == 7 * layers
    assert all(".language_model.layers." in n for n in names)
    assert not any(k in n for n in names for k in ("vision_tower", "multi_modal_projector", "lm_head"))
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)

    assert lora_target_regex(model) == regex  # also right on an already wrapped model
    qv = lora_target_regex(loaded.model, ["q_proj", "v_proj"])
    assert "q_proj" in qv and "k_proj" not in qv and qv != regex
    with pytest.raises(EngineError, match="not found"):
        lora_target_regex(loaded.model, ["qkv"])

    # train a few steps: nothing outside the LoRA factors moves
    from hicl_app.engine.train.loop import train

    cfg = TrainConfig(max_steps=3, lr=1e-2, checkpoint_every=0)
    train(model, loaded.processor, load_records(cl_tasks["color"].train_path)[:24], cfg,
          device=loaded.device, dtype=loaded.dtype, checkpoint_dir=None, fingerprint={})
    after = dict(model.get_base_model().named_parameters())
    moved = [n for n, p in before.items()
             if n in after and not torch.equal(p, after[n].detach())]
    assert moved == []


def test_unloadable_model_is_a_clear_error(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(EngineError, match="could not load the base model"):
        load_base(ModelConfig(str(tmp_path / "empty")))
    if not torch.cuda.is_available():
        with pytest.raises(EngineError, match="CUDA is not available"):
            load_base(ModelConfig(str(tmp_path / "empty"), device="cuda"))
