"""EWC's two computations: the diagonal empirical Fisher of a model's trainable parameters over
a set of records, and the quadratic penalty around an anchor.

The Fisher takes one backward pass per sample (the squares of per-sample gradients, not of a
batch's mean gradient, which would shrink them by the batch size), in eval mode so no dropout
mask and no RNG draw enters it. Under torchrun each rank takes its share of the samples and the
sums are all-reduced, so every rank ends with the same Fisher. The penalty is written for DDP (a
function of the replicated parameters: every rank computes the same value) and for FSDP (the
sharded LoRA factors: each rank sums its shard and the partial sums are all-reduced).
"""

from __future__ import annotations

import os
from typing import Any

import torch
from torch import nn

from ...data.encoding import IGNORE_INDEX, Encoder, collate
from ...distributed import comm, fsdp
from ...errors import EngineError
from ...modeling.precision import autocast_context
from ...train.loop import token_loss_sum


def trainable(model: nn.Module) -> list[tuple[str, torch.Tensor]]:
    return [(n, p) for n, p in model.named_parameters() if p.requires_grad]


def diagonal_fisher(model: nn.Module, processor: Any, records: list[dict], *, max_length: int,
                    device: torch.device, dtype: torch.dtype) -> tuple[dict[str, torch.Tensor], int]:
    """({name: F} in float32 on the CPU, answer tokens counted) over `records`.

    F = Σ_i (∇ log p(y_i | x_i))² / Σ_i T_i, with T_i the answer tokens of sample i: the empirical
    Fisher of the per-token log-likelihood, the scale of the training loss.
    """
    named = trainable(model)
    if not named:
        raise EngineError("EWC needs trainable parameters to estimate a Fisher")
    params = [p for _, p in named]
    sums = [torch.zeros(p.shape, dtype=torch.float32, device=p.device) for p in params]
    encoder = Encoder(processor, max_length)
    pad_id = processor.tokenizer.pad_token_id
    tokens = 0
    was_training = model.training
    model.eval()
    try:
        for record in comm.shard(records):
            batch = collate([encoder.encode(record)], pad_id, "right")
            n = int((batch["labels"][:, 1:] != IGNORE_INDEX).sum())
            if n == 0:  # the answer was cut off by max_length: no likelihood to differentiate
                continue
            batch = {k: (v.to(device, dtype) if v.is_floating_point() else v.to(device)) for k, v in batch.items()}
            with autocast_context(device, dtype):
                nll = token_loss_sum(model, batch)
            grads = torch.autograd.grad(nll, params, allow_unused=True)
            for total, grad in zip(sums, grads):
                if grad is not None:
                    total.add_(grad.float().pow(2))
            tokens += n
    finally:
        model.train(was_training)
    if comm.active():
        import torch.distributed as dist

        for total in sums:
            dist.all_reduce(total, op=dist.ReduceOp.SUM)
    tokens = int(comm.all_sum([float(tokens)], device)[0])
    return {name: (total / max(tokens, 1)).cpu() for (name, _), total in zip(named, sums)}, tokens


def save_state(path: str | os.PathLike, fisher: dict[str, torch.Tensor], anchor: dict[str, torch.Tensor],
               metadata: dict[str, Any]) -> None:
    """Write the Fisher and the anchor with `metadata` as one JSON entry (`hicl-ewc`): safetensors
    writes its metadata map in no fixed order, and a resumed stage must write the same bytes."""
    import json

    from safetensors.torch import save

    from ....core.fsio import atomic_write_bytes

    tensors = {**{f"fisher.{n}": t.contiguous() for n, t in fisher.items()},
               **{f"anchor.{n}": t.contiguous() for n, t in anchor.items()}}
    info = json.dumps({"format": "hicl-ewc", "version": 1, **metadata}, sort_keys=True)
    atomic_write_bytes(path, save(tensors, metadata={"hicl-ewc": info}))


def load_state(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """(Fisher, anchor) as `save_state` wrote them."""
    from safetensors.torch import load_file

    try:
        tensors = load_file(str(path))
    except FileNotFoundError:
        raise EngineError(f"the previous stage's EWC state {path} is missing",
                          hint="run the stages in order, all with method ewc") from None
    except Exception as exc:  # truncated or not a safetensors file
        raise EngineError(f"cannot read the EWC state {path}: {exc}") from None
    fisher = {k.removeprefix("fisher."): v for k, v in tensors.items() if k.startswith("fisher.")}
    anchor = {k.removeprefix("anchor."): v for k, v in tensors.items() if k.startswith("anchor.")}
    if fisher.keys() != anchor.keys():
        raise EngineError(f"the EWC state {path} has a Fisher and an anchor for different parameters")
    return fisher, anchor


class Penalty:
    """(λ/2) Σ F (θ − θ*)² over a model's trainable parameters, F and θ* from the earlier stages."""

    def __init__(self, fisher: dict[str, torch.Tensor], anchor: dict[str, torch.Tensor], weight: float):
        self.fisher, self.anchor, self.weight = fisher, anchor, weight
        self._bound: tuple[int, list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]] | None = None

    def _terms(self, model: nn.Module) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        """(θ, F, θ*) per trainable parameter, F and θ* laid out as θ is (moved once per model)."""
        if self._bound is not None and self._bound[0] == id(model):
            return self._bound[1]
        named = trainable(model)
        missing = sorted(set(self.fisher) - {n for n, _ in named})
        if missing or len(named) != len(self.fisher):
            raise EngineError(f"the EWC state does not fit this stage's trainable parameters "
                              f"({missing[0] if missing else 'new parameters'})",
                              hint="every stage of an ewc run must train the same LoRA (same rank and targets)")
        terms = []
        for name, param in named:
            f, a = self.fisher[name], self.anchor[name]
            full_shape = param.shape
            if tuple(f.shape) != tuple(full_shape):
                raise EngineError(f"the EWC Fisher of {name} has shape {tuple(f.shape)}, the parameter "
                                  f"{tuple(full_shape)}", hint="every stage of an ewc run must use the same LoRA rank")
            f32 = torch.float32
            terms.append((param, fsdp.like(f.to(param.device, f32), param), fsdp.like(a.to(param.device, f32), param)))
        self._bound = (id(model), terms)
        return terms

    def __call__(self, model: nn.Module) -> torch.Tensor:
        total = None
        for param, f, a in self._terms(model):
            term = (f * (param.float() - a).pow(2)).sum()
            total = term if total is None else total + term
        return 0.5 * self.weight * fsdp.full(total)
