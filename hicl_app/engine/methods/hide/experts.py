"""The hook that mixes several task experts in one linear layer.

An expert is one task's LoRA factors (`modeling.lora_factors.Expert`). `RoutedDelta` adds
Σ_e w[b,e]·scale_e·B_e A_e x to a linear layer's output with per-sample weights w read from a shared `RoutingState`; with several
experts the factors are concatenated along the rank, so the mixture costs two matmuls whatever
the number of experts.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from ...errors import EngineError
from ...modeling.lora_factors import Expert, unwrap_peft


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
    base = unwrap_peft(model)
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
