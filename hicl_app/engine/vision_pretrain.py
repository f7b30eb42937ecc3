"""Supervised pretraining of a tiny model's vision tower on named image attributes.

A real MLLM's vision tower arrives pretrained (CLIP on web-scale pairs) and tells shapes, counts
and bar heights apart before any instruction tuning. A tiny tower trained only through a
caption loss does not: in the caption loss the few words that name a shape or a count are a
small share of the tokens, so after a minute of CPU pretraining it still names the shape at
chance. This step gives the tiny tower that "CLIP pretraining": one linear head per attribute
(e.g. kind of image, shape, colour, count, tallest bar) reads the flattened patch features the
projector will see, and the heads are thrown away afterwards. Only the tower is saved back.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

IGNORE = -100


def pretrain_vision(model_dir: str | os.PathLike, images: list, labels: dict[str, list[int]],
                    classes: dict[str, int], steps: int = 600, lr: float = 3e-3, batch_size: int = 64,
                    seed: int = 0, on_event: Callable[[dict], None] | None = None) -> dict[str, float]:
    """Train the vision tower of the model in `model_dir` in place; returns each head's accuracy.

    `labels[name][i]` is image i's class for attribute `name` (of `classes[name]`), or -100 where
    the attribute does not apply. Accuracies are measured on the training images after training.
    """
    import torch
    from torch import nn

    from .config import ModelConfig
    from .errors import EngineError
    from .models import load_base
    from .tiny import _save_in_place

    n = len(images)
    bad = [name for name, values in labels.items() if len(values) != n or name not in classes]
    if not n or bad:
        raise EngineError(f"vision pretraining needs one label per image for every attribute (bad: {bad or 'no images'})")
    loaded = load_base(ModelConfig(str(model_dir), device="cpu", dtype="float32"))
    model = loaded.model
    tower = model.model.vision_tower
    pixels = loaded.processor.image_processor(images, return_tensors="pt")["pixel_values"]
    targets = {name: torch.tensor(values) for name, values in labels.items()}
    torch.manual_seed(seed)
    with torch.no_grad():
        width = _patch_features(tower, pixels[:1]).shape[1]
    heads = nn.ModuleDict({name: nn.Linear(width, classes[name]) for name in labels})
    params = list(tower.parameters()) + list(heads.parameters())
    for p in tower.parameters():
        p.requires_grad_(True)
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.01)
    warmup = max(1, steps // 10)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / warmup) * 0.5 * (1 + torch.cos(torch.tensor(torch.pi * s / steps)).item()))
    gen = torch.Generator().manual_seed(seed)
    loss_fn = nn.CrossEntropyLoss(ignore_index=IGNORE)
    tower.train()
    for step in range(steps):
        idx = torch.randint(0, n, (min(batch_size, n),), generator=gen)
        feats = _patch_features(tower, pixels[idx])
        loss = sum(loss_fn(head(feats), targets[name][idx]) for name, head in heads.items()
                   if (targets[name][idx] != IGNORE).any())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        if on_event is not None and (step + 1) % 50 == 0:
            on_event({"kind": "vision_step", "step": step + 1, "total": steps, "loss": float(loss)})
    tower.eval()
    accuracy = {}
    with torch.no_grad():
        feats = torch.cat([_patch_features(tower, pixels[i:i + 256]) for i in range(0, n, 256)])
        for name, head in heads.items():
            keep = targets[name] != IGNORE
            pred = head(feats[keep]).argmax(-1)
            accuracy[name] = float((pred == targets[name][keep]).float().mean()) if keep.any() else float("nan")
    _save_in_place(model, loaded.processor, Path(model_dir))
    return accuracy


def _patch_features(tower, pixels):
    """The last layer's patch tokens (CLS dropped, as LLaVA's 'default' strategy), flattened."""
    hidden = tower(pixels, output_hidden_states=True).hidden_states[-1][:, 1:]
    return hidden.flatten(1)
