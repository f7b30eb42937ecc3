"""Task experts: one LoRA's factors per target module, and the hook that mixes several of them.

An expert is read out of a trained PEFT model (`from_peft`) or a saved PEFT adapter folder
(`from_adapter_dir`), keyed by module paths relative to the base model, so the same expert can
be attached to a fresh base without PEFT. `RoutedDelta` adds Σ_e w[b,e]·scale_e·B_e A_e x to a
linear layer's output with per-sample weights w read from a shared `RoutingState`; with several
experts the factors are concatenated along the rank, so the mixture costs two matmuls whatever
the number of experts.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from ...errors import EngineError


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


def _unwrap(model: nn.Module) -> nn.Module:
    getter = getattr(model, "get_base_model", None)
    return getter() if callable(getter) else model


def from_peft(model: nn.Module, name: str) -> Expert:
    """The active LoRA adapter of a PEFT model as an Expert (factors copied to the CPU)."""
    from peft.tuners.lora import LoraLayer

    active = getattr(model, "active_adapter", "default")
    active = active[0] if isinstance(active, (list, tuple)) else active
    factors, scales = {}, {}
    for path, module in _unwrap(model).named_modules():
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
    layers = {p: m for p, m in _unwrap(model).named_modules() if isinstance(m, LoraLayer) and active in m.lora_A}
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
    from ...modeling.adapters import load_lora

    peft_model = load_lora(base, Path(adapter_dir))
    try:
        return from_peft(peft_model, name)
    finally:
        peft_model.unload()


@dataclass
class RoutingState:
    """Per-sample expert weights [batch, experts], shared by every routed layer of a model.

    `fixed` (one weight vector) overrides routing for every sample, e.g. one-hot to run a single
    task expert's model when measuring CKA.
    """

    n_experts: int
    weights: torch.Tensor | None = None
    fixed: torch.Tensor | None = None
    #: route each sample to its highest-weight expert alone (`routing=top1`) instead of the mixture
    top1: bool = False
    #: with top1, the expert every sample of the current batch uses, when they all use one
    single: int | None = None
    #: with top1, (expert, indices of its samples) for each expert the current batch uses
    groups: list[tuple[int, torch.Tensor]] | None = None
    #: with top1 and `merge_top1`, what puts the single expert of a batch into the routed weights
    merger: "TopOneMerger | None" = None
    #: the expert whose delta the routed modules' weights hold now (their hooks then add nothing)
    merged: int | None = None

    def set(self, weights: torch.Tensor) -> None:
        """Take the router's softmax weights [batch, experts] for the next forwards."""
        if self.top1:
            index = weights.argmax(1)
            weights = torch.nn.functional.one_hot(index, weights.shape[1]).to(weights.dtype)
            self.groups = _groups(index)
            self.single = self.groups[0][0] if len(self.groups) == 1 else None
            if self.merger is not None:
                self.merger.use(self, self.single)
        self.weights = weights

    def for_batch(self, batch: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
        if self.fixed is not None:
            return self.fixed.to(device, dtype).expand(batch, -1)
        if self.weights is None:
            raise EngineError("routed layer called before any routing weights were computed",
                              hint="call the model with input_ids (and pixel_values) so the prefill routes it")
        if self.weights.shape[0] != batch:
            raise EngineError(f"routing weights are for a batch of {self.weights.shape[0]}, the layer got {batch}",
                              hint="start a new generation: routing is computed at prefill")
        return self.weights.to(device, dtype)


def _groups(index: torch.Tensor) -> list[tuple[int, torch.Tensor]]:
    """[(expert, the positions of the samples routed to it)] for a batch's top-1 choices."""
    return [(int(e), (index == e).nonzero().squeeze(1)) for e in index.unique()]


@dataclass
class RoutedDelta:
    """Forward hook: output + Σ_e w[b, e] · scale_e · B_e A_e x, one weight vector per sample."""

    a_cat: torch.Tensor  # [R, in], the experts' A stacked along the rank
    b_cat: torch.Tensor  # [out, R]
    owner: torch.Tensor  # [R] expert index of each rank row
    row_scale: torch.Tensor  # [R] the owning expert's scale
    state: RoutingState
    handle: object = field(default=None, repr=False)
    rank: int | None = None  # every expert's rank, when they share one (what the top-1 path needs)

    def __call__(self, module: nn.Module, args: tuple, output: torch.Tensor) -> torch.Tensor:
        x = args[0]
        if self.state.merged is not None:
            if self.state.fixed is not None:
                raise EngineError("routing weights were fixed while a top-1 expert is merged into the weights",
                                  hint="fix the weights on a model built with merge_top1=false")
            return output  # the batch's expert is in the weight already
        w = self.state.for_batch(x.shape[0], x.device, x.dtype)  # [b, E]
        if self.state.top1 and self.state.fixed is None and self.rank is not None:
            return output + self._top1(x, w)
        coef = w[:, self.owner] * self.row_scale  # [b, R]
        h = (x @ self.a_cat.T) * coef.view(x.shape[0], *([1] * (x.dim() - 2)), -1)
        return output + h @ self.b_cat.T

    def factors(self, e: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(A_e, B_e, scale_e) of expert e, from the stacked factors (experts of one rank)."""
        rows = slice(e * self.rank, (e + 1) * self.rank)
        return self.a_cat[rows], self.b_cat[:, rows], self.row_scale[e * self.rank]

    def _top1(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        """One rank-r path per sample, its own expert's: scale_e · B_e A_e x (w is one-hot)."""
        def path(e: int, xs: torch.Tensor) -> torch.Tensor:
            a, b, scale = self.factors(e)
            return (xs @ a.T) @ b.T * scale

        if self.state.single is not None:  # the whole batch uses one expert: plain matmuls
            return path(self.state.single, x)
        groups = self.state.groups if self.state.groups is not None else _groups(w.argmax(1))
        delta = x.new_empty(*x.shape[:-1], self.b_cat.shape[0])
        for e, samples in groups:  # the samples of each expert together, no per-sample copies of factors
            delta.index_copy_(0, samples, path(e, x.index_select(0, samples)))
        return delta


class TopOneMerger:
    """With top-1 routing, a batch whose samples all pick one expert runs with that expert merged.

    The routed modules' weights are swapped for W + scale_e·B_e A_e (made once per change of
    expert, so a run of batches of one task costs one merge) and their hooks add nothing: the
    forward then costs what base + one merged LoRA costs. A mixed batch swaps the original
    weights back (the same tensors, so nothing drifts) and takes the grouped path. Memory: one
    merged copy of the expanded modules' weights beside the originals.
    """

    def __init__(self, modules: list[tuple[nn.Module, RoutedDelta]]):
        self.entries = [(_inner(module), _weight_of(module).data, hook) for module, hook in modules]

    @torch.no_grad()
    def use(self, state: RoutingState, expert: int | None) -> None:
        if expert == state.merged:
            return
        for inner, original, hook in self.entries:
            if expert is None:
                inner.weight.data = original
                continue
            a, b, scale = hook.factors(expert)
            inner.weight.data = (original.float() + float(scale) * (b.float() @ a.float())).to(original.dtype)
        state.merged = expert


def routed_delta(experts: list[Expert], path: str, state: RoutingState, device: torch.device,
                 dtype: torch.dtype) -> RoutedDelta:
    """The routed hook of module `path` over `experts` (each must have factors for it)."""
    missing = [e.name for e in experts if path not in e.factors]
    if missing:
        raise EngineError(f"expert(s) {', '.join(missing)} have no factors for {path}",
                          hint="every task expert must target the same modules (same run config)")
    a_cat = torch.cat([e.factors[path][0] for e in experts]).to(device, dtype)
    b_cat = torch.cat([e.factors[path][1] for e in experts], dim=1).to(device, dtype)
    owner = torch.cat([torch.full((e.factors[path][0].shape[0],), i, dtype=torch.long) for i, e in enumerate(experts)])
    row_scale = torch.cat([torch.full((e.factors[path][0].shape[0],), e.scales[path]) for e in experts])
    ranks = {e.factors[path][0].shape[0] for e in experts}
    return RoutedDelta(a_cat, b_cat, owner.to(device), row_scale.to(device, dtype), state,
                       rank=ranks.pop() if len(ranks) == 1 else None)


def attach_routed(model: nn.Module, experts: list[Expert], paths: list[str], state: RoutingState,
                  merge_top1: bool = False) -> list:
    """Register a RoutedDelta hook on each module in `paths` of `model`; returns the hook handles.

    With `merge_top1` (and top-1 routing, experts of one rank) the state gets a TopOneMerger."""
    handles, hooked = [], []
    base = _unwrap(model)
    for path in paths:
        module = base.get_submodule(path)
        weight = _weight_of(module)
        hook = routed_delta(experts, path, state, weight.device, weight.dtype)
        handles.append(module.register_forward_hook(hook))
        hooked.append((module, hook))
    if merge_top1 and state.top1 and hooked and all(h.rank is not None for _, h in hooked):
        state.merger = TopOneMerger(hooked)
    return handles


def _inner(module: nn.Module) -> nn.Module:
    return getattr(module, "base_layer", module)  # a PEFT LoraLayer wraps the linear


def _weight_of(module: nn.Module) -> torch.Tensor:
    inner = _inner(module)
    weight = getattr(inner, "weight", None)
    if weight is None:
        raise EngineError(f"{type(module).__name__} has no weight to attach an expert to")
    return weight
