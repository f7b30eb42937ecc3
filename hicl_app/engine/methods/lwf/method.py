"""Learning without Forgetting. Stage k trains the LoRA of stage k-1 further (as Seq-LoRA) while
distilling the model of stage k-1 on task k's own inputs (no earlier data):

    loss_k = task loss + w · T² · mean over answer tokens of KL(softmax(z_{k-1}/T) ‖ softmax(z/T))

with z the logits of the model being trained and z_{k-1} those of the previous stage's model on
the same input, teacher-forced on the task's answer. The teacher is the previous stage's adapter,
loaded frozen as a second PEFT adapter on the same base (not a second copy of the model) and run
in eval mode; at the start of a stage the trained adapter equals it, so the term starts at 0 (with
LoRA dropout 0). Defaults: T = 2, w = 1 (the paper's λ_o). It costs one teacher forward per
micro-batch. The first stage has no teacher and is plain LoRA training.

Files: the stage's LoRA in PEFT layout (`adapter/`), the model that answers (the teacher adapter is
dropped before saving): plain `PeftModel.from_pretrained`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .. import register
from ..base import StageContext
from ..lora.seq_lora import SeqLora
from . import TEACHER
from .options import LwfOptions

if TYPE_CHECKING:
    import torch
    from torch import nn

ADAPTER = "adapter"


@register
class Lwf(SeqLora):
    """LwF: Seq-LoRA distilled from the previous stage's model on each new task's inputs."""

    name = "lwf"
    Options = LwfOptions
    reference = "Li & Hoiem, Learning without Forgetting, ECCV 2016 (TPAMI 2017)"

    def __init__(self, options: dict[str, Any] | None = None):
        super().__init__(options)
        self._student = None  # distill.StudentLogits while a stage with a teacher trains

    def prepare(self, base: nn.Module, ctx: StageContext) -> nn.Module:
        model = super().prepare(base, ctx)
        if self._student is not None:
            self._student.remove()
            self._student = None
        if ctx.spec.stage_index > 0 and self.options.weight > 0:
            from ...errors import EngineError
            from .distill import StudentLogits

            try:
                model.load_adapter(ctx.prev_stage_dir / ADAPTER, adapter_name=TEACHER, is_trainable=False)
            except Exception as exc:
                raise EngineError(f"cannot load the previous stage's adapter as LwF's teacher: "
                                  f"{type(exc).__name__}: {exc}") from exc
            for name, param in model.named_parameters():
                if f".{TEACHER}." in name:
                    param.requires_grad_(False)
            self._student = StudentLogits(model)
        return model

    def extra_loss(self, model: nn.Module, batch: dict[str, torch.Tensor], step: int) -> torch.Tensor | None:
        if self._student is None:
            return None
        from .distill import distillation

        student = self._student.take(model, batch)
        return self.options.weight * distillation(model, batch, student, TEACHER, self.options.temperature)

    def after_train(self, model: nn.Module, ctx: StageContext) -> None:
        """Drop the teacher: what is saved and evaluated is the trained adapter alone."""
        if self._student is not None:
            self._student.remove()
            self._student = None
        if TEACHER in getattr(model, "peft_config", {}):
            model.delete_adapter(TEACHER)
