"""Stage k loads stage k-1's adapter and keeps training it on task k only, so the accuracy matrix
shows how much plain sequential tuning forgets: the model after task t is
`W0 + (alpha/r) B_t A_t`, where `(A_t, B_t)` started from `(A_{t-1}, B_{t-1})`.
"""

from __future__ import annotations

from .. import register
from .single import SingleLora


@register
class SeqLora(SingleLora):
    """Seq-LoRA, the lower bound: one LoRA trained task after task, never looking back."""

    name = "seq-lora"
    reference = "the standard sequential fine-tuning baseline (MCITlib's LoRA-FT)"
    continues = True

    def plan(self, task_names: list[str]) -> list[list[str]]:
        return [[name] for name in task_names]
