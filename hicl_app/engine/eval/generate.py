"""Batched greedy generation that gives the same answers as one-by-one generation.

Prompts are left-padded (so every row's next token sits in the last column), sorted by length
so padding stays small, and the generated tail is cut at the first end-of-sequence token.
"""

from __future__ import annotations

from typing import Any, Callable

import torch
from torch import nn

from ..config import EvalConfig
from ..data.encoding import Encoder, collate
from ..data.vision_cache import vision_feature_cache


def stop_ids(model: nn.Module, tokenizer: Any) -> set[int]:
    """Every id that ends an answer: the tokenizer's eos and the generation config's."""
    ids = {tokenizer.eos_token_id}
    gen = getattr(model, "generation_config", None)
    eos = getattr(gen, "eos_token_id", None)
    ids.update(eos if isinstance(eos, (list, tuple)) else [eos])
    return {i for i in ids if i is not None}


@torch.no_grad()
def generate_answers(model: nn.Module, processor: Any, records: list[dict], cfg: EvalConfig, *,
                     device: torch.device, dtype: torch.dtype,
                     on_batch: Callable[[int], None] | None = None) -> list[str]:
    """Greedy answers for `records`, in their order. `on_batch(done)` after every batch.

    `on_batch` may raise (e.g. `Stopped`) to abandon the work between batches.
    """
    tokenizer = processor.tokenizer
    encoder = Encoder(processor, max_length=10**9)
    stops = stop_ids(model, tokenizer)
    pad_id = tokenizer.pad_token_id
    was_training = model.training
    model.eval()
    prompts = [encoder.encode(r, with_answer=False) for r in records]
    order = sorted(range(len(records)), key=lambda i: len(prompts[i].input_ids))
    answers: list[str] = [""] * len(records)
    with vision_feature_cache(model, cfg.cache_vision):
        try:
            for start in range(0, len(order), cfg.batch_size):
                chunk = order[start:start + cfg.batch_size]
                batch = collate([prompts[i] for i in chunk], pad_id, "left")
                batch.pop("labels")
                inputs = {k: (v.to(device, dtype) if v.is_floating_point() else v.to(device)) for k, v in batch.items()}
                out = model.generate(**inputs, max_new_tokens=cfg.max_new_tokens, do_sample=False,
                                     pad_token_id=pad_id, eos_token_id=sorted(stops))
                width = batch["input_ids"].shape[1]
                for i, row in zip(chunk, out[:, width:].tolist()):
                    cut = next((k for k, t in enumerate(row) if t in stops), len(row))
                    answers[i] = tokenizer.decode(row[:cut], skip_special_tokens=True).strip()
                if on_batch is not None:
                    on_batch(min(start + cfg.batch_size, len(order)))
        finally:
            model.train(was_training)
    return answers
