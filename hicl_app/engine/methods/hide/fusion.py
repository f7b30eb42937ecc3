"""Fusing the task experts of the general (non-expanded) layers into one weight update.

- `sum` (the official HiDe-LLaVA code): ΔW = (Σ_t s_t B_t)(Σ_t A_t), cross terms included;
- `mean-delta`: ΔW = mean_t s_t B_t A_t;
- `ties` (TIES-Merging): each task delta keeps its top `density` fraction of entries by
  magnitude, every entry takes the sign with the larger total mass, and the kept entries that
  agree with it are averaged.

`merge_into` adds ΔW to the base weight once (zero cost per token); `FusedDelta` is the
official code's way, rebuilding the fused update from the factors on every forward, kept so a
benchmark can measure what merging saves (the outputs are the same).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ...errors import EngineError
from ...modeling.lora_factors import Expert, unwrap_peft
from .experts import _weight_of
from .options import FUSIONS


def _factors(experts: list[Expert], path: str) -> tuple[list[torch.Tensor], list[torch.Tensor], list[float]]:
    missing = [e.name for e in experts if path not in e.factors]
    if missing:
        raise EngineError(f"expert(s) {', '.join(missing)} have no factors for {path}",
                          hint="every task expert must target the same modules (same run config)")
    return ([e.factors[path][0].float() for e in experts], [e.factors[path][1].float() for e in experts],
            [e.scales[path] for e in experts])


def sum_factors(experts: list[Expert], path: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(Σ A_t, Σ s_t B_t): the official fused LoRA pair; needs equal ranks."""
    a, b, s = _factors(experts, path)
    if len({x.shape for x in a}) != 1:
        raise EngineError(f"fusion 'sum' needs the same LoRA rank in every task expert ({path})",
                          hint="use --fusion mean-delta or ties when the ranks differ")
    return torch.stack(a).sum(0), sum(si * bi for si, bi in zip(s, b))


def ties_merge(deltas: list[torch.Tensor], density: float) -> torch.Tensor:
    """TIES-Merging of same-shaped task deltas (trim, elect sign, disjoint mean), scale 1."""
    if not 0.0 < density <= 1.0:
        raise EngineError(f"ties density must be in (0, 1], got {density}")
    trimmed = []
    for d in deltas:
        k = max(1, int(round(density * d.numel())))
        if k >= d.numel():
            trimmed.append(d)
            continue
        threshold = d.abs().flatten().kthvalue(d.numel() - k + 1).values
        trimmed.append(torch.where(d.abs() >= threshold, d, torch.zeros_like(d)))
    stacked = torch.stack(trimmed)
    sign = torch.sign(stacked.sum(0))
    agree = (torch.sign(stacked) == sign) & (stacked != 0)
    count = agree.sum(0).clamp_min(1)
    return (stacked * agree).sum(0) / count


def fused_delta(experts: list[Expert], path: str, fusion: str, ties_density: float = 0.2) -> torch.Tensor:
    """ΔW [out, in] of module `path`, float32."""
    if fusion == "sum":
        a, b = sum_factors(experts, path)
        return b @ a
    if fusion == "mean-delta":
        return torch.stack([e.delta(path) for e in experts]).mean(0)
    if fusion == "ties":
        return ties_merge([e.delta(path) for e in experts], ties_density)
    raise EngineError(f"unknown fusion {fusion!r}", hint=f"use one of {', '.join(FUSIONS)}")


@torch.no_grad()
def merge_into(model: nn.Module, experts: list[Expert], paths: list[str], fusion: str, ties_density: float) -> None:
    """Add the fused ΔW of every module in `paths` to its base weight, in place."""
    base = unwrap_peft(model)
    for path in paths:
        weight = _weight_of(base.get_submodule(path))
        delta = fused_delta(experts, path, fusion, ties_density).to(weight.device)
        weight.copy_((weight.float() + delta).to(weight.dtype))


@dataclass
class FusedDelta:
    """Forward hook that rebuilds the fused update from the experts' factors on every call."""

    a: torch.Tensor  # [T, r, in]  (sum, mean-delta)  or unused (ties)
    b: torch.Tensor  # [T, out, r]
    scales: torch.Tensor  # [T]
    fusion: str
    ties_density: float

    def __call__(self, module: nn.Module, args: tuple, output: torch.Tensor) -> torch.Tensor:
        x = args[0]
        if self.fusion == "sum":
            a_sum = self.a.sum(0)
            b_sum = (self.b * self.scales.view(-1, 1, 1)).sum(0)
            return output + (x @ a_sum.T) @ b_sum.T
        if self.fusion == "mean-delta":
            coef = (self.scales / len(self.scales)).repeat_interleave(self.a.shape[1])
            return output + ((x @ self.a.flatten(0, 1).T) * coef) @ self.b.transpose(0, 1).flatten(1).T
        deltas = [s * (b.float() @ a.float()) for a, b, s in zip(self.a, self.b, self.scales)]
        return output + x @ ties_merge(deltas, self.ties_density).to(x.dtype).T


def attach_fused(model: nn.Module, experts: list[Expert], paths: list[str], fusion: str, ties_density: float) -> list:
    """Register a per-forward FusedDelta hook on each module in `paths`; returns the hook handles."""
    if fusion not in FUSIONS:
        raise EngineError(f"unknown fusion {fusion!r}", hint=f"use one of {', '.join(FUSIONS)}")
    base = unwrap_peft(model)
    handles = []
    for path in paths:
        module = base.get_submodule(path)
        weight = _weight_of(module)
        a, b, s = _factors(experts, path)
        if len({x.shape for x in a}) != 1:
            raise EngineError(f"per-forward fusion needs the same LoRA rank in every task expert ({path})",
                              hint="use merge_fused=true")
        hook = FusedDelta(torch.stack(a).to(weight.device, weight.dtype), torch.stack(b).to(weight.device, weight.dtype),
                          torch.tensor(s).to(weight.device, weight.dtype), fusion, ties_density)
        handles.append(module.register_forward_hook(hook))
    return handles
