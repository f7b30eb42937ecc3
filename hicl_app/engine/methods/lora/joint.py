"""Joint training, the upper bound: one LoRA on the union of every task, in a single stage."""

from __future__ import annotations

from .single import SingleLora


class Joint(SingleLora):
    name = "joint"
    continues = False

    def plan(self, task_names: list[str]) -> list[list[str]]:
        return [list(task_names)]
