"""The optimisation loop shared by every method: whatever `requires_grad` is what trains.

Deterministic by construction so that a stopped-and-resumed stage follows the same trajectory
as an uninterrupted one: the sample order of every epoch derives from (seed, epoch) alone (and,
when grouping by length, from the samples' text lengths, which never change), the data position
is a micro-batch counter, the learning rate is a pure function of the step, and checkpoints carry
optimizer and RNG state (dropout masks depend on the torch RNG).

Under torchrun (`engine/distributed`) the same loop runs on every rank: each global micro-batch
is split between the ranks, DDP averages the gradients, and each rank's loss is scaled so that
the average equals the one-process loss normalised by the whole step's tokens. So `--nproc 1`
and `--nproc N` follow the same trajectory up to float reduction order (with LoRA dropout 0:
dropout masks are drawn per rank). Rank 0 alone writes checkpoints, holding every rank's RNG.
"""

from __future__ import annotations

import json
import math
import os
import random
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import nn

from ..config import TrainConfig, to_dict
from ..data.encoding import IGNORE_INDEX, EncodedCache, Encoder, collate
from ..data.vision_cache import vision_feature_cache
from ..distributed import comm, fsdp
from ..errors import EngineError, Stopped
from ..modeling.precision import autocast_context
from .checkpoint import capture_rng, latest_checkpoint, load_checkpoint, restore_rng, save_checkpoint
from .rate import StepRate

EventFn = Callable[[dict], None]
StopFn = Callable[[], bool]
ExtraLossFn = Callable[[nn.Module, dict[str, torch.Tensor], int], "torch.Tensor | None"]
#: batches per length-sorted chunk when grouping by length (as in transformers' LengthGroupedSampler)
GROUP_SPAN = 50


@dataclass
class TrainResult:
    steps: int
    samples: int
    final_loss: float | None
    resumed_from: int | None
    #: under FSDP, the trained tensors made whole (the sharded model is not used after training)
    trained: dict[str, torch.Tensor] | None = None


@dataclass(frozen=True)
class Schedule:
    """Where every optimizer step takes its samples from, and its learning rate.

    `lengths` (one per sample) are used when `cfg.group_by_length` is on.
    """

    n_samples: int
    cfg: TrainConfig
    lengths: tuple[int, ...] | None = None

    @property
    def batches_per_epoch(self) -> int:
        return math.ceil(self.n_samples / self.cfg.batch_size)

    @property
    def total_micro(self) -> int:
        if self.cfg.max_steps is not None:
            return self.cfg.max_steps * self.cfg.grad_accum
        return self.cfg.epochs * self.batches_per_epoch

    @property
    def total_steps(self) -> int:
        return math.ceil(self.total_micro / self.cfg.grad_accum)

    @property
    def warmup_steps(self) -> int:
        return math.ceil(self.cfg.warmup_ratio * self.total_steps)

    def epoch_order(self, epoch: int) -> list[int]:
        order = list(range(self.n_samples))
        random.Random(f"hicl-order:{self.cfg.seed}:{epoch}").shuffle(order)
        if self.cfg.group_by_length and self.lengths is not None:
            order = length_grouped(order, self.lengths, self.cfg.batch_size,
                                   random.Random(f"hicl-group:{self.cfg.seed}:{epoch}"))
        return order

    def micro_batches(self, step: int) -> list[tuple[int, int]]:
        """(epoch, batch index within the epoch) of each micro-batch of optimizer step `step`."""
        ga = self.cfg.grad_accum
        return [divmod(m, self.batches_per_epoch)
                for m in range(step * ga, min((step + 1) * ga, self.total_micro))]

    def lr(self, step: int) -> float:
        """Linear warm-up, then cosine decay to zero (the LLaVA / HiDe-LLaVA recipe)."""
        warm = self.warmup_steps
        if step < warm:
            return self.cfg.lr * (step + 1) / warm
        progress = (step - warm) / max(1, self.total_steps - warm)
        return self.cfg.lr * 0.5 * (1.0 + math.cos(math.pi * progress))


def length_grouped(order: list[int], lengths: tuple[int, ...], batch_size: int, rng: random.Random) -> list[int]:
    """`order` regrouped so each batch holds samples of similar length (less padding).

    Chunks of GROUP_SPAN batches are sorted by length and cut into batches; the full batches are
    shuffled with `rng`, then the longest goes first (an out-of-memory error shows at the first
    step, not hours in) and a short last batch stays last, so batch boundaries are unchanged.
    """
    span = batch_size * GROUP_SPAN
    batches: list[list[int]] = []
    for start in range(0, len(order), span):
        chunk = sorted(order[start:start + span], key=lambda i: -lengths[i])
        batches += [chunk[k:k + batch_size] for k in range(0, len(chunk), batch_size)]
    tail = [batches.pop()] if batches and len(batches[-1]) < batch_size else []
    if batches:
        rng.shuffle(batches)
        longest = max(range(len(batches)), key=lambda b: max(lengths[i] for i in batches[b]))
        batches.insert(0, batches.pop(longest))
    return [i for batch in batches + tail for i in batch]


