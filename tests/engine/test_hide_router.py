"""`--router-encoder`: HiDe routing with a CLIP-style dual encoder folder (a tiny CLIP built here)."""

from __future__ import annotations

from pathlib import Path

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
from hicl_app.engine.methods.hide.routing import ClipEncoder
from hicl_app.engine.methods.hide.state import load_state
from hicl_app.engine.modeling.models import load_base
from hicl_app.engine.pipeline import StageSpec
from hicl_app.engine.train.loop import train

pytestmark = pytest.mark.timeout(1800)  # the first test of a process also builds the tiny base

ORDER = ["color", "bg"]


def build_tiny_clip(folder: Path, tokenizer) -> Path:
    """A randomly initialised CLIPModel + processor saved with save_pretrained (no download)."""
    from transformers import CLIPConfig, CLIPImageProcessorPil, CLIPModel, CLIPProcessor

    cfg = CLIPConfig(
        text_config=dict(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=2, max_position_embeddings=77, pad_token_id=tokenizer.pad_token_id,
                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id),
        vision_config=dict(image_size=32, patch_size=8, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                           num_attention_heads=2),
        projection_dim=24)
    torch.manual_seed(0)
    CLIPModel(cfg).save_pretrained(folder)
    image_processor = CLIPImageProcessorPil(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    CLIPProcessor(image_processor=image_processor, tokenizer=tokenizer).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def clip_run(tiny_base_dir, cl_tasks, tmp_path_factory):
    """Two hide stages routed by the tiny CLIP (two training steps each; no evaluation)."""
    root = tmp_path_factory.mktemp("hide-clip")
    loaded = load_base(ModelConfig(str(tiny_base_dir)))
    clip = build_tiny_clip(root / "clip", loaded.processor.tokenizer)
    options = {"router_encoder": str(clip)}
    method = get_method("hide", options)
    prev = None
    for index, name in enumerate(ORDER):
        spec = StageSpec(method="hide", method_options=options, stage_index=index, n_stages=2,
                         train_tasks=[cl_tasks[name]], eval_tasks=[], model=ModelConfig(str(tiny_base_dir)),
                         train=TrainConfig(max_steps=2, checkpoint_every=0), eval=EvalConfig(),
                         stage_dir=root / f"stage-{index}", prev_stage_dir=prev, checkpoint_dir=root / "ckpt")
        loaded = load_base(spec.model)
        model = method.prepare(loaded.model, StageContext(spec, loaded.processor, loaded.device, loaded.dtype))
        train(model, loaded.processor, read_jsonl(cl_tasks[name].train_path), spec.train, device=loaded.device,
              dtype=loaded.dtype, checkpoint_dir=None, fingerprint={})
        method.save(model, StageContext(spec, loaded.processor, loaded.device, loaded.dtype))
        prev = spec.stage_dir
    return {"root": root, "clip": clip, "options": options}


def _batch(processor, records):
    enc = Encoder(processor)
    batch = collate([enc.encode(r, with_answer=False) for r in records], processor.tokenizer.pad_token_id, "left")
    batch.pop("labels")
    return batch


def test_clip_router_anchors_and_routing(clip_run, tiny_base_dir, cl_tasks):
    state = load_state(clip_run["root"] / "stage-1")
    assert state.encoder["kind"] == "clip" and state.encoder["path"] == str(clip_run["clip"].resolve())
    assert state.anchors_txt.shape == (2, 24) and state.anchors_img.shape == (2, 24)  # CLIP's projection dim

    loaded = load_base(ModelConfig(str(tiny_base_dir)))
    net = get_method("hide", clip_run["options"]).load(loaded.model, clip_run["root"] / "stage-1")
    handle = handle_of(net)
    assert isinstance(handle.router.encoder, ClipEncoder)
    # the router reads the instruction back from the prompt tokens, without the chat template
    records = [r for name in ORDER for r in read_jsonl(cl_tasks[name].test_path)[:6]]
    batch = _batch(loaded.processor, records)
    texts = handle.router.encoder.texts(batch["input_ids"], batch["attention_mask"])
    assert texts[0] == "What color is the shape?" and texts[-1] == "What color is the background?"
    with torch.no_grad():
        net(**batch)
    assert handle.last_weights.argmax(1).tolist() == [0] * 6 + [1] * 6
    together = handle.last_weights.clone()
    with torch.no_grad():
        net(**_batch(loaded.processor, records[7:8]))
    assert torch.allclose(handle.last_weights[0], together[7], atol=1e-5)
    # generation routes the same way (its forwards get pre-encoded images, not the pixels CLIP needs)
    handle.state.weights = None
    generate_answers(net, loaded.processor, records[7:8], EvalConfig(batch_size=1, max_new_tokens=3),
                     device=torch.device("cpu"), dtype=torch.float32)
    assert torch.allclose(handle.last_weights[0], together[7], atol=1e-5)


def test_a_folder_that_is_not_a_dual_encoder_is_refused(tiny_base_dir, tmp_path):
    loaded = load_base(ModelConfig(str(tiny_base_dir)))
    with pytest.raises(EngineError, match="not a dual encoder"):
        ClipEncoder(str(tiny_base_dir), loaded.processor, [], torch.device("cpu"))
