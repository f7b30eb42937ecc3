"""Spectral-Aware Consolidation (SAC, LLaVA-c): fold each task's LoRA delta into one bounded-rank
consolidated delta per layer, without letting shared directions add up.

Our reading of the method (the paper's code is not published; the equations are in `method.py`). Per
adapted linear layer, with `D` the consolidated delta of the earlier tasks and
`Δ = scale · B A` the new task's LoRA delta:

    D + Δ = U S Vᵀ                                   (thin SVD)
    p_k = |u_kᵀ D v_k|,  q_k = |u_kᵀ Δ v_k|          (what each side puts on direction k)
    c_k = (p_k + q_k) / max(p_k, q_k)                (1 when one side owns k, 2 when both equal)
    D' = Σ_{k in top r} (σ_k / c_k^γ) u_k v_kᵀ       (the r largest calibrated values)

so directions one task owns add unchanged, a direction both hold equally is not doubled, and
the rank stays at most `r` whatever the number of tasks.

`overlap="aligned"` measures the two contributions as vectors instead of their projections on
(u_k, v_k): with a_k = D v_k, b_k = Δ v_k (output side) and a'_k = Dᵀ u_k, b'_k = Δᵀ u_k (input
side), c_k = 1 + cos⁺(a_k, b_k) · cos⁺(a'_k, b'_k) · min(|a_k|, |b_k|) / max(|a_k|, |b_k|). It
equals the projection form when both tasks map the same input to the same output (identical
deltas: c = 2), but stays 1 when two tasks only share a singular value: where σ's tie or
nearly tie, the SVD of D + Δ mixes directions of both tasks, and the projection form then
reads independent tasks as up to half shared. The SVD never forms a dense d×d
matrix: `D + Δ = L Rᵀ` with `L = [P, scale·B]`, `Rᵀ = [Qᵀ; A]` (k = rank(D) + LoRA rank
columns), so a QR of each factor and the SVD of a k×k core give it exactly. `plain_add` is
the ablation (`sac=off`): the factors are concatenated, exact addition with no truncation.

Consolidated deltas are stored as factors `<module>.us` (U·S, d_out×r) and `<module>.vt`
(Vᵀ, r×d_in) in one safetensors file, written and read one layer at a time.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from ...errors import EngineError
from ...modeling.tensorfile import StreamingWriter

Factors = tuple[torch.Tensor, torch.Tensor]  # (us: d_out × r, vt: r × d_in); us @ vt is the delta
FORMAT = "hicl-sac"
VERSION = 1
#: singular values below this fraction of the largest are numerical noise, never kept
REL_TOL = 1e-9


@dataclass
class LayerStats:
    rank: int
    energy_kept: float  # share of the calibrated spectrum's energy (Σσ²) inside the kept rank
    overlap: float  # σ-weighted mean of c_k - 1 over the spectrum: 0 disjoint tasks, 1 identical


def _both(prev: Factors | None, delta: Factors) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    bs, a = (t.double() for t in delta)
    if prev is None:
        p, qt = bs.new_zeros(bs.shape[0], 0), a.new_zeros(0, a.shape[1])
    else:
        p, qt = (t.double().to(bs.device) for t in prev)
        if p.shape[0] != bs.shape[0] or qt.shape[1] != a.shape[1]:
            raise EngineError(f"consolidated delta {tuple(p.shape[:1]) + tuple(qt.shape[1:])} does not fit "
                              f"the layer's delta {bs.shape[0], a.shape[1]}",
                              hint="every stage of a run must use the same base model")
    return p, qt, bs, a


OVERLAPS = ("projection", "aligned")


def consolidate(prev: Factors | None, delta: Factors, *, gamma: float, rank: int,
                overlap: str = "projection") -> tuple[Factors, LayerStats]:
    """SAC of one layer: `prev` the consolidated factors so far (None at the first task), `delta`
    the new task's `(scale·B, A)`. Returns float32 factors of rank <= `rank`, and stats."""
    if rank < 1:
        raise ValueError("rank must be >= 1")
    if overlap not in OVERLAPS:
        raise EngineError(f"unknown SAC overlap measure {overlap!r}", hint=f"use one of {', '.join(OVERLAPS)}")
    p, qt, bs, a = _both(prev, delta)
    left, right_t = torch.cat([p, bs], 1), torch.cat([qt, a], 0)
    ql, rl = torch.linalg.qr(left)  # reduced: left = ql rl
    qr, rr = torch.linalg.qr(right_t.T)
    um, s, vmh = torch.linalg.svd(rl @ rr.T)
    u, v = ql @ um, qr @ vmh.T  # left @ right_t = u diag(s) vᵀ
    c = _overlap_projection(p, qt, bs, a, u, v) if overlap == "projection" else _overlap_aligned(p, qt, bs, a, u, v)
    calibrated = s / c.pow(gamma)
    order = torch.argsort(calibrated, descending=True)
    top = calibrated.max() if calibrated.numel() else s.new_zeros(())
    keep = [int(k) for k in order[:rank] if calibrated[k] > REL_TOL * top]
    idx = torch.tensor(keep, dtype=torch.long, device=s.device)
    us = (u[:, idx] * calibrated[idx]).float()
    vt = v[:, idx].T.contiguous().float()
    energy = float((calibrated ** 2).sum())
    stats = LayerStats(rank=len(keep),
                       energy_kept=float((calibrated[idx] ** 2).sum()) / energy if energy > 0 else 1.0,
                       overlap=float(((c - 1) * s).sum() / s.sum()) if float(s.sum()) > 0 else 0.0)
    return (us, vt), stats


