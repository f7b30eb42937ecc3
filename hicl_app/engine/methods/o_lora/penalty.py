"""O-LoRA's regulariser on the factors of the LoRA being trained, as the official code computes it.

    orth = Σ_modules Σ_{s<t} Σ_{j,k} |(A_s A_tᵀ)[j, k]|      (entrywise L1 of the r×r overlap)
    l2   = Σ_modules (‖A_t‖_F + ‖B_t‖_F)                    (Frobenius norms, not squared)
    penalty = λ₁ · orth + λ₂ · l2

`A_s` (r×in) are the frozen earlier tasks' down-projections, `A_t`, `B_t` the new task's factors.
The overlap is 0 exactly when every row of A_t is orthogonal to every row of every A_s, i.e. the
new task writes into input directions the earlier tasks do not read. Computed in float32 with
autocast off, so a bf16 run penalises the same number.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass
class Factors:
    """One target module's factors: the new task's A and B and the earlier tasks' A's."""

    new_a: torch.Tensor
    new_b: torch.Tensor
    old_a: list[torch.Tensor] = field(default_factory=list)


def orthogonality(modules: list[Factors]) -> torch.Tensor:
    """Σ_modules Σ_s Σ |A_s A_tᵀ| (0 without earlier tasks)."""
    total = None
    for m in modules:
        a_t = m.new_a.float()
        for a_s in m.old_a:
            term = (a_s.detach().float().to(a_t.device) @ a_t.T).abs().sum()
            total = term if total is None else total + term
    return total if total is not None else torch.zeros(())


def l2(modules: list[Factors]) -> torch.Tensor:
    """Σ_modules ‖A_t‖_F + ‖B_t‖_F."""
    terms = [torch.linalg.vector_norm(p.float()) for m in modules for p in (m.new_a, m.new_b)]
    return torch.stack(terms).sum() if terms else torch.zeros(())


def penalty(modules: list[Factors], lambda_orth: float, lambda_l2: float) -> torch.Tensor | None:
    """λ₁ · orth + λ₂ · l2, None when neither term can be non-zero."""
    has_old = any(m.old_a for m in modules)
    if not modules or ((lambda_orth == 0 or not has_old) and lambda_l2 == 0):
        return None
    device = modules[0].new_a.device
    with torch.autocast(device_type=device.type, enabled=False):
        total = torch.zeros((), device=device)
        if lambda_orth and has_old:
            total = total + lambda_orth * orthogonality(modules).to(device)
        if lambda_l2:
            total = total + lambda_l2 * l2(modules).to(device)
    return total
