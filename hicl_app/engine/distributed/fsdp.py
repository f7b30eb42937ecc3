"""FSDP2 (`torch.distributed.fsdp.fully_shard`) for `--strategy fsdp`: the language model sharded
over the ranks while a stage trains, so each rank holds 1/N of the frozen weights.

Each decoder layer is its own unit and the HF model (not the PEFT wrapper) is the root: transformers
5 calls the base model's forward and `get_image_features` directly, so hooks on the wrapper would
not fire. The vision tower and projector stay whole on every rank (`ignored_params`): generation
runs them outside the root's forward, and the frozen-vision cache calls them a different number of
times on each rank, which sharded modules (one collective per call) would not survive. They are
frozen in every method; a run that trains them must use DDP. Checkpoints hold full tensors, so a
stage checkpointed under DDP resumes under FSDP and the other way round.

After training the sharded model is dropped and `rebuild` prepares a whole one from the base with
the trained tensors: PEFT's saving, the methods' state (merges, SVDs, routing) and generation then
see plain tensors and run no collective, so the ranks may answer different numbers of prompts.
Taking the shards apart in place would rely on FSDP internals; a second load of the base costs
time once per stage, and memory only for evaluation, which needs the whole model anyway.
"""

from __future__ import annotations

import torch
from torch import nn

from ..errors import EngineError
from . import comm


def _hf_model(model: nn.Module) -> nn.Module:
    return model.get_base_model() if callable(getattr(model, "get_base_model", None)) else model


def shard(model: nn.Module, device: torch.device) -> nn.Module:
    """Shard `model`'s language model over the ranks in place; returns the root FSDP module."""
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    from ..modeling.models import decoder_layers, find_language_model

    base = _hf_model(model)
    lm_name, _ = find_language_model(base)
    outside = {n: p for n, p in base.named_parameters()
               if not n.startswith(lm_name + ".") and not n.startswith("lm_head")}
    trained = [n for n, p in outside.items() if p.requires_grad]
    if trained:
        raise EngineError(f"--strategy fsdp shards the language model only, and this stage trains {trained[0]}",
                          hint="use --strategy ddp for a method that trains the vision tower or projector")
    dtypes = {p.dtype for n, p in base.named_parameters() if n not in outside}
    low = [d for d in dtypes if d in (torch.bfloat16, torch.float16)]
    # a bf16 base with float32 LoRA factors: gather both in bf16 (autocast computes them so anyway)
    policy = MixedPrecisionPolicy(param_dtype=low[0], reduce_dtype=torch.float32) if low and len(dtypes) > 1 \
        else MixedPrecisionPolicy()
    mesh = init_device_mesh(device.type, (comm.world(),))
    for layer in decoder_layers(base)[1]:
        fully_shard(layer, mesh=mesh, mp_policy=policy)
    fully_shard(base, mesh=mesh, mp_policy=policy, ignored_params=set(outside.values()))
    return base


def full(t: torch.Tensor) -> torch.Tensor:
    """The whole tensor of a sharded one (a collective: every rank calls it), else `t`."""
    from torch.distributed.tensor import DTensor

    return t.full_tensor() if isinstance(t, DTensor) else t


def like(whole: torch.Tensor, param: torch.Tensor) -> torch.Tensor:
    """`whole` laid out as `param` is: this rank's shard when `param` is sharded. Every rank holds
    `whole` (each reads the checkpoint), so each cuts its own shard: no collective."""
    from torch.distributed.tensor import DTensor, distribute_tensor

    if not isinstance(param, DTensor):
        return whole
    return distribute_tensor(whole.to(param.device, param.dtype).contiguous(), param.device_mesh, param.placements,
                             src_data_rank=None)


def full_optimizer_state(state: dict) -> dict:
    """An optimizer state dict with every sharded tensor made whole (collective, fixed order)."""
    out = {"state": {}, "param_groups": state["param_groups"]}
    for idx in sorted(state["state"]):
        per = state["state"][idx]
        out["state"][idx] = {k: full(per[k]) for k in sorted(per)}
    return out


def shard_optimizer_state(state: dict, params: list[torch.Tensor]) -> dict:
    """The inverse of `full_optimizer_state` for the parameters `params` (in optimizer order)."""
    for idx, per in state["state"].items():
        param = params[int(idx)]
        for k, v in per.items():
            if isinstance(v, torch.Tensor) and v.shape == param.shape:
                per[k] = like(v, param)
    return state


def rebuild(prepare, trained: dict[str, torch.Tensor]) -> nn.Module:
    """`prepare()` (a fresh base through the method's `prepare`) with `trained` copied in by name;
    the RNG is left as it was, so what follows runs as after DDP training."""
    with torch.random.fork_rng(devices=[]):
        model = prepare()
    params = dict(model.named_parameters())
    missing = sorted(set(trained) - set(params))
    if missing:
        raise EngineError(f"the rebuilt model lacks the trained tensor {missing[0]}")
    with torch.no_grad():
        for name, value in trained.items():
            params[name].copy_(value)
    return model
