"""The `moelora` method's options (pure Python). Defaults follow CoIN's MoELoRA: 4 experts, a dense
softmax mixture (every expert, `top_k` 0) and the run's LoRA rank split evenly between the experts.
"""

from __future__ import annotations

from dataclasses import dataclass

from ...errors import EngineError
from ..options import option


@dataclass(frozen=True)
class MoELoraOptions:
    experts: int = option(4, "LoRA experts per target linear (CoIN's default: 4).")
    top_k: int = option(0, "Experts each token uses: its k highest router gates, renormalised to sum to 1; "
                           "0: every expert (CoIN's dense softmax mixture).")
    rank_per_expert: int = option(0, "Rank of each expert; 0: the run's LoRA rank divided by the expert count, "
                                     "as CoIN splits one rank-r LoRA into its experts (the rank must then divide).")

    def __post_init__(self) -> None:
        checks = [(self.experts >= 1, f"experts must be an integer >= 1, got {self.experts}"),
                  (0 <= self.top_k <= self.experts,
                   f"top_k must be between 0 (every expert) and experts={self.experts}, got {self.top_k}"),
                  (self.rank_per_expert >= 0,
                   f"rank_per_expert must be an integer >= 0 (0: rank / experts), got {self.rank_per_expert}")]
        bad = [msg for ok, msg in checks if not ok]
        if bad:
            raise EngineError("moelora option " + "; ".join(bad), hint="e.g. --experts 4 --top-k 2")
