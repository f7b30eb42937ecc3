"""The HiDe model after stage t: fused general layers, routed task experts in the expanded ones.

`build` turns a plain base model into it in place: the fused ΔW of every non-expanded target
module is added to the base weight once (or, with merge_fused=False, rebuilt on every forward
like the official code), each expanded module gets a `RoutedDelta` hook over experts 1..t, and
the model gets a `RoutingHook` that sets the per-sample weights at prefill. The result is still
the base model class, so `generate`, the evaluation code and PEFT-free loading all just work.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from ...errors import EngineError
from ...modeling.lora_factors import Expert, unwrap_peft
from ...modeling.models import decoder_layers
from .experts import RoutingState, attach_routed
from .fusion import attach_fused, merge_into
from .routing import RoutingHook, routed_generate

HANDLE_ATTR = "hicl_hide"


@dataclass
class HideHandle:
    """What `build` attached to a model: routing state, hook handles and the layer split."""

    state: RoutingState
    router: RoutingHook
    expanded_paths: list[str]
    fused_paths: list[str]
    hooks: list = field(default_factory=list)

    @property
    def last_weights(self) -> torch.Tensor | None:
        """Routing weights [batch, tasks] of the latest prefill."""
        return self.state.weights


def layer_index(path: str, prefix: str) -> int:
    rest = path[len(prefix) + 1:] if path.startswith(prefix + ".") else ""
    head = rest.split(".", 1)[0]
    if not head.isdigit():
        raise EngineError(f"module {path} is not inside a decoder layer of {prefix}")
    return int(head)


def split_paths(model: nn.Module, paths: list[str], expanded_layers: list[int]) -> tuple[list[str], list[str]]:
    """(expanded, fused) module paths by decoder layer."""
    prefix, _ = decoder_layers(unwrap_peft(model))
    expanded = [p for p in paths if layer_index(p, prefix) in set(expanded_layers)]
    return expanded, [p for p in paths if p not in set(expanded)]


def resolve_expand(expand: str, n_layers: int) -> list[int] | None:
    """Layer indices for `top` or a list "0,3,-1"; None for `auto` (decided from CKA)."""
    text = str(expand).strip().lower()
    if text == "top":
        return [n_layers - 1]
    if text == "auto":
        return None
    try:
        raw = [int(x) for x in text.replace(" ", "").split(",") if x != ""]
    except ValueError:
        raise EngineError(f"expand must be top, auto or a comma-separated list of layer indices, not {expand!r}",
                          hint="e.g. --expand top, --expand auto or --expand 10,11") from None
    if not raw:
        raise EngineError("expand lists no layer", hint="e.g. --expand 11 or --expand top")
    bad = [i for i in raw if not -n_layers <= i < n_layers]
    if bad:
        raise EngineError(f"expand layer(s) {bad} out of range: the model has {n_layers} decoder layers",
                          hint=f"use indices 0..{n_layers - 1} (negative counts from the top)")
    return sorted({i % n_layers for i in raw})


def build(model: nn.Module, experts: list[Expert], anchors_img: torch.Tensor | None, anchors_txt: torch.Tensor,
          encoder: Any, expanded_layers: list[int], *, tau: float, fusion: str, merge_fused: bool,
          ties_density: float, routing: str = "soft", merge_top1: bool = False) -> nn.Module:
    """Turn the plain base `model` into the HiDe model of `experts` (in place) and return it."""
    if getattr(model, HANDLE_ATTR, None) is not None:
        raise EngineError("this model already carries HiDe experts", hint="build from a freshly loaded base")
    if not experts:
        raise EngineError("a HiDe model needs at least one task expert")
    paths = sorted(experts[0].factors)
    expanded, fused = split_paths(model, paths, expanded_layers)
    state = RoutingState(len(experts), top1=routing == "top1")
    hooks = []
    if fused:
        if merge_fused:
            merge_into(model, experts, fused, fusion, ties_density)
        else:
            hooks += attach_fused(model, experts, fused, fusion, ties_density)
    hooks += attach_routed(model, experts, expanded, state, merge_top1=merge_top1)
    dev = next(model.parameters()).device
    router = RoutingHook.for_model(model, encoder, None if anchors_img is None else anchors_img.to(dev),
                                   anchors_txt.to(dev), tau, state)
    hooks.append(model.register_forward_pre_hook(router, with_kwargs=True))
    model.generate = routed_generate(model, router)
    setattr(model, HANDLE_ATTR, HideHandle(state, router, expanded, fused, hooks))
    return model


def handle_of(model: nn.Module) -> HideHandle:
    handle = getattr(model, HANDLE_ATTR, None)
    if handle is None:
        raise EngineError("this model is not a HiDe model")
    return handle
