"""A tiny LLaVA-architecture base model built locally, for tests, the demo and benchmarks.

No weights can be downloaded here, so the tiny model is made from configs: a CLIP-style vision
tower, a small Llama text model and a byte-level BPE tokenizer trained on the spot. It is saved
with `save_pretrained` and is loaded back through exactly the code path a real model takes
(`models.load_base`), so everything the engine does with it also runs on LLaVA-1.5-hf.
The weights are untrained; LoRA still learns simple visual questions on top of them.
"""

from __future__ import annotations

import os
from pathlib import Path

from ..core.fsio import publish_dir, staging_dir

SPECIAL_TOKENS = ["<pad>", "<s>", "</s>", "<unk>", "<image>"]

SIZES: dict[str, dict[str, int]] = {
    # about 0.9 M parameters; 32 px images -> 16 image tokens
    "tiny": dict(img=32, patch=8, v_hidden=64, v_layers=2, v_heads=4, v_inter=128,
                 t_hidden=128, t_layers=4, t_heads=4, t_inter=256, vocab=512),
    # the tiny widths, 12 decoder layers: where activation memory grows with depth (bench memory)
    "deep": dict(img=32, patch=8, v_hidden=64, v_layers=2, v_heads=4, v_inter=128,
                 t_hidden=128, t_layers=12, t_heads=4, t_inter=256, vocab=512),
    # about 10 M parameters; 64 px images -> 64 image tokens
    "small": dict(img=64, patch=8, v_hidden=128, v_layers=4, v_heads=4, v_inter=512,
                  t_hidden=256, t_layers=10, t_heads=8, t_inter=768, vocab=1000),
}

_WORDS = (
    "the a an is are was were be of in on at to for with and or not this that what which who "
    "how many much where when why color colour shape size background image picture photo shows "
    "left right top bottom above below next beside inside outside between count number there "
    "red green blue yellow purple orange black white gray grey brown pink dark light bright "
    "circle square triangle cross star line bar chart plot graph axis value highest lowest "
    "small large big tiny one two three four five six seven eight nine ten zero yes no answer "
    "question describe caption scene object objects filled outline bordered style kind type "
    "option choose select letter word single short sentence please give"
).split()


def _generic_corpus() -> list[str]:
    """Enough varied text that a 512-1000 token vocabulary fills up and common words merge."""
    lines = [" ".join(_WORDS[i:i + 9]) for i in range(0, len(_WORDS), 3)]
    lines += [f"USER: <image>\nWhat is the {w}? ASSISTANT: {v}" for w in _WORDS[:40:3] for v in _WORDS[40:80:4]]
    lines += [f"{n} {n + 1} {n * 7} {n / 4:.2f} ({chr(65 + n % 8)}) {chr(65 + n % 8)}." for n in range(60)]
    lines += ["The quick brown fox jumps over the lazy dog. Hello, world! How are you? I am fine; thanks.",
              "A: first. B: second. C: third. D: fourth. Answer with the option's letter from the given choices directly.",
              "Answer the question using a single word or phrase."]
    return lines


