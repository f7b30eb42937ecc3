"""Tiny random instances of the model families hicl tunes, built locally like `tiny.py`'s LLaVA.

Each is made from its family's own transformers config classes (small widths, two or four
layers), a byte-level BPE trained on the spot holding the family's special tokens, and the
family's real processor class with a chat template that renders like the released checkpoints'.
It is saved with `save_pretrained` and loaded back through `models.load_base`, the path a real
checkpoint takes, so a test on it exercises the family's own image inputs: Qwen2-VL's flattened
patches with `image_grid_thw` and multimodal RoPE, LLaVA-OneVision's any-resolution tiles with
`image_sizes`, Idefics3's image splitting with `pixel_attention_mask`.

The processors of Qwen2-VL and LLaVA-OneVision also hold a video processor, which transformers
builds only with torchvision; without it the folder is written with the video settings a
released checkpoint carries (see `engine/modeling/processors.py`, which loads it image-only).
"""

from __future__ import annotations

import os
from pathlib import Path

from .tiny import SIZES, _generic_corpus, _save_in_place, build_tiny_base, train_bpe

FAMILIES = ("llava", "qwen2-vl", "llava-onevision", "idefics3")

# As rendered by Qwen/Qwen2-VL-*-Instruct's chat template (system prompt, vision markers).
QWEN2_VL_CHAT_TEMPLATE = (
    "{% set image_count = namespace(value=0) %}"
    "{% for message in messages %}"
    "{% if loop.first and message['role'] != 'system' %}<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}<|im_end|>\n"
    "{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' or 'image' in content %}{% set image_count.value = image_count.value + 1 %}"
    "<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif content['type'] == 'video' or 'video' in content %}<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif 'text' in content %}{{ content['text'] }}{% endif %}"
    "{% endfor %}<|im_end|>\n{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

# As rendered by llava-hf/llava-onevision-qwen2-*-ov-hf's chat template.
ONEVISION_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' }}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'image') %}{{ '<image>\n' }}{% endfor %}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'text') %}{{ content['text'] }}{% endfor %}"
    "{{ '<|im_end|>\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

# As rendered by HuggingFaceM4/Idefics3-8B-Llama3's chat template.
IDEFICS3_CHAT_TEMPLATE = (
    "<|begin_of_text|>{% for message in messages %}"
    "{{ message['role'] | capitalize }}"
    "{% if message['content'][0]['type'] == 'image' %}{{ ':' }}{% else %}{{ ': ' }}{% endif %}"
    "{% for line in message['content'] %}"
    "{% if line['type'] == 'text' %}{{ line['text'] }}{% elif line['type'] == 'image' %}{{ '<image>' }}{% endif %}"
    "{% endfor %}<end_of_utterance>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ 'Assistant:' }}{% endif %}"
)

QWEN_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>",
               "<|image_pad|>", "<|video_pad|>"]
ONEVISION_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<image>", "<video>"]
IDEFICS3_TOKENS = (["<|begin_of_text|>", "<|end_of_text|>", "<pad>", "<fake_token_around_image>", "<image>",
                    "<end_of_utterance>", "<global-img>"]
                   + [f"<row_{i}_col_{j}>" for i in range(1, 7) for j in range(1, 7)])

#: widths of each family's instances: "test" (about 0.25 M parameters, for the test suite) and
#: "tiny" (the widths of the tiny LLaVA the demo uses, so the families compare like for like)
WIDTHS = {
    "test": (dict(hidden=64, layers=4, heads=4, kv_heads=2, inter=128), dict(hidden=32, layers=2, heads=2, inter=64)),
    "tiny": (dict(hidden=128, layers=4, heads=4, kv_heads=4, inter=256), dict(hidden=64, layers=2, heads=4, inter=128)),
}


def _fast_tokenizer(tok, **named):
    from transformers import PreTrainedTokenizerFast

    return PreTrainedTokenizerFast(tokenizer_object=tok, model_max_length=2048, padding_side="right", **named)


def _family_corpus(corpus: list[str] | None, template_lines: list[str]) -> list[str]:
    return list(corpus or []) + _generic_corpus() + template_lines


def _set_generation(model, tok) -> None:
    gen = model.generation_config
    gen.pad_token_id, gen.eos_token_id, gen.bos_token_id = tok.pad_token_id, tok.eos_token_id, tok.bos_token_id


