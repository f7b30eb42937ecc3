"""The `replay` method's options (pure Python). The default, a tenth of each earlier task, is the
usual small-memory setting of replay baselines in continual instruction tuning; `replay_per_task`
fixes the memory per task in samples instead.
"""

from __future__ import annotations

from dataclasses import dataclass

from ...errors import EngineError
from ..options import option


@dataclass(frozen=True)
class ReplayOptions:
    replay_ratio: float = option(0.1, "Share of each earlier task's training records replayed in every later stage "
                                      "(0 to 1; at least one record per task when above 0).")
    replay_per_task: int = option(0, "Records replayed per earlier task (at most its size); above 0 it replaces "
                                     "--replay-ratio.")

    def __post_init__(self) -> None:
        if not 0 <= self.replay_ratio <= 1:
            raise EngineError(f"replay option replay_ratio must be between 0 and 1, got {self.replay_ratio}",
                              hint="e.g. --replay-ratio 0.1 (a tenth of each earlier task)")
        if self.replay_per_task < 0:
            raise EngineError(f"replay option replay_per_task must be an integer >= 0, got {self.replay_per_task}",
                              hint="e.g. --replay-per-task 50 (0: use --replay-ratio)")

    def memory_size(self, n_records: int) -> int:
        """How many of an earlier task's `n_records` are replayed."""
        if self.replay_per_task:
            return min(self.replay_per_task, n_records)
        if self.replay_ratio == 0 or n_records == 0:
            return 0
        return min(n_records, max(1, int(self.replay_ratio * n_records + 0.5)))
