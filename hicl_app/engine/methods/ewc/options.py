"""The `ewc` method's options (pure Python).

Defaults: λ = 1 because the Fisher is normalised per answer token (see `method.py`), so that at
λ = 1 the penalty is the Laplace approximation of the earlier tasks' loss on the scale of the
task loss: each earlier task then weighs as much as the current one. γ = 1 keeps every earlier
task at that weight (EWC's sum of penalties, with one anchor); γ < 1 lets old tasks fade, as in
Progress & Compress. 256 samples bound the per-sample gradients the Fisher costs per stage.
"""

from __future__ import annotations

from dataclasses import dataclass

from ...errors import EngineError
from ..options import option


@dataclass(frozen=True)
class EwcOptions:
    ewc_lambda: float = option(1.0, "Penalty strength λ in (λ/2) Σ F (θ − θ*)² (0 turns the penalty off).")
    gamma: float = option(1.0, "Online decay of the accumulated Fisher: F ← γ F_prev + F_t (0 < γ ≤ 1; 1 keeps "
                               "every earlier task at full weight).")
    fisher_samples: int = option(256, "Training records of each stage whose per-sample gradients estimate its "
                                      "Fisher (a seeded sample when the stage has more).")

    def __post_init__(self) -> None:
        checks = [(self.ewc_lambda >= 0, f"ewc_lambda must be a number >= 0, got {self.ewc_lambda}"),
                  (0 < self.gamma <= 1, f"gamma must be in (0, 1], got {self.gamma}"),
                  (self.fisher_samples >= 1, f"fisher_samples must be an integer >= 1, got {self.fisher_samples}")]
        bad = [msg for ok, msg in checks if not ok]
        if bad:
            raise EngineError("ewc option " + "; ".join(bad), hint="`hicl run methods ewc` lists the options")