def train_bpe(corpus: list[str], vocab_size: int, special_tokens: list[str]):
    """A byte-level BPE trained on `corpus`, `special_tokens` first (ids 0, 1, ...)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())  # byte-level: every string encodes, no <unk> needed
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=special_tokens,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(corpus, trainer=trainer)
    return tok


def _build_tokenizer(corpus: list[str], vocab_size: int):
    from tokenizers import processors
    from transformers import PreTrainedTokenizerFast

    tok = train_bpe(corpus, vocab_size, SPECIAL_TOKENS)
    bos = tok.token_to_id("<s>")
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", pair="<s> $A <s> $B",
                                                       special_tokens=[("<s>", bos)])
    # image_token= makes `tokenizer.image_token(_id)` exist, which LlavaProcessor reads.
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>",
                                   unk_token="<unk>", image_token="<image>", model_max_length=2048,
                                   padding_side="right")


def _image_processor(img: int):
    try:  # transformers 5: the PIL-backed processor needs no torchvision
        from transformers import CLIPImageProcessorPil as ImageProcessor
    except ImportError:  # pragma: no cover - older transformers
        from transformers import CLIPImageProcessor as ImageProcessor
    return ImageProcessor(size={"shortest_edge": img}, crop_size={"height": img, "width": img})


def build_tiny_base(out_dir: str | os.PathLike, seed: int = 0, corpus: list[str] | None = None,
                    size: str = "tiny") -> Path:
    """Build and save a tiny LLaVA (model + processor) into `out_dir`, replacing it atomically.

    `corpus` (e.g. the questions and answers of the demo tasks) is added to a built-in generic
    corpus for training the tokenizer, so task words become single tokens.
    """
    import torch
    from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig, LlavaForConditionalGeneration, LlavaProcessor
    from transformers.utils import logging as hf_logging

    from ..engine.data.encoding import LLAVA_CHAT_TEMPLATE
    from ..engine.errors import EngineError

    if size not in SIZES:
        raise EngineError(f"unknown tiny model size {size!r}", hint=f"use one of {', '.join(SIZES)}")
    hf_logging.disable_progress_bar()
    s = SIZES[size]
    tok = _build_tokenizer(list(corpus or []) + _generic_corpus(), s["vocab"])
    vision = CLIPVisionConfig(image_size=s["img"], patch_size=s["patch"], hidden_size=s["v_hidden"],
                              num_hidden_layers=s["v_layers"], num_attention_heads=s["v_heads"],
                              intermediate_size=s["v_inter"], projection_dim=s["v_hidden"])
    text = LlamaConfig(vocab_size=len(tok), hidden_size=s["t_hidden"], num_hidden_layers=s["t_layers"],
                       num_attention_heads=s["t_heads"], num_key_value_heads=s["t_heads"],
                       intermediate_size=s["t_inter"], max_position_embeddings=2048,
                       bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                       pad_token_id=tok.pad_token_id, tie_word_embeddings=False)
    n_patches = (s["img"] // s["patch"]) ** 2
    cfg = LlavaConfig(vision_config=vision, text_config=text, image_token_index=tok.image_token_id,
                      image_seq_length=n_patches, vision_feature_layer=-1,
                      vision_feature_select_strategy="default")
    torch.manual_seed(seed)
    model = LlavaForConditionalGeneration(cfg)
    gen = model.generation_config
    gen.pad_token_id, gen.eos_token_id, gen.bos_token_id = tok.pad_token_id, tok.eos_token_id, tok.bos_token_id
    # CLIP has a CLS token (+1) that strategy "default" drops again: n_patches image tokens.
    proc = LlavaProcessor(image_processor=_image_processor(s["img"]), tokenizer=tok, patch_size=s["patch"],
                          vision_feature_select_strategy="default", num_additional_image_tokens=1,
                          chat_template=LLAVA_CHAT_TEMPLATE)
    out = Path(out_dir)
    _save_in_place(model, proc, out)
    return out


def pretrain(model_dir: str | os.PathLike, records: list[dict], steps: int = 200, lr: float = 5e-4,
             batch_size: int = 8, seed: int = 0, on_event=None, freeze_vision: bool = False) -> Path:
    """Fully train the tiny base on `records` (e.g. captions) and save it back in place.

    An untrained base cannot be taught anything by LoRA alone: its frozen random lm_head and
    final norm cap how confident any prediction can get. A short full pretraining (warm-up,
    cosine, clipping; a constant 1e-3 collapses) gives it the vocabulary and visual grounding
    a real pretrained model has, so the continual tasks then learn in a few hundred LoRA steps.
    `freeze_vision` keeps the vision tower as it is (LLaVA's recipe once the tower is pretrained,
    see vision_pretrain.py).
    """
    import torch

    from ..engine.config import ModelConfig, TrainConfig
    from ..engine.modeling.models import load_base
    from ..engine.train.loop import train

    model_dir = Path(model_dir)
    loaded = load_base(ModelConfig(str(model_dir), device="cpu", dtype="float32"))
    model = loaded.model
    for param in model.parameters():
        param.requires_grad_(True)
    if freeze_vision:
        for param in frozen_tower_parameters(model):
            param.requires_grad_(False)
    cfg = TrainConfig(max_steps=steps, lr=lr, batch_size=batch_size, warmup_ratio=0.15, seed=seed,
                      checkpoint_every=0)
    torch.manual_seed(seed)
    train(model, loaded.processor, records, cfg, device=loaded.device, dtype=loaded.dtype,
          checkpoint_dir=None, fingerprint={}, on_event=on_event)
    _save_in_place(model, loaded.processor, model_dir)
    return model_dir


def frozen_tower_parameters(model) -> list:
    """The vision tower's parameters, less a projector that lives inside it (Qwen2-VL's merger)."""
    from ..engine.methods.llava_c.projector import PROJECTOR_NAMES
    from ..engine.modeling.models import vision_tower

    _, tower = vision_tower(model)
    inside = [m for n, m in tower.named_modules() if n.split(".")[-1] in PROJECTOR_NAMES]
    keep = {id(p) for m in inside for p in m.parameters()}
    return [p for p in tower.parameters() if id(p) not in keep]


def _save_in_place(model, processor, model_dir: Path) -> None:
    """Replace the model folder atomically with `model` and `processor`."""
    stage = staging_dir(model_dir)
    try:
        model.save_pretrained(stage)
        processor.save_pretrained(stage)
        publish_dir(stage, model_dir)
    except BaseException:
        import shutil

        shutil.rmtree(stage, ignore_errors=True)
        raise
