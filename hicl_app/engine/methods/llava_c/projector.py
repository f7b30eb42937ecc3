"""The vision-language projector: find it, tune it alone on caption data, save and restore it.

LLaVA-c's continual pretraining stage (our reading): before the fine-tuning sequence the
projector is tuned on image-caption pairs with the
language model and vision tower frozen; the tuned projector then serves every later stage and
evaluation. Tuning goes through the shared training loop, so it checkpoints and resumes like
any stage.

The projector is the module that carries the vision tower's features into the language model's
width, under the name its family gives it: `multi_modal_projector` (LLaVA-1.5, -NeXT,
-OneVision, Gemma 3, PaliGemma), `connector` (Idefics3, SmolVLM: pixel shuffle + linear),
`merger` (Qwen2-VL, Qwen2.5-VL: the MLP that merges 2x2 patches at the end of the tower).
A family without one of these (e.g. one that feeds patches to the language model directly)
cannot do this stage and says so.
"""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file
from torch import nn

from ....core.fsio import atomic_write_bytes
from ...config import TrainConfig
from ...errors import EngineError
from ...train.loop import TrainResult, train
from . import PROJECTOR_FILE

FILE = PROJECTOR_FILE
#: what the families call the module between the vision tower and the language model
PROJECTOR_NAMES = ("multi_modal_projector", "mm_projector", "connector", "merger")


def find_projector(model: nn.Module) -> tuple[str, nn.Module]:
    """(qualified name relative to the base model, module) of the multimodal projector."""
    base = model.get_base_model() if callable(getattr(model, "get_base_model", None)) else model
    hits = sorted((n for n, m in base.named_modules() if n.split(".")[-1] in PROJECTOR_NAMES
                   and any(True for _ in m.parameters())), key=len)
    if not hits:
        raise EngineError(f"{type(base).__name__} has no separate vision-language projector "
                          f"(no {', '.join(PROJECTOR_NAMES)} module)",
                          hint="run llava-c without --pretrain-task on this model family")
    return hits[0], base.get_submodule(hits[0])


def projector_state(model: nn.Module) -> dict[str, torch.Tensor]:
    name, module = find_projector(model)
    return {f"{name}.{k}": v.detach().to("cpu").contiguous() for k, v in module.state_dict().items()}


def save_projector(model: nn.Module, path: str | os.PathLike) -> Path:
    """Write the projector's tensors (names relative to the base model) atomically."""
    from safetensors.torch import save

    return atomic_write_bytes(path, save(projector_state(model)))


@torch.no_grad()
def load_projector(model: nn.Module, path: str | os.PathLike) -> None:
    """Copy saved projector tensors into `model`; EngineError if they do not fit."""
    name, module = find_projector(model)
    try:
        saved = load_file(str(path))
    except Exception as exc:
        raise EngineError(f"cannot read the projector file {path}: {exc}") from None
    own = module.state_dict()
    prefix = f"{name}."
    wanted = {k.removeprefix(prefix): v for k, v in saved.items() if k.startswith(prefix)}
    if set(wanted) != set(own) or any(wanted[k].shape != own[k].shape for k in own):
        raise EngineError(f"the projector in {path} does not fit this model's {name}",
                          hint="it was tuned for another base model")
    for key, tensor in own.items():
        tensor.copy_(wanted[key].to(tensor.device, tensor.dtype))


def tune_projector(model: nn.Module, processor: Any, records: list[dict], cfg: TrainConfig, *, steps: int,
                   lr: float, checkpoint_dir: str | os.PathLike | None, fingerprint: dict[str, Any]) -> TrainResult:
    """Train only the projector of `model` (not PEFT-wrapped) for `steps` steps at `lr`."""
    _, module = find_projector(model)
    for p in model.parameters():
        p.requires_grad_(False)
    for p in module.parameters():
        p.requires_grad_(True)
    param = next(module.parameters())
    pre_cfg = replace(cfg, lr=lr, max_steps=steps, epochs=1)
    try:
        return train(model, processor, records, pre_cfg, device=param.device, dtype=param.dtype,
                     checkpoint_dir=checkpoint_dir, fingerprint={"purpose": "projector", **fingerprint})
    finally:
        for p in module.parameters():
            p.requires_grad_(False)


__all__ = ["FILE", "PROJECTOR_NAMES", "find_projector", "projector_state", "save_projector", "load_projector", "tune_projector"]
