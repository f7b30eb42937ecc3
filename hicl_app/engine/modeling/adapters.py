"""LoRA adapters in PEFT's own layout: create, reload, save atomically.

Saved adapters are plain `adapter_config.json` + `adapter_model.safetensors`, so
`PeftModel.from_pretrained(base, adapter_dir)` loads them with no hicl code at all.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from torch import nn

from ...core.fsio import publish_dir, sha256_file, staging_dir
from ..config import TrainConfig
from ..errors import EngineError
from .models import lora_target_regex


def new_lora(model: nn.Module, cfg: TrainConfig):
    """Wrap `model` with a fresh LoRA on the language model's decoder linears only."""
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(r=cfg.rank, lora_alpha=cfg.alpha, lora_dropout=cfg.dropout, bias="none",
                        target_modules=lora_target_regex(model, cfg.targets))
    return get_peft_model(model, config)


def load_lora(model: nn.Module, adapter_dir: str | os.PathLike, trainable: bool = False):
    """Attach a saved adapter (PEFT layout) to `model`."""
    from peft import PeftModel

    adapter_dir = Path(adapter_dir)
    if not (adapter_dir / "adapter_config.json").is_file():
        raise EngineError(f"no adapter in {adapter_dir} (adapter_config.json missing)",
                          hint="the previous stage must finish before this one starts")
    try:
        return PeftModel.from_pretrained(model, adapter_dir, is_trainable=trainable)
    except Exception as exc:  # shape mismatch, bad JSON, unreadable safetensors
        raise EngineError(f"cannot load the adapter in {adapter_dir}: {type(exc).__name__}: {exc}") from exc


def save_adapter(model: nn.Module, adapter_dir: str | os.PathLike, adapter: str | None = None) -> dict[str, str]:
    """Write the PEFT adapter to a staging folder, fsync, rename over `adapter_dir`.

    `adapter` names one adapter of a model that holds several (PEFT would write a named one into
    a sub-folder of its own); it is then saved alone, as a plain adapter folder.
    Returns {file name: sha256} of what was written.
    """
    adapter_dir = Path(adapter_dir)
    stage = staging_dir(adapter_dir)
    try:
        if adapter is None:
            model.save_pretrained(stage)
            written = stage
        else:
            model.save_pretrained(stage, selected_adapters=[adapter])
            written = stage if adapter == "default" else stage / adapter
        hashes = {p.name: sha256_file(p) for p in sorted(written.iterdir()) if p.is_file()}
        publish_dir(written, adapter_dir)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    return hashes


def lora_module_names(model: nn.Module) -> list[str]:
    """Qualified names of every module that carries LoRA factors."""
    from peft.tuners.lora import LoraLayer

    return [n for n, m in model.named_modules() if isinstance(m, LoraLayer)]
