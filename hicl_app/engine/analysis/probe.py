"""CKA between task models on the SAME probe inputs, per decoder layer.

The probe set is a fixed sample of every task's training records (the official script fed each
model its own task's data, which compares inputs as much as models). A task's model is the base
plus that task's expert on every target layer, run as the routed model with one-hot weights;
a layer's feature of a sample is the mean over its prompt tokens of the layer's output (prefill).
"""

from __future__ import annotations

import math
import random
from typing import Any

import torch
from torch import nn

from ..errors import EngineError
from ..methods.hide.experts import RoutingState, attach_routed
from ..modeling.lora_factors import Expert, unwrap_peft
from ..modeling.models import decoder_layers
from .cka import cka_matrix, mean_cross

PROBE_KEYS = ("id", "image", "question", "answer", "history")


def pick_probes(records: list[dict], n: int, seed: int, task: str) -> list[dict]:
    """A fixed sample of up to n records of `task`, the same whenever asked with the same inputs."""
    order = list(range(len(records)))
    random.Random(f"hicl-probe:{seed}:{task}").shuffle(order)
    return [{k: records[i].get(k, [] if k == "history" else "") for k in PROBE_KEYS} for i in sorted(order[:n])]


def _output_tensor(output: Any) -> torch.Tensor:
    return output[0] if isinstance(output, (tuple, list)) else output


@torch.no_grad()
def layer_features(model: nn.Module, processor: Any, records: list[dict], layers: list[int], device: torch.device,
                   dtype: torch.dtype, batch_size: int = 16) -> dict[int, torch.Tensor]:
    """{layer: [n, hidden]} mean over each prompt's tokens of the decoder layer's output."""
    from ..data.encoding import Encoder, collate

    base = unwrap_peft(model)
    _, blocks = decoder_layers(base)
    bad = [l_ for l_ in layers if not 0 <= l_ < len(blocks)]
    if bad:
        raise EngineError(f"layer(s) {bad} out of range: the model has {len(blocks)} decoder layers (0-{len(blocks) - 1})")
    enc = Encoder(processor, max_length=10**9)
    pad_id = processor.tokenizer.pad_token_id
    captured: dict[int, torch.Tensor] = {}
    mask_box: list[torch.Tensor] = []

    def hook_for(index: int):
        def hook(_module, _args, output):
            h = _output_tensor(output).float()
            m = mask_box[0].to(h.device).unsqueeze(-1).float()
            captured[index] = ((h * m).sum(1) / m.sum(1).clamp_min(1.0)).cpu()
        return hook

    handles = [blocks[i].register_forward_hook(hook_for(i)) for i in layers]
    out: dict[int, list[torch.Tensor]] = {i: [] for i in layers}
    was_training = base.training
    base.eval()
    try:
        for start in range(0, len(records), batch_size):
            batch = collate([enc.encode(r, with_answer=False) for r in records[start:start + batch_size]], pad_id, "right")
            batch.pop("labels")
            mask_box[:] = [batch["attention_mask"]]
            inputs = {k: (v.to(device, dtype) if v.is_floating_point() else v.to(device)) for k, v in batch.items()}
            base(**inputs, use_cache=False)
            for i in layers:
                out[i].append(captured.pop(i))
    finally:
        for h in handles:
            h.remove()
        base.train(was_training)
    return {i: torch.cat(v) for i, v in out.items()}


def expert_features(model: nn.Module, processor: Any, experts: list[Expert], probes: list[dict], layers: list[int],
                    device: torch.device, dtype: torch.dtype) -> list[dict[int, torch.Tensor]]:
    """Per expert, {layer: features on `probes`} of base + that expert on every target module.

    `model` must be the plain base, or a PEFT model with its own adapters disabled.
    """
    paths = sorted(experts[0].factors)
    if any(sorted(e.factors) != paths for e in experts):
        raise EngineError("the task experts target different modules; CKA compares like with like",
                          hint="every stage must use the same LoRA targets")
    state = RoutingState(len(experts))
    handles = attach_routed(model, experts, paths, state)
    try:
        feats = []
        for i in range(len(experts)):
            state.fixed = torch.nn.functional.one_hot(torch.tensor(i), len(experts)).float()
            feats.append(layer_features(model, processor, probes, layers, device, dtype))
        return feats
    finally:
        for h in handles:
            h.remove()


def cka_by_layer(features: list[dict[int, torch.Tensor]], kernel: str) -> dict[int, dict[str, Any]]:
    """{layer: {"matrix": models × models CKA, "mean_cross": off-diagonal mean}}."""
    layers = sorted(features[0])
    result = {}
    for layer in layers:
        matrix = cka_matrix([f[layer] for f in features], kernel)
        result[layer] = {"matrix": matrix, "mean_cross": mean_cross(matrix)}
    return result


def low_similarity_layers(cka: dict[int, dict[str, Any]], threshold: float) -> list[int]:
    """Layers whose mean cross-task CKA is under `threshold` (the task-specific ones)."""
    def under(value: float | None) -> bool:
        return value is not None and not math.isnan(value) and value < threshold

    return sorted(layer for layer, v in cka.items() if under(v["mean_cross"]))
