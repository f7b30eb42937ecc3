"""The `o-lora` method's options (pure Python). λ₁ defaults to MCITlib's LLaVA setting (0.05), not
the paper's 0.5; λ₂ to the official scripts' 0 (see `method.py` for why).
"""

from __future__ import annotations

from dataclasses import dataclass

from ...errors import EngineError
from ..options import option


@dataclass(frozen=True)
class OLoraOptions:
    lambda_orth: float = option(0.05, "λ₁, weight of the orthogonality penalty Σ_s Σ_modules Σ|A_s A_tᵀ| between "
                                      "the new task's A and every earlier task's (0.05: MCITlib's LLaVA setting; "
                                      "the paper uses 0.5 on T5/LLaMA).")
    lambda_l2: float = option(0.0, "λ₂, weight of the L2 penalty Σ ‖P‖_F over the new LoRA's A and B factors "
                                   "(0: off, as in the official scripts).")

    def __post_init__(self) -> None:
        bad = [msg for ok, msg in [(self.lambda_orth >= 0, f"lambda_orth must be a number >= 0, got {self.lambda_orth}"),
                                   (self.lambda_l2 >= 0, f"lambda_l2 must be a number >= 0, got {self.lambda_l2}")]
               if not ok]
        if bad:
            raise EngineError("o-lora option " + "; ".join(bad), hint="e.g. --lambda-orth 0.5")