def _to_device(batch: dict[str, torch.Tensor], device: torch.device, dtype: torch.dtype) -> dict[str, torch.Tensor]:
    return {k: (v.to(device, dtype) if v.is_floating_point() else v.to(device)) for k, v in batch.items()}


def token_loss_sum(model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Summed next-token cross-entropy over labelled positions (divide by the token count).

    Computed here rather than by the model so that gradient accumulation can normalise by the
    tokens of the whole optimizer step, and only labelled positions are upcast to float32.
    """
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    logits = model(**inputs, use_cache=False).logits[:, :-1]
    labels = batch["labels"][:, 1:]
    keep = labels != IGNORE_INDEX
    return F.cross_entropy(logits[keep].float(), labels[keep], reduction="sum")


def train(model: nn.Module, processor: Any, records: list[dict], cfg: TrainConfig, *,
          device: torch.device, dtype: torch.dtype, checkpoint_dir: str | os.PathLike | None,
          fingerprint: dict[str, Any], on_event: EventFn | None = None,
          should_stop: StopFn | None = None, extra_loss: ExtraLossFn | None = None,
          strategy: str = "ddp") -> TrainResult:
    """Train the model's trainable parameters on `records`, resuming from `checkpoint_dir`.

    Checkpoints every `cfg.checkpoint_every` steps and at the end; when `should_stop()` turns
    true at a step boundary, checkpoints and raises `Stopped`. A checkpoint is only resumed
    if `fingerprint` (plus the config and sample count, added here) matches the one it holds.
    `extra_loss(model, batch, step)`, when given, adds a method's regulariser to each
    micro-batch's loss (weighted 1/grad_accum, like the micro-batch's share of the step).
    `strategy` says how several ranks hold the model: "ddp" (replicated) or "fsdp" (sharded; the
    result then carries the trained tensors whole, see `fsdp.rebuild`); one process ignores it.

    Before each checkpoint `on_event` gets {"type": "before_checkpoint", "step": N}: a caller that
    raises there vetoes it (a worker whose job's lease is gone, see worker/stage.py): nothing is
    written, no older checkpoint is pruned, and the exception propagates.
    """
    if not records:
        raise EngineError("no training samples for this stage")
    schedule_cfg = to_dict(cfg)
    schedule_cfg.pop("checkpoint_every")  # how often we save does not change the trajectory
    schedule_cfg.pop("cache_vision")  # nor does reusing frozen features
    schedule_cfg.pop("gradient_checkpointing", None)  # nor does recomputing activations
    if not schedule_cfg["group_by_length"]:  # the order it changes; off, checkpoints made before it existed match
        schedule_cfg.pop("group_by_length")
    # through JSON, as it will be stored: tuples and lists must compare equal after a resume
    fingerprint = json.loads(json.dumps({**fingerprint, "train": schedule_cfg, "n_samples": len(records)},
                                        sort_keys=True, default=str))
    emit = on_event or (lambda event: None)
    encoder = Encoder(processor, cfg.max_length)
    lengths = tuple(encoder.length(r) for r in records) if cfg.group_by_length else None
    schedule = Schedule(len(records), cfg, lengths)
    total = schedule.total_steps
    if not any(p.requires_grad for p in model.parameters()):
        raise EngineError("the model has no trainable parameters")
    world = comm.world()
    net, root = model, None
    if world > 1 and strategy == "fsdp":
        root = fsdp.shard(model, device)  # its parameters are new (sharded) tensors: collected below
    elif world > 1:
        from torch.nn.parallel import DistributedDataParallel

        net = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW([p for _, p in named], lr=cfg.lr, weight_decay=cfg.weight_decay)
    encoded = EncodedCache(encoder, records) if cfg.cache_vision else None
    pad_id = processor.tokenizer.pad_token_id

    start, resumed_from, last_ckpt = 0, None, None
    found = latest_checkpoint(checkpoint_dir)
    if found is not None:
        state = load_checkpoint(found, fingerprint)
        if [n for n, _ in named] != list(state.params):
            raise EngineError(f"checkpoint {found} holds different trainable tensors than this model",
                              hint=f"delete {found} to restart the stage")
        with torch.no_grad():
            for name, param in named:
                param.copy_(fsdp.like(state.params[name], param))
        optimizer.load_state_dict(fsdp.shard_optimizer_state(state.optimizer, [p for _, p in named]) if root
                                  else state.optimizer)
        restore_rng(state.rng_ranks[comm.rank()] if len(state.rng_ranks) == world else state.rng)
        start = resumed_from = last_ckpt = state.step
        emit({"type": "log", "message": f"resumed from checkpoint {found.name} (step {start}/{total})"})

    def checkpoint(step: int) -> Path | None:
        nonlocal last_ckpt
        if checkpoint_dir is None or step == last_ckpt:
            return latest_checkpoint(checkpoint_dir)
        rngs = comm.gather(capture_rng())  # every rank's, so dropout resumes exactly on each
        params = {n: fsdp.full(p) for n, p in named}  # sharded tensors made whole: every rank takes part
        optimizer_state = fsdp.full_optimizer_state(optimizer.state_dict()) if root else optimizer.state_dict()
        last_ckpt = step
        if not comm.is_main():
            return None
        emit({"type": "before_checkpoint", "step": step})  # the caller commits what it holds up to here
        path = save_checkpoint(checkpoint_dir, step=step, micro_batch=step * cfg.grad_accum, total_steps=total,
                               params=params, optimizer_state=optimizer_state,
                               fingerprint=fingerprint, rng_ranks=rngs)
        emit({"type": "checkpoint", "step": step, "path": str(path)})
        return path

    orders: dict[int, list[int]] = {}

    def batch_for(epoch: int, index: int) -> tuple[dict[str, torch.Tensor], int, float]:
        """This rank's share of one global micro-batch, the global batch's size, and the share's
        weight: 0 for a rank left without samples (a short last batch), which then runs the first
        sample so DDP still hears from it, contributing nothing."""
        if epoch not in orders:
            orders.clear()
            orders[epoch] = schedule.epoch_order(epoch)
        ids = orders[epoch][index * cfg.batch_size:(index + 1) * cfg.batch_size]
        mine, weight = comm.shard(ids), 1.0
        if not mine:
            mine, weight = ids[:1], 0.0
        batch = collate([encoded[i] if encoded is not None else encoder.encode(records[i]) for i in mine],
                        pad_id, "right")
        return batch, len(ids), weight

    model.train()
    last_progress, loss_value, meter = 0.0, None, StepRate()
    with vision_feature_cache(model, cfg.cache_vision):
        try:
            for step in range(start, total):
                if comm.any_true(should_stop is not None and should_stop(), device):
                    raise Stopped(step, checkpoint(step) if step > 0 else None)
                meter.start_step()
                lr = schedule.lr(step)
                for group in optimizer.param_groups:
                    group["lr"] = lr
                batches = [batch_for(e, b) for e, b in schedule.micro_batches(step)]
                n_tokens = comm.all_sum([sum(w * int((b["labels"][:, 1:] != IGNORE_INDEX).sum())
                                             for b, _, w in batches)], device)[0]
                optimizer.zero_grad(set_to_none=True)
                loss_total, aux_total = 0.0, None
                for k, (batch, _size, weight) in enumerate(batches):
                    on_device = _to_device(batch, device, dtype)
                    # DDP averages the ranks' gradients: scaling by `world` makes that the global sum
                    last = k == len(batches) - 1
                    if root is not None:  # FSDP: reduce after the step's last micro-batch only
                        root.set_requires_gradient_sync(last)
                    sync = nullcontext() if world == 1 or last or root is not None else net.no_sync()
                    with sync:
                        with autocast_context(device, dtype):
                            loss = token_loss_sum(net, on_device) / max(n_tokens, 1)
                            if world > 1 or weight != 1.0:
                                loss = loss * (weight * world)
                            # every rank computes the same extra term, so the average is that term
                            aux = extra_loss(model, on_device, step) if extra_loss is not None else None
                        loss_total += float(loss.detach()) / world
                        if aux is not None:
                            aux = aux / len(batches)
                            aux_total = (aux_total or 0.0) + float(aux.detach())
                            loss = loss + aux
                        loss.backward()
                if cfg.grad_clip > 0:
                    torch.nn.utils.clip_grad_norm_([p for _, p in named], cfg.grad_clip)
                optimizer.step()
                done, loss_value = step + 1, comm.all_sum([loss_total], device)[0]
                meter.end_step(sum(size for _, size, _ in batches))
                emit({"type": "loss", "step": done, "loss": loss_value, "lr": lr,
                      **({"aux_loss": aux_total} if aux_total is not None else {})})
                now = time.monotonic()
                if now - last_progress >= 1.0 or done in (start + 1, total):
                    emit({"type": "progress", "step": done, "total": total, "loss": loss_value, "lr": lr,
                          "samples_per_s": meter.samples_per_s(), "eta_s": meter.eta_s(total - done)})
                    last_progress = now
                if cfg.checkpoint_every and done % cfg.checkpoint_every == 0 and done < total:
                    checkpoint(done)
            checkpoint(total)
            whole = {n: fsdp.full(p).detach().clone() for n, p in named} if root is not None else None
        finally:
            model.eval()
    return TrainResult(steps=total, samples=len(records), final_loss=loss_value, resumed_from=resumed_from,
                       trained=whole)