def _overlap_projection(p, qt, bs, a, u, v) -> torch.Tensor:
    """c_k = (p_k + q_k) / max(p_k, q_k), p_k = |u_kᵀ D v_k|, q_k = |u_kᵀ Δ v_k|."""
    p_k = ((u.T @ p) * (qt @ v).T).sum(1).abs()
    q_k = ((u.T @ bs) * (a @ v).T).sum(1).abs()
    big = torch.maximum(p_k, q_k)
    return torch.where(big > 0, (p_k + q_k) / big.clamp_min(torch.finfo(big.dtype).tiny), torch.ones_like(big))


def _cos_and_ratio(x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per column: max(cos(x_k, y_k), 0) and min(|x_k|, |y_k|) / max(|x_k|, |y_k|) (0 where either is 0)."""
    nx, ny = x.norm(dim=0), y.norm(dim=0)
    tiny = torch.finfo(x.dtype).tiny
    both = (nx > 0) & (ny > 0)
    cos = torch.where(both, (x * y).sum(0) / (nx * ny).clamp_min(tiny), torch.zeros_like(nx)).clamp_min(0)
    ratio = torch.where(both, torch.minimum(nx, ny) / torch.maximum(nx, ny).clamp_min(tiny), torch.zeros_like(nx))
    return cos, ratio


def _overlap_aligned(p, qt, bs, a, u, v) -> torch.Tensor:
    """c_k = 1 + cos⁺(D v_k, Δ v_k) · cos⁺(Dᵀ u_k, Δᵀ u_k) · min/max of |D v_k|, |Δ v_k|."""
    cos_out, ratio = _cos_and_ratio(p @ (qt @ v), bs @ (a @ v))
    cos_in, _ = _cos_and_ratio(qt.T @ (p.T @ u), a.T @ (bs.T @ u))
    return 1 + cos_out * cos_in * ratio


def plain_add(prev: Factors | None, delta: Factors) -> tuple[Factors, LayerStats]:
    """`prev + delta` exactly, as concatenated factors (the rank grows by the LoRA rank)."""
    p, qt, bs, a = _both(prev, delta)
    us, vt = torch.cat([p, bs], 1).float(), torch.cat([qt, a], 0).float()
    return (us, vt), LayerStats(rank=us.shape[1], energy_kept=1.0, overlap=float("nan"))


def lora_deltas(model: nn.Module, adapter: str = "default") -> dict[str, nn.Module]:
    """{module name relative to the base model: LoRA layer} of a PEFT model."""
    from peft.tuners.lora import LoraLayer

    base = model.get_base_model() if callable(getattr(model, "get_base_model", None)) else model
    found = {n: m for n, m in base.named_modules() if isinstance(m, LoraLayer) and adapter in m.lora_A}
    if not found:
        raise EngineError("the model carries no LoRA layers to consolidate")
    return found


def layer_delta(layer: nn.Module, adapter: str = "default") -> Factors:
    """`(scale·B, A)` of one LoRA layer: the layer's delta is their product."""
    if getattr(layer, "fan_in_fan_out", False):
        raise EngineError("LoRA with fan_in_fan_out (Conv1D layers) is not supported by SAC")
    scale = float(layer.scaling[adapter])
    b = layer.lora_B[adapter].weight.detach()
    a = layer.lora_A[adapter].weight.detach()
    return b.double() * scale, a.double()


def module_names(path: str | os.PathLike) -> list[str]:
    """Modules that carry factors in a consolidated file, in file order."""
    from safetensors import safe_open

    with safe_open(str(path), "pt", device="cpu") as fh:
        return list(dict.fromkeys(k.rsplit(".", 1)[0] for k in fh.keys() if k.endswith(".us")))


class FactorReader:
    """Random access to a consolidated file's factors, one layer at a time."""

    def __init__(self, path: str | os.PathLike | None):
        from safetensors import safe_open

        self.path = Path(path) if path is not None else None
        self._fh = None
        self.names: set[str] = set()
        if self.path is not None:
            if not self.path.is_file():
                raise EngineError(f"consolidated adapter {self.path} is missing",
                                  hint="the previous stage must finish (and keep its folder) before this one")
            try:
                self._fh = safe_open(str(self.path), "pt", device="cpu")
                keys = set(self._fh.keys())
            except Exception as exc:  # truncated or not a safetensors file
                raise EngineError(f"cannot read the consolidated adapter {self.path}: {exc}") from None
            self.names = {k.rsplit(".", 1)[0] for k in keys if k.endswith(".us")}
            bad = sorted(n for n in self.names if f"{n}.vt" not in keys)
            if bad:
                raise EngineError(f"consolidated adapter {self.path} lacks the vt factor of {bad[0]}")

    def get(self, name: str) -> Factors | None:
        if name not in self.names:
            return None
        return self._fh.get_tensor(f"{name}.us"), self._fh.get_tensor(f"{name}.vt")

    def metadata(self) -> dict[str, str]:
        return dict(self._fh.metadata() or {}) if self._fh is not None else {}


@dataclass
class Consolidation:
    mode: str
    layers: dict[str, LayerStats] = field(default_factory=dict)

    def summary(self) -> dict:
        ranks = [s.rank for s in self.layers.values()]
        overlaps = [s.overlap for s in self.layers.values() if s.overlap == s.overlap]
        return {"mode": self.mode, "modules": len(ranks), "max_rank": max(ranks, default=0),
                "mean_rank": sum(ranks) / len(ranks) if ranks else 0.0,
                "min_energy_kept": min((s.energy_kept for s in self.layers.values()), default=1.0),
                "mean_overlap": sum(overlaps) / len(overlaps) if overlaps else None}


def consolidate_model(model: nn.Module, prev_path: str | os.PathLike | None, out_path: str | os.PathLike, *,
                      mode: str, gamma: float, rank: int, metadata: dict[str, str] | None = None,
                      overlap: str = "projection") -> Consolidation:
    """Consolidate every LoRA layer of `model` with the factors in `prev_path` into `out_path`.

    Streams: each layer's previous factors are read, combined with the live LoRA factors and
    written before the next layer is touched. Layers only in `prev_path` keep their factors.
    """
    if mode not in ("sac", "add"):
        raise ValueError(f"mode must be sac or add, not {mode!r}")
    lora = lora_deltas(model)
    prev = FactorReader(prev_path)
    result = Consolidation(mode)
    meta = {"format": FORMAT, "version": str(VERSION), "mode": mode, "gamma": repr(gamma), "overlap": overlap, "rank": str(rank),
            **(metadata or {})}
    with StreamingWriter(out_path, meta) as out:
        for name in sorted(set(lora) | prev.names):
            before = prev.get(name)
            if name in lora:
                delta = layer_delta(lora[name])
                (us, vt), stats = (consolidate(before, delta, gamma=gamma, rank=rank, overlap=overlap) if mode == "sac"
                                   else plain_add(before, delta))
            else:
                us, vt = before
                stats = LayerStats(rank=us.shape[1], energy_kept=1.0, overlap=0.0)
            result.layers[name] = stats
            if stats.rank:
                out.add(f"{name}.us", us.contiguous())
                out.add(f"{name}.vt", vt.contiguous())
    return result


@torch.no_grad()
def apply_factors(model: nn.Module, path: str | os.PathLike, *, minus: str | os.PathLike | None = None) -> int:
    """Add the delta in `path` (less the one in `minus`) to `model`'s linear weights, in place.

    One layer's dense delta at a time, computed in float32 on the weight's device. Module names
    are relative to the base model; a PEFT-wrapped layer's base weight is updated. Returns how
    many layers changed.
    """
    add, sub = FactorReader(path), FactorReader(minus)
    base = model.get_base_model() if callable(getattr(model, "get_base_model", None)) else model
    changed = 0
    for name in sorted(add.names | sub.names):
        try:
            module = base.get_submodule(name)
        except AttributeError:
            raise EngineError(f"the consolidated adapter names layer {name!r}, which this model lacks",
                              hint="it was made for another base model") from None
        weight = getattr(module, "base_layer", module).weight
        delta = torch.zeros(weight.shape, dtype=torch.float32, device=weight.device)
        for reader, sign in ((add, 1.0), (sub, -1.0)):
            factors = reader.get(name)
            if factors is not None:
                us, vt = (t.to(weight.device, torch.float32) for t in factors)
                if us.shape[0] != weight.shape[0] or vt.shape[1] != weight.shape[1]:
                    raise EngineError(f"consolidated factors of {name} do not fit its weight {tuple(weight.shape)}",
                                      hint="it was made for another base model")
                delta.addmm_(us, vt, alpha=sign)
        weight.copy_((weight.float() + delta).to(weight.dtype))
        changed += 1
    return changed
