"""A single stage trains one fresh LoRA on the shuffled union of every task's training records,
with the run's steps; it is the multitask reference continual methods are measured against.
"""

from __future__ import annotations

from .. import register
from .single import SingleLora


@register
class Joint(SingleLora):
    """Joint training, the upper bound: one LoRA on the union of every task, in a single stage."""

    name = "joint"
    reference = "multitask training, the usual upper bound of continual learning"
    continues = False

    def plan(self, task_names: list[str]) -> list[list[str]]:
        return [list(task_names)]
