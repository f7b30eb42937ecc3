"""CKA analysis of a finished run: how similar its task models are, layer by layer.

The task models are a HiDe run's task experts (from its latest stage state), or, for any other
method, the model after each stage (its PEFT adapter). All of them see the same probe inputs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from ..config import ModelConfig
from ..errors import EngineError
from ..methods.hide.state import load_state
from ..modeling.lora_factors import from_adapter_dir
from ..modeling.models import decoder_layers, load_base
from .cka import KERNELS
from .probe import cka_by_layer, expert_features


def resolve_layers(layers: list[int] | None, n_layers: int) -> list[int]:
    if not layers:
        return list(range(n_layers))
    bad = [i for i in layers if not -n_layers <= i < n_layers]
    if bad:
        raise EngineError(f"layer(s) {bad} out of range: the model has {n_layers} decoder layers",
                          hint=f"use indices 0..{n_layers - 1} (negative counts from the top)")
    return sorted({i % n_layers for i in layers})


def run_cka(model: ModelConfig, probes: list[dict], *, hide_stage_dir: str | Path | None = None,
            adapters: list[tuple[str, str | Path]] | None = None, layers: list[int] | None = None,
            kernel: str = "linear", on_event: Callable[[dict], None] | None = None) -> dict[str, Any]:
    """{"labels", "kernel", "n_probe", "layers": {layer: {"matrix", "mean_cross"}}}.

    Give `hide_stage_dir` (its state's experts are the task models) or `adapters`
    ([(label, PEFT adapter folder)], one task model each).
    """
    emit = on_event or (lambda event: None)
    if (hide_stage_dir is None) == (adapters is None):
        raise EngineError("CKA analysis needs either a HiDe stage folder or a list of adapters")
    if len(probes) < 2:
        raise EngineError("CKA needs at least 2 probe samples")
    if kernel not in KERNELS:
        raise EngineError(f"unknown CKA kernel {kernel!r}", hint=f"use one of {', '.join(KERNELS)}")
    loaded = load_base(model)
    if hide_stage_dir is not None:
        experts = load_state(hide_stage_dir).experts
    else:
        experts = [from_adapter_dir(loaded.model, path, label) for label, path in adapters]
    if len(experts) < 2:
        raise EngineError(f"CKA compares task models and this run has {len(experts)}",
                          hint="analyse a run with at least two stages (joint training has one model)")
    chosen = resolve_layers(layers, len(decoder_layers(loaded.model)[1]))
    emit({"type": "log", "message": f"CKA ({kernel}) of {len(experts)} task models on {len(probes)} probes, "
                                    f"layers {', '.join(map(str, chosen))}"})
    feats = expert_features(loaded.model, loaded.processor, experts, probes, chosen, loaded.device, loaded.dtype)
    return {"labels": [e.name for e in experts], "kernel": kernel, "n_probe": len(probes),
            "layers": cka_by_layer(feats, kernel)}
