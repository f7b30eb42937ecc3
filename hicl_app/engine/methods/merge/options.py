"""The `merge` method's options (pure Python). Defaults: task arithmetic (the mean of the task
deltas), merged exactly in delta space; TIES and DARE keep 20% of each delta (`density`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from ...errors import EngineError
from ..options import option


@dataclass(frozen=True)
class MergeOptions:
    merge_mode: Literal["linear", "ties", "dare_linear", "dare_ties"] = option(
        "linear", "How the task LoRAs merge: linear (task arithmetic: the weighted sum of the task deltas), ties "
                  "(trim, elect sign, disjoint mean), dare_linear (random drop and rescale, then sum) or dare_ties "
                  "(DARE, then TIES' sign election).")
    merge_space: Literal["delta", "factors"] = option(
        "delta", "What is merged: delta (each task's B·A, then a LoRA of rank --merge-rank by SVD; linear with "
                 "--merge-rank 0 is exact) or factors (A's and B's merged separately, PEFT's cheap approximation).")
    density: float = option(0.2, "ties / dare: share of each task delta's entries kept (by magnitude for ties, at "
                                  "random for dare).")
    task_weight: float = option(0.0, "Weight of every task in the merge; 0: 1/t after t tasks for linear and "
                                     "dare_linear (the mean), 1 for ties and dare_ties (their disjoint mean already "
                                     "averages).")
    merge_rank: int = option(0, "Rank of the merged LoRA in delta space; 0: the sum of the task ranks (exact for "
                                "linear).")

    def __post_init__(self) -> None:
        checks = [(0 < self.density <= 1, f"density must be in (0, 1], got {self.density}"),
                  (self.task_weight >= 0, f"task_weight must be a number >= 0 (0: automatic), got {self.task_weight}"),
                  (self.merge_rank >= 0, f"merge_rank must be an integer >= 0 (0: sum of ranks), got {self.merge_rank}")]
        bad = [msg for ok, msg in checks if not ok]
        if bad:
            raise EngineError("merge option " + "; ".join(bad), hint="e.g. --merge-mode ties --density 0.2")
