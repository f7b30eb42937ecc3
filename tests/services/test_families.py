"""Every method on every family: a 2-task run of seq-lora, joint, hide and llava-c from the CLI on a
tiny random Qwen2-VL, LLaVA-OneVision and Idefics3, each built from its own configs and processor.

Per family the four runs are queued with `hicl run start --no-worker` and drained by one worker in
this process (the code a worker's child runs, without importing torch once per stage). Then: the
matrix is full, every stage's adapter loads with plain `PeftModel.from_pretrained` and holds LoRA
on the language model's decoder linears only, the adapters of seq-lora and joint (which export it)
give the engine's logits, and hide answers the same batched as one by one.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from engine_fixtures import OTHER_FAMILIES, add_tasks_by_cli, read_jsonl

from hicl_app.engine.config import EvalConfig, ModelConfig
from hicl_app.engine.data.encoding import Encoder, collate
from hicl_app.engine.errors import EngineError
from hicl_app.engine.eval.generate import generate_answers
from hicl_app.engine.methods import get_method
from hicl_app.engine.modeling.models import decoder_layers, load_base

METHODS = ("seq-lora", "joint", "hide", "llava-c")
COMMON = ["--tasks", "color,bg", "--max-steps", "3", "--batch-size", "4", "--rank", "4", "--lr", "1e-3",
          "--checkpoint-every", "0", "--eval-batch-size", "8", "--max-new-tokens", "3", "--device", "cpu",
          "--no-worker", "--json"]
EXTRA = {"seq-lora": ["--targets", "q_proj,v_proj"], "llava-c": ["--pretrain-task", "caps", "--pretrain-steps", "2"]}


def _drain(home: Path) -> None:
    from hicl_app.catalog.db import Catalog
    from hicl_app.core.settings import Settings
    from hicl_app.worker.loop import Worker

    catalog = Catalog(Settings.resolve(home))
    try:
        Worker(catalog, poll=0.1).run(idle_exit=0)
    finally:
        catalog.dispose()


def _logits(model, processor, records) -> torch.Tensor:
    enc = Encoder(processor)
    batch = collate([enc.encode(r) for r in records], processor.tokenizer.pad_token_id, "right")
    batch.pop("labels")
    with torch.no_grad():
        return model(**batch).logits


@pytest.mark.parametrize("family", OTHER_FAMILIES)
def test_every_method_on_the_family_from_the_cli(family, cli, home, tmp_path, family_base_dirs, family_tasks):
    from peft import PeftModel
    from peft.tuners.lora import LoraLayer
    from transformers import AutoModelForImageTextToText

    base = family_base_dirs(family)
    add_tasks_by_cli(cli, tmp_path, family_tasks, names=("color", "bg", "caps"))
    runs = {}
    for method in METHODS:
        res = cli("run", "start", "--method", method, "--base", base, *COMMON, *EXTRA.get(method, []))
        assert res.exit_code == 0, res.output
        runs[method] = json.loads(res.stdout)["run_id"]
    _drain(home)

    records = read_jsonl(family_tasks["color"].test_path)[:3] + read_jsonl(family_tasks["bg"].test_path)[:3]
    loaded = load_base(ModelConfig(str(base), device="cpu"))
    prefix, _ = decoder_layers(loaded.model)
    for method, run_id in runs.items():
        detail = json.loads(cli("run", "show", run_id, "--json").stdout)
        assert detail["status"] == "completed", (method, detail.get("error"))
        matrix = detail["matrix"]
        for t, row in enumerate(matrix):  # every seen task scored after every stage
            seen = 2 if len(matrix) == 1 else t + 1
            assert all(row[j] is not None for j in range(seen)), (method, matrix)
        assert len(detail["adapters"]) == len(matrix)
        for adapter in detail["adapters"]:
            plain = PeftModel.from_pretrained(AutoModelForImageTextToText.from_pretrained(base), adapter["path"]).eval()
            lora = [n.removeprefix("base_model.model.") for n, m in plain.named_modules() if isinstance(m, LoraLayer)]
            assert lora and all(n.startswith(prefix + ".") for n in lora), (method, lora[:3])
            if method == "seq-lora":  # --targets q_proj,v_proj: those of the decoder, not the vision tower's
                assert {n.rsplit(".", 1)[-1] for n in lora} == {"q_proj", "v_proj"}
            stage_dir = Path(adapter["path"]).parent
            if get_method(method).export(stage_dir).peft:  # seq-lora, joint: the adapter is the model
                engine = get_method(method).load(load_base(ModelConfig(str(base), device="cpu")).model, stage_dir)
                torch.testing.assert_close(_logits(plain, loaded.processor, records),
                                           _logits(engine, loaded.processor, records), rtol=1e-5, atol=1e-5)

    # hide: the routed model answers each sample the same in a batch as alone, with soft routing and
    # with top-1 routing (a batch whose samples pick different experts is generated expert by expert)
    last = Path(json.loads(cli("run", "show", runs["hide"], "--json").stdout)["adapters"][-1]["path"]).parent
    for options in ({}, {"routing": "top1"}):
        model = get_method("hide", options).load(load_base(ModelConfig(str(base), device="cpu")).model, last)
        answers = [generate_answers(model, loaded.processor, records, EvalConfig(batch_size=size, max_new_tokens=3),
                                    device=loaded.device, dtype=loaded.dtype) for size in (6, 1)]
        assert answers[0] == answers[1], options


def test_projector_and_vision_cache_per_family(family_base_dirs, tiny_base_dir):
    from hicl_app.engine.data.vision_cache import vision_feature_cache
    from hicl_app.engine.methods.llava_c.projector import find_projector

    expected = {"qwen2-vl": "merger", "llava-onevision": "multi_modal_projector", "idefics3": "connector"}
    for family, name in expected.items():
        model = load_base(ModelConfig(str(family_base_dirs(family)), device="cpu")).model
        path, module = find_projector(model)
        assert path.split(".")[-1] == name and any(True for _ in module.parameters())
        with vision_feature_cache(model) as store:  # features depend on more than one fixed-size image
            assert store is None
    with vision_feature_cache(load_base(ModelConfig(str(tiny_base_dir), device="cpu")).model) as store:
        assert store is not None  # LLaVA-1.5: engages
    with pytest.raises(EngineError, match="no separate vision-language projector"):
        find_projector(torch.nn.Sequential(torch.nn.Linear(2, 2)))


def test_unsupported_family_is_refused_before_loading(tmp_path, family_base_dirs):
    import shutil

    from transformers import LlamaConfig

    text_only = tmp_path / "text-only"
    LlamaConfig(vocab_size=64, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                intermediate_size=32).save_pretrained(text_only)
    with pytest.raises(EngineError, match="'llama' model, which has no image-text-to-text head"):
        load_base(ModelConfig(str(text_only), device="cpu"))
    untemplated = tmp_path / "no-template"
    shutil.copytree(family_base_dirs("qwen2-vl"), untemplated)
    (untemplated / "chat_template.jinja").unlink()
    with pytest.raises(EngineError, match="Qwen2VLProcessor.*has no chat template"):
        load_base(ModelConfig(str(untemplated), device="cpu"))


def test_demo_base_of_another_family_takes_the_llava_recipe(tmp_path):
    from safetensors.torch import load_file

    from hicl_app.builtin import tinybase
    from hicl_app.builtin.families import build_family_base
    from hicl_app.builtin.synth import vocabulary_corpus

    recipe = tinybase.BaseRecipe(family="qwen2-vl", steps=2, samples=16, batch_size=4, vision_steps=2,
                                 vision_samples=40)
    assert recipe.key().startswith("tiny-qwen2-vl-base-") and tinybase.BaseRecipe().key().startswith("tiny-base-")
    path, built = tinybase.ensure(tmp_path / "cache", recipe)
    assert built and tinybase.is_built(path, recipe) and not tinybase.is_built(path, tinybase.BaseRecipe())
    fresh = load_file(build_family_base("qwen2-vl", tmp_path / "fresh", corpus=vocabulary_corpus(), image=64,
                                       size="tiny")
                      / "model.safetensors")
    trained = load_file(path / "model.safetensors")
    moved = [k for k in fresh if fresh[k].shape == trained[k].shape and not torch.equal(fresh[k], trained[k])]
    assert any("visual.blocks." in k for k in moved)  # the tower's attribute pretraining
    assert any(".layers." in k and "visual" not in k for k in moved)  # the descriptions'
    assert load_base(ModelConfig(str(path), device="cpu")).model.config.model_type == "qwen2_vl"


def test_a_sub_batch_takes_its_own_images(family_base_dirs, family_tasks):
    """What top-1 routing generates expert by expert: Qwen2-VL's flattened patches cut per sample."""
    from hicl_app.engine.data.encoding import select_samples
    from hicl_app.engine.modeling.processors import load_processor

    processor = load_processor(family_base_dirs("qwen2-vl"))
    enc = Encoder(processor)
    items = [enc.encode(r, with_answer=False) for r in read_jsonl(family_tasks["color"].test_path)[:3]]
    batch = collate(items, processor.tokenizer.pad_token_id, "left")
    sub = select_samples(batch, torch.tensor([0, 2]), 3)
    pair = collate([items[0], items[2]], processor.tokenizer.pad_token_id, "left")
    assert torch.equal(sub["pixel_values"], pair["pixel_values"]) and torch.equal(sub["image_grid_thw"], pair["image_grid_thw"])
    assert torch.equal(sub["input_ids"], batch["input_ids"][[0, 2]])
    with pytest.raises(EngineError, match="cannot split pixel_values"):
        select_samples({**batch, "pixel_values": batch["pixel_values"][1:]}, torch.tensor([0]), 3)
