"""The `lwf` method's options (pure Python). Defaults follow Learning without Forgetting: T = 2
and a distillation weight of 1 (its λ_o)."""

from __future__ import annotations

from dataclasses import dataclass

from ...errors import EngineError
from ..options import option


@dataclass(frozen=True)
class LwfOptions:
    temperature: float = option(2.0, "Distillation temperature T: both distributions are softmax(z / T).")
    weight: float = option(1.0, "Weight w of the distillation term w · T² · KL (0 turns it off).")

    def __post_init__(self) -> None:
        if not self.temperature > 0:
            raise EngineError(f"lwf option temperature must be a number > 0, got {self.temperature}",
                              hint="Learning without Forgetting uses --temperature 2")
        if not self.weight >= 0:
            raise EngineError(f"lwf option weight must be a number >= 0, got {self.weight}",
                              hint="e.g. --weight 1 (0: no distillation)")
