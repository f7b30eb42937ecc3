"""One LoRA's raw factors per target module, read out of PEFT and written back.

An `Expert` (one task's LoRA, in HiDe's words) is keyed by module paths relative to the base
model, so it can be attached to a fresh base without PEFT, fused with others, compressed
(`truncate`) or compared, by any method. PEFT keeps the factors inside its layers
(`lora_A[name].weight`, `lora_B[name].weight`, `scaling[name]`) and has no API that hands them
out as one plain structure detached from the model: this module is that structure.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from ..errors import EngineError


@dataclass
class Expert:
    """One task's LoRA: module path -> (A [r, in], B [out, r]) and the path's scale (alpha / r)."""

    name: str
    factors: dict[str, tuple[torch.Tensor, torch.Tensor]]
    scales: dict[str, float]
    #: with `expert_rank`, the least share of a module's delta energy the truncation kept (1: untouched)
    energy_kept: float = 1.0

    def delta(self, path: str) -> torch.Tensor:
        """scale · B A of one module, in float32."""
        a, b = self.factors[path]
        return self.scales[path] * (b.float() @ a.float())

    def n_params(self, paths: list[str] | None = None) -> int:
        return sum(a.numel() + b.numel() for p, (a, b) in self.factors.items() if paths is None or p in paths)


@torch.no_grad()
def truncate(expert: Expert, rank: int) -> Expert:
    """`expert` with each module's B·A replaced by its best rank-`rank` approximation; its
    `energy_kept` is the least share of a module's ‖B·A‖²_F that the approximation keeps.

    Truncated SVD (Eckart-Young) through the factors, never the out x in product: with B = Q_b R_b
    and Aᵀ = Q_a R_a, B·A = Q_b (R_b R_aᵀ) Q_aᵀ, so only an r x r matrix is decomposed (cheap on a
    4096-wide layer). B' = U_k √S_k, A' = √S_k V_kᵀ, the scale kept. A module already at or under
    `rank` is left as it is.
    """
    factors, least = {}, expert.energy_kept
    for path, (a, b) in expert.factors.items():
        if a.shape[0] <= rank:
            factors[path] = (a, b)
            continue
        qb, rb = torch.linalg.qr(b.double())
        qa, ra = torch.linalg.qr(a.double().T)
        u, s, vh = torch.linalg.svd(rb @ ra.T)
        root = s[:rank].sqrt()
        factors[path] = ((root[:, None] * (qa @ vh[:rank].T).T).to(a.dtype).contiguous(),
                         ((qb @ u[:, :rank]) * root).to(b.dtype).contiguous())
        total = float((s ** 2).sum())
        if total > 0:
            least = min(least, float((s[:rank] ** 2).sum()) / total)
    return Expert(name=expert.name, factors=factors, scales=dict(expert.scales), energy_kept=least)


def unwrap_peft(model: nn.Module) -> nn.Module:
    """The model under a PEFT wrapper (the model itself when it has none)."""
    getter = getattr(model, "get_base_model", None)
    return getter() if callable(getter) else model


def from_peft(model: nn.Module, name: str) -> Expert:
    """The active LoRA adapter of a PEFT model as an Expert (factors copied to the CPU)."""
    from peft.tuners.lora import LoraLayer

    active = getattr(model, "active_adapter", "default")
    active = active[0] if isinstance(active, (list, tuple)) else active
    factors, scales = {}, {}
    for path, module in unwrap_peft(model).named_modules():
        if isinstance(module, LoraLayer) and active in module.lora_A:
            if getattr(module, "use_dora", {}).get(active, False):
                raise EngineError(f"module {path} uses DoRA, which a HiDe expert cannot hold", hint="train plain LoRA")
            a = module.lora_A[active].weight.detach().to("cpu", copy=True)
            b = module.lora_B[active].weight.detach().to("cpu", copy=True)
            factors[path], scales[path] = (a, b), float(module.scaling[active])
    if not factors:
        raise EngineError("the model carries no LoRA layers to read an expert from")
    return Expert(name=name, factors=factors, scales=scales)


@torch.no_grad()
def copy_into(model: nn.Module, expert: Expert) -> None:
    """Set the active LoRA of a PEFT model to `expert`'s factors (same modules, ranks and scales)."""
    from peft.tuners.lora import LoraLayer

    active = getattr(model, "active_adapter", "default")
    active = active[0] if isinstance(active, (list, tuple)) else active
    layers = {p: m for p, m in unwrap_peft(model).named_modules() if isinstance(m, LoraLayer) and active in m.lora_A}
    if set(layers) != set(expert.factors):
        raise EngineError(f"expert {expert.name!r} targets other modules than the new LoRA",
                          hint="keep the same LoRA targets for the whole run")
    for path, module in layers.items():
        a, b = expert.factors[path]
        wa, wb = module.lora_A[active].weight, module.lora_B[active].weight
        if wa.shape != a.shape or wb.shape != b.shape or abs(float(module.scaling[active]) - expert.scales[path]) > 1e-12:
            raise EngineError(f"expert {expert.name!r} has another rank or scale at {path} than the new LoRA",
                              hint="keep the same rank and alpha for the whole run")
        wa.copy_(a.to(wa.device, wa.dtype))
        wb.copy_(b.to(wb.device, wb.dtype))


def from_adapter_dir(base: nn.Module, adapter_dir: str | os.PathLike, name: str) -> Expert:
    """Read a saved PEFT adapter by attaching it to `base` with PEFT, then detaching it again."""
    from .adapters import load_lora

    peft_model = load_lora(base, Path(adapter_dir))
    try:
        return from_peft(peft_model, name)
    finally:
        peft_model.unload()
