"""The model config of a built-in tiny base, without building its tokenizer or its weights.

`hicl estimate --base tiny` sizes a built-in base from its config alone, as it does a real
model's folder; building the base itself would train a tokenizer and save weights for nothing.
The config is the one `tiny.build_tiny_base` makes, with the vocabulary at its target size and
the special tokens where a tokenizer trained there puts them (first, in SPECIAL_TOKENS order).
"""

from __future__ import annotations

from .tiny import SIZES, SPECIAL_TOKENS


def tiny_config(size: str):
    """The `LlavaConfig` of built-in base `size` (a key of `tiny.SIZES`)."""
    from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig

    from ..engine.errors import EngineError

    if size not in SIZES:
        raise EngineError(f"unknown tiny model size {size!r}", hint=f"use one of {', '.join(SIZES)}")
    s = SIZES[size]
    ids = {t: SPECIAL_TOKENS.index(t) for t in SPECIAL_TOKENS}
    vision = CLIPVisionConfig(image_size=s["img"], patch_size=s["patch"], hidden_size=s["v_hidden"],
                              num_hidden_layers=s["v_layers"], num_attention_heads=s["v_heads"],
                              intermediate_size=s["v_inter"], projection_dim=s["v_hidden"])
    text = LlamaConfig(vocab_size=s["vocab"], hidden_size=s["t_hidden"], num_hidden_layers=s["t_layers"],
                       num_attention_heads=s["t_heads"], num_key_value_heads=s["t_heads"],
                       intermediate_size=s["t_inter"], max_position_embeddings=2048,
                       bos_token_id=ids["<s>"], eos_token_id=ids["</s>"], pad_token_id=ids["<pad>"],
                       tie_word_embeddings=False)
    return LlavaConfig(vision_config=vision, text_config=text, image_token_index=ids["<image>"],
                       image_seq_length=(s["img"] // s["patch"]) ** 2, vision_feature_layer=-1,
                       vision_feature_select_strategy="default")