def _qwen2_vl(corpus: list[str] | None, vocab: int, image: int, seed: int, widths: tuple[dict, dict]):
    text, vision = widths
    import torch
    from transformers import Qwen2VLConfig, Qwen2VLForConditionalGeneration, Qwen2VLProcessor
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    from ..engine.modeling.processors import image_only_video_processor

    lines = [f"<|im_start|>user\n{w}<|im_end|>\n<|im_start|>assistant\n{v}<|im_end|>" for w, v in
             zip(_generic_corpus()[:40], _generic_corpus()[40:80])]
    tok = _fast_tokenizer(train_bpe(_family_corpus(corpus, lines), vocab, QWEN_TOKENS),
                          eos_token="<|im_end|>", pad_token="<|endoftext|>")
    patch, merge = 8, 2
    half = text["hidden"] // text["heads"] // 2  # rotary pairs per head, shared out as Qwen2-VL does (16:24:24)
    section = [half // 4, (half - half // 4) // 2, half - half // 4 - (half - half // 4) // 2]
    cfg = Qwen2VLConfig(
        text_config=dict(vocab_size=len(tok), hidden_size=text["hidden"], num_hidden_layers=text["layers"],
                         num_attention_heads=text["heads"], num_key_value_heads=text["kv_heads"],
                         intermediate_size=text["inter"], max_position_embeddings=2048,
                         rope_parameters={"rope_type": "default", "mrope_section": section, "rope_theta": 10000.0},
                         bos_token_id=None, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id),
        vision_config=dict(depth=vision["layers"], embed_dim=vision["hidden"], num_heads=vision["heads"],
                           mlp_ratio=2, hidden_size=text["hidden"], patch_size=patch, spatial_merge_size=merge,
                           temporal_patch_size=2),
        image_token_id=tok.convert_tokens_to_ids("<|image_pad|>"),
        video_token_id=tok.convert_tokens_to_ids("<|video_pad|>"),
        vision_start_token_id=tok.convert_tokens_to_ids("<|vision_start|>"),
        vision_end_token_id=tok.convert_tokens_to_ids("<|vision_end|>"))
    torch.manual_seed(seed)
    model = Qwen2VLForConditionalGeneration(cfg)
    _set_generation(model, tok)
    factor = patch * merge  # images are resized to multiples of 16 px, (image/16)^2 tokens
    size = {"shortest_edge": factor * factor, "longest_edge": image * image}
    image_proc = Qwen2VLImageProcessorPil(size=size, patch_size=patch, merge_size=merge, temporal_patch_size=2)
    video = image_only_video_processor({"video_processor_type": "Qwen2VLVideoProcessor", "patch_size": patch,
                                        "merge_size": merge, "temporal_patch_size": 2, "size": size})
    proc = Qwen2VLProcessor(image_processor=image_proc, tokenizer=tok, video_processor=video,
                            chat_template=QWEN2_VL_CHAT_TEMPLATE)
    return model, proc


def _llava_onevision(corpus: list[str] | None, vocab: int, image: int, seed: int, widths: tuple[dict, dict]):
    text, vision = widths
    import torch
    from transformers import LlavaOnevisionConfig, LlavaOnevisionForConditionalGeneration, LlavaOnevisionProcessor
    from transformers.models.llava_onevision.image_processing_pil_llava_onevision import (
        LlavaOnevisionImageProcessorPil,
    )

    from ..engine.modeling.processors import image_only_video_processor

    lines = [f"<|im_start|>user\n<image>\n{w}<|im_end|>\n<|im_start|>assistant\n{v}<|im_end|>" for w, v in
             zip(_generic_corpus()[:40], _generic_corpus()[40:80])]
    tok = _fast_tokenizer(train_bpe(_family_corpus(corpus, lines), vocab, ONEVISION_TOKENS),
                          eos_token="<|im_end|>", pad_token="<|endoftext|>", image_token="<image>",
                          video_token="<video>")
    tile, patch = image // 2, 8
    pinpoints = [[tile * a, tile * b] for a in (1, 2) for b in (1, 2)]
    cfg = LlavaOnevisionConfig(
        vision_config=dict(model_type="siglip_vision_model", hidden_size=vision["hidden"],
                           intermediate_size=vision["inter"], num_hidden_layers=vision["layers"],
                           num_attention_heads=vision["heads"], image_size=tile, patch_size=patch),
        text_config=dict(model_type="qwen2", vocab_size=len(tok), hidden_size=text["hidden"],
                         num_hidden_layers=text["layers"], num_attention_heads=text["heads"],
                         num_key_value_heads=text["kv_heads"], intermediate_size=text["inter"],
                         max_position_embeddings=2048, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id),
        image_token_index=tok.convert_tokens_to_ids("<image>"), video_token_index=tok.convert_tokens_to_ids("<video>"),
        vision_feature_select_strategy="full", vision_feature_layer=-1, image_grid_pinpoints=pinpoints,
        vision_aspect_ratio="anyres_max_9")
    torch.manual_seed(seed)
    model = LlavaOnevisionForConditionalGeneration(cfg)
    _set_generation(model, tok)
    image_proc = LlavaOnevisionImageProcessorPil(size={"height": tile, "width": tile}, image_grid_pinpoints=pinpoints)
    video = image_only_video_processor({"video_processor_type": "LlavaOnevisionVideoProcessor",
                                        "size": {"height": tile, "width": tile}})
    proc = LlavaOnevisionProcessor(image_processor=image_proc, tokenizer=tok, video_processor=video,
                                   num_image_tokens=(tile // patch) ** 2, vision_feature_select_strategy="full",
                                   chat_template=ONEVISION_CHAT_TEMPLATE, vision_aspect_ratio="anyres_max_9")
    return model, proc


def _idefics3(corpus: list[str] | None, vocab: int, image: int, seed: int, widths: tuple[dict, dict]):
    text, vision = widths
    import torch
    from transformers import Idefics3Config, Idefics3ForConditionalGeneration, Idefics3Processor
    from transformers.models.idefics3.image_processing_pil_idefics3 import Idefics3ImageProcessorPil

    lines = [f"<|begin_of_text|>User:<image>{w}<end_of_utterance>\nAssistant: {v}<end_of_utterance>" for w, v in
             zip(_generic_corpus()[:40], _generic_corpus()[40:80])]
    tok = _fast_tokenizer(train_bpe(_family_corpus(corpus, lines), vocab, IDEFICS3_TOKENS),
                          bos_token="<|begin_of_text|>", eos_token="<end_of_utterance>", pad_token="<pad>",
                          additional_special_tokens=IDEFICS3_TOKENS[3:])
    tile, patch, scale = image // 2, 8, 2
    cfg = Idefics3Config(
        vision_config=dict(hidden_size=vision["hidden"], intermediate_size=vision["inter"],
                           num_hidden_layers=vision["layers"], num_attention_heads=vision["heads"],
                           image_size=tile, patch_size=patch),
        text_config=dict(model_type="llama", vocab_size=len(tok), hidden_size=text["hidden"],
                         num_hidden_layers=text["layers"], num_attention_heads=text["heads"],
                         num_key_value_heads=text["kv_heads"], intermediate_size=text["inter"],
                         max_position_embeddings=2048, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                         pad_token_id=tok.pad_token_id),
        image_token_id=tok.convert_tokens_to_ids("<image>"), scale_factor=scale, pad_token_id=tok.pad_token_id)
    torch.manual_seed(seed)
    model = Idefics3ForConditionalGeneration(cfg)
    _set_generation(model, tok)
    # an image of `image` px is split into 2x2 tiles of `tile` px, plus the whole image at `tile` px
    image_proc = Idefics3ImageProcessorPil(size={"longest_edge": image}, max_image_size={"longest_edge": tile},
                                           do_image_splitting=True)
    proc = Idefics3Processor(image_processor=image_proc, tokenizer=tok,
                             image_seq_len=(tile // patch) ** 2 // scale ** 2, chat_template=IDEFICS3_CHAT_TEMPLATE)
    return model, proc


_BUILDERS = {"qwen2-vl": _qwen2_vl, "llava-onevision": _llava_onevision, "idefics3": _idefics3}


def build_family_base(family: str, out_dir: str | os.PathLike, seed: int = 0, corpus: list[str] | None = None,
                      image: int = 32, size: str = "test") -> Path:
    """Build and save a tiny random `family` model (model + processor) into `out_dir`.

    `image` is the side in pixels of the images it will see (32 for the tests, 64 for the
    demo): it sets the tiles and the largest resolution each processor keeps. `size` is a key
    of WIDTHS; "llava" is `tiny.build_tiny_base` (its own sizes, "test" meaning its "tiny").
    """
    from transformers.utils import logging as hf_logging

    from ..engine.errors import EngineError

    if family not in FAMILIES:
        raise EngineError(f"unknown model family {family!r}", hint=f"use one of {', '.join(FAMILIES)}")
    if size not in WIDTHS:
        raise EngineError(f"unknown size {size!r} of a family base", hint=f"use one of {', '.join(WIDTHS)}")
    if family == "llava":
        return build_tiny_base(out_dir, seed=seed, corpus=corpus)
    hf_logging.disable_progress_bar()
    model, proc = _BUILDERS[family](corpus, SIZES["tiny"]["vocab"], image, seed, WIDTHS[size])
    out = Path(out_dir)
    _save_in_place(model, proc, out)
    return out
