"""LwF's distillation term: the previous stage's model (a second, frozen PEFT adapter on the same
base) as teacher of the one being trained, on the current batch's answer tokens.

The teacher runs through PEFT's own per-sample adapter selection (`adapter_names=` in the
forward), in eval mode and without gradients: no second copy of the base, no change of which
adapter is active or trainable, no dropout mask and no RNG draw, so the term is a function of
(model, batch) and a resumed stage repeats it. The student's logits are the training loop's own
forward of the same batch when they are at hand (`StudentLogits`, a forward hook), so the term
costs one teacher forward, not a second student forward and backward.

Under torchrun each rank sums the term over its share of the micro-batch and divides by the
micro-batch's answer tokens over all ranks, times the number of ranks: the loop's gradient
averaging then gives exactly the one-process mean over the micro-batch.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ...data.encoding import IGNORE_INDEX
from ...distributed import comm


def kd_sum(student: torch.Tensor, teacher: torch.Tensor, labels: torch.Tensor,
           temperature: float) -> tuple[torch.Tensor, int]:
    """(T² Σ KL(softmax(z_t / T) ‖ softmax(z_s / T)) over answer tokens, how many tokens).

    `student`, `teacher`: [batch, length, vocab] logits; position i predicts `labels[:, i + 1]`.
    Zero exactly when the two logits are equal.
    """
    keep = labels[:, 1:] != IGNORE_INDEX
    log_s = F.log_softmax(student[:, :-1][keep].float() / temperature, dim=-1)
    log_t = F.log_softmax(teacher[:, :-1][keep].float() / temperature, dim=-1)
    kl = (log_t.exp() * (log_t - log_s)).sum()
    return temperature ** 2 * kl, int(keep.sum())


@torch.no_grad()
def teacher_logits(model: nn.Module, inputs: dict[str, torch.Tensor], adapter: str) -> torch.Tensor:
    """The logits of `model` with its adapter `adapter` in place of the active one."""
    was_training = model.training
    model.eval()  # PEFT selects adapters per sample only in eval mode; no dropout in the teacher
    try:
        n = inputs["input_ids"].shape[0]
        return model(**inputs, adapter_names=[adapter] * n, use_cache=False).logits
    finally:
        model.train(was_training)


class StudentLogits:
    """Keeps the logits of the model's last training forward, and the input ids it ran on."""

    def __init__(self, model: nn.Module):
        base = model.get_base_model()
        self.last: tuple[torch.Tensor, torch.Tensor] | None = None
        self.handle = base.register_forward_hook(self._keep, with_kwargs=True)

    def _keep(self, module: nn.Module, args, kwargs, output) -> None:
        ids = kwargs.get("input_ids", args[0] if args else None)
        if module.training and torch.is_grad_enabled() and ids is not None:
            self.last = (ids, output.logits)

    def take(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """The student logits of `batch`: the last forward's when it ran on this very batch, else a new forward."""
        last, self.last = self.last, None
        if last is not None and last[0] is batch["input_ids"]:
            return last[1]
        inputs = {k: v for k, v in batch.items() if k != "labels"}
        logits = model(**inputs, use_cache=False).logits
        self.last = None
        return logits

    def remove(self) -> None:
        self.handle.remove()
        self.last = None


def distillation(model: nn.Module, batch: dict[str, torch.Tensor], student: torch.Tensor, adapter: str,
                 temperature: float) -> torch.Tensor:
    """T² · KL(teacher ‖ student), the mean over the micro-batch's answer tokens (on every rank together)."""
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    teacher = teacher_logits(model, inputs, adapter)
    total, n = kd_sum(student, teacher, batch["labels"], temperature)
    world = comm.world()
    if world > 1:
        n = comm.all_sum([float(n)], student.device)[0]
    return total * world / max(n, 1)
