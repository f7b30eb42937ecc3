"""What the benchmarks need from HiDe: its model from a stage folder, its cost, and its size.

`inference_ratio` times batched greedy generation of the HiDe model of a stage against the base
model with one LoRA merged into it (the stage's own adapter: the cheapest model a LoRA method
can serve), on the same records and settings; `param_report` counts what a stage keeps.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..config import EvalConfig, ModelConfig
from ..generate import generate_answers
from ..models import LoadedModel, load_base
from .model import handle_of
from .state import load_state


def _model_config(base: str | ModelConfig) -> ModelConfig:
    return base if isinstance(base, ModelConfig) else ModelConfig(str(base))


def build_eval_model(base: str | ModelConfig, stage_dir: str | Path,
                     options: dict[str, Any] | None = None) -> tuple[LoadedModel, nn.Module]:
    """(loaded base with processor, the HiDe model of `stage_dir`) with the method's `options`."""
    from ..methods import get_method

    loaded = load_base(_model_config(base))
    return loaded, get_method("hide", options).load(loaded.model, Path(stage_dir))


def merged_lora_model(base: str | ModelConfig, adapter_dir: str | Path) -> tuple[LoadedModel, nn.Module]:
    """The base with one PEFT adapter merged into its weights (no adapter cost per token)."""
    from ..adapters import load_lora

    loaded = load_base(_model_config(base))
    return loaded, load_lora(loaded.model, Path(adapter_dir)).merge_and_unload()


def time_generation(model: nn.Module, loaded: LoadedModel, records: list[dict], cfg: EvalConfig,
                    repeats: int = 3) -> tuple[float, list[str]]:
    """(best wall seconds over `repeats` after one warm-up, the answers) of batched generation."""
    answers = generate_answers(model, loaded.processor, records, cfg, device=loaded.device, dtype=loaded.dtype)
    best = float("inf")
    for _ in range(repeats):
        if loaded.device.type == "cuda":
            torch.cuda.synchronize(loaded.device)
        t0 = time.perf_counter()
        generate_answers(model, loaded.processor, records, cfg, device=loaded.device, dtype=loaded.dtype)
        if loaded.device.type == "cuda":
            torch.cuda.synchronize(loaded.device)
        best = min(best, time.perf_counter() - t0)
    return best, answers


def inference_ratio(base: str | ModelConfig, stage_dir: str | Path, records: list[dict], *,
                    options: dict[str, Any] | None = None, eval_cfg: EvalConfig | None = None,
                    repeats: int = 3) -> dict[str, Any]:
    """Time of the HiDe model over time of base + the stage's LoRA merged, same batch and settings.

    Returns {"hide_s", "merged_lora_s", "ratio", "n", "batch_size", "max_new_tokens"}. Both
    generate the same number of tokens only if they answer alike; `max_new_tokens` bounds both.
    """
    cfg = eval_cfg or EvalConfig(batch_size=len(records), max_new_tokens=16)
    loaded, lora = merged_lora_model(base, Path(stage_dir) / "adapter")
    lora_s, _ = time_generation(lora, loaded, records, cfg, repeats)
    del lora, loaded
    loaded, hide = build_eval_model(base, stage_dir, options)
    hide_s, _ = time_generation(hide, loaded, records, cfg, repeats)
    return {"hide_s": hide_s, "merged_lora_s": lora_s, "ratio": hide_s / lora_s, "n": len(records),
            "batch_size": cfg.batch_size, "max_new_tokens": cfg.max_new_tokens}


def _layer_of(path: str) -> int:
    return next(int(part) for part in path.split(".") if part.isdigit())


def param_report(stage_dir: str | Path, model: nn.Module | None = None) -> dict[str, Any]:
    """Parameter counts of a stage's HiDe model.

    - `one_adapter`: one task expert on every target layer (= a seq-lora adapter);
    - `expanded_experts`: the t experts of the expanded layers (the extra weights at inference:
      the fused layers are merged into the base weights);
    - `kept`: the fused layers as one adapter-sized pair (ΣA, ΣB, the official form) plus the
      expanded experts: what the official code keeps;
    - `stored_factors`: every expert on every layer, as the state stores them so that later
      stages can re-fuse and re-choose the expanded layers.
    With `model` (a HiDe model built from this stage) the expanded split is the model's.
    """
    state = load_state(stage_dir)
    paths = list(state.experts[0].factors)
    if model is not None:
        expanded = handle_of(model).expanded_paths
    else:
        expanded = [p for p in paths if _layer_of(p) in set(state.expanded_layers)]
    fused = [p for p in paths if p not in set(expanded)]
    one = state.experts[-1].n_params()
    top = sum(e.n_params(expanded) for e in state.experts)
    return {"tasks": len(state.experts), "one_adapter": one, "expanded_experts": top,
            "kept": state.experts[-1].n_params(fused) + top,
            "stored_factors": sum(e.n_params() for e in state.experts),
            "anchors": int(state.anchors_txt.numel() + (0 if state.anchors_img is None else state.anchors_img.numel())),
            "expanded_layers": state.expanded_layers}
