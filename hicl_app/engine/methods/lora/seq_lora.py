"""Seq-LoRA, the lower bound: one LoRA trained task after task, never looking back.

Stage k loads stage k-1's adapter and keeps training it on task k only, so the accuracy matrix
shows how much plain sequential tuning forgets.
"""

from __future__ import annotations

from .single import SingleLora


class SeqLora(SingleLora):
    name = "seq-lora"
    continues = True

    def plan(self, task_names: list[str]) -> list[list[str]]:
        return [[name] for name in task_names]
