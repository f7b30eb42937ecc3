"""What the benchmarks need from HiDe: its model from a stage folder, its cost, and its size.

`inference_ratio` times batched greedy generation of the HiDe model of a stage against the base
model with one LoRA merged into it (the stage's own adapter: the cheapest model a LoRA method
can serve), on the same records and settings; `param_report` counts what a stage keeps.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from ..engine.config import EvalConfig, ModelConfig
from ..engine.eval.generate import generate_answers
from ..engine.methods.hide.model import handle_of
from ..engine.methods.hide.state import load_state
from ..engine.modeling.models import LoadedModel, load_base


def _model_config(base: str | ModelConfig) -> ModelConfig:
    return base if isinstance(base, ModelConfig) else ModelConfig(str(base))


def build_eval_model(base: str | ModelConfig, stage_dir: str | Path,
                     options: dict[str, Any] | None = None) -> tuple[LoadedModel, nn.Module]:
    """(loaded base with processor, the HiDe model of `stage_dir`) with the method's `options`."""
    from ..engine.methods import get_method

    loaded = load_base(_model_config(base))
    return loaded, get_method("hide", options).load(loaded.model, Path(stage_dir))


def merged_lora_model(base: str | ModelConfig, adapter_dir: str | Path) -> tuple[LoadedModel, nn.Module]:
    """The base with one PEFT adapter merged into its weights (no adapter cost per token)."""
    from ..engine.modeling.adapters import load_lora

    loaded = load_base(_model_config(base))
    return loaded, load_lora(loaded.model, Path(adapter_dir)).merge_and_unload()


def _timed(model: nn.Module, loaded: LoadedModel, records: list[dict], cfg: EvalConfig,
           clock: Callable[[], float]) -> tuple[float, list[str]]:
    sync = (lambda: torch.cuda.synchronize(loaded.device)) if loaded.device.type == "cuda" else (lambda: None)
    sync()
    t0 = clock()
    answers = generate_answers(model, loaded.processor, records, cfg, device=loaded.device, dtype=loaded.dtype)
    sync()
    return clock() - t0, answers


def inference_ratio(base: str | ModelConfig, stage_dir: str | Path, records: list[dict], *,
                    options: dict[str, Any] | None = None, eval_cfg: EvalConfig | None = None,
                    repeats: int = 3, clock: Callable[[], float] = time.perf_counter) -> dict[str, Any]:
    """Time of the HiDe model over time of base + the stage's LoRA merged, same batch and settings.

    Both models are loaded side by side and timed in alternation (best of `repeats` each, after
    one warm-up), so a change in machine load hits both. `clock` is wall time by default; on a
    shared CPU, `time.process_time` with one torch thread is steadier (CUDA is synchronised
    around each reading either way). Returns {"hide_s", "merged_lora_s", "ratio", "n",
    "batch_size", "max_new_tokens", "same_answers"}: the two models answer alike only when the
    routed experts agree with the stage's own, so `max_new_tokens` is what bounds both.
    """
    cfg = eval_cfg or EvalConfig(batch_size=len(records), max_new_tokens=16)
    lora_loaded, lora = merged_lora_model(base, Path(stage_dir) / "adapter")
    hide_loaded, hide = build_eval_model(base, stage_dir, options)
    _timed(lora, lora_loaded, records, cfg, clock)
    _timed(hide, hide_loaded, records, cfg, clock)
    best = {"lora": float("inf"), "hide": float("inf")}
    answers = {}
    for _ in range(repeats):
        for name, model, loaded in (("lora", lora, lora_loaded), ("hide", hide, hide_loaded)):
            seconds, answers[name] = _timed(model, loaded, records, cfg, clock)
            best[name] = min(best[name], seconds)
    return {"hide_s": best["hide"], "merged_lora_s": best["lora"], "ratio": best["hide"] / best["lora"],
            "n": len(records), "batch_size": cfg.batch_size, "max_new_tokens": cfg.max_new_tokens,
            "same_answers": answers["hide"] == answers["lora"]}


def _layer_of(path: str) -> int:
    return next(int(part) for part in path.split(".") if part.isdigit())


def _adapter_params(stage_dir: Path) -> int:
    """Parameters of the stage's saved PEFT adapter (0 when there is none)."""
    from safetensors import safe_open

    from ..engine.methods.lora.single import ADAPTER

    path = stage_dir / ADAPTER / "adapter_model.safetensors"
    if not path.is_file():
        return 0
    with safe_open(str(path), framework="pt") as f:
        return sum(math.prod(f.get_slice(k).get_shape()) for k in f.keys())


def param_report(stage_dir: str | Path, model: nn.Module | None = None) -> dict[str, Any]:
    """Parameter counts of a stage's HiDe model.

    - `one_adapter`: one task's LoRA at the trained rank on every target layer (= a seq-lora
      adapter; the stage's PEFT adapter, whatever `expert_rank` the state keeps);
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
    one = _adapter_params(Path(stage_dir)) or state.experts[-1].n_params()
    top = sum(e.n_params(expanded) for e in state.experts)
    return {"tasks": len(state.experts), "one_adapter": one, "expanded_experts": top,
            "kept": state.experts[-1].n_params(fused) + top,
            "stored_factors": sum(e.n_params() for e in state.experts),
            "anchors": int(state.anchors_txt.numel() + (0 if state.anchors_img is None else state.anchors_img.numel())),
            "expanded_layers": state.expanded_layers}
