"""The `llava-c` method's options (pure Python). The defaults are this project's reading of the
paper, whose code is not published: SAC with the projection overlap at gamma = 1 and a UIR weight
of 0.01; the README's results compare the other choices.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from ...errors import EngineError
from ..options import option


@dataclass(frozen=True)
class LlavaCOptions:
    sac: bool = option(True, "on: spectral-aware consolidation of each task's delta; off: plain addition "
                             "(exact, the rank grows).")
    sac_gamma: float = option(1.0, "Exponent of the overlap calibration: sigma_k / c_k^gamma (0: truncated SVD, "
                                   "no calibration).")
    sac_rank: int = option(0, "Rank bound of the consolidated delta per layer (0: twice the LoRA rank).")
    sac_overlap: Literal["projection", "aligned"] = option(
        "projection", "How SAC measures the two tasks' share of a direction: projection (|u_k' D v_k| vs "
                      "|u_k' Delta v_k|) or aligned (cosines of the two contributions, which stays 1 where the "
                      "SVD merely mixes independent directions).")
    uir: bool = option(True, "on: unsupervised inquiry regularization; off: none.")
    uir_weight: float = option(0.01, "Weight of the UIR feature distance in the loss (0 disables it).")
    uir_distance: Literal["mse", "cos"] = option(
        "mse", "UIR distance between last hidden states: mse (squared L2 per token) or cos (1 - cosine).")
    uir_batch: int = option(4, "Text-only inquiries per optimizer step (half task instructions, half general "
                               "questions).")
    pretrain_task: str = option("", "Task whose captions tune the projector before the first stage (empty: no "
                                    "pretraining).")
    pretrain_steps: int = option(100, "Projector pretraining steps.")
    pretrain_lr: float = option(1e-3, "Projector pretraining learning rate.")

    def __post_init__(self) -> None:
        checks = [(self.sac_gamma >= 0, "sac_gamma must be a number >= 0"),
                  (self.sac_rank >= 0, "sac_rank must be an integer >= 0 (0: twice the LoRA rank)"),
                  (self.uir_weight >= 0, "uir_weight must be a number >= 0"),
                  (self.uir_batch >= 1, "uir_batch must be an integer >= 1"),
                  (self.pretrain_steps >= 1, "pretrain_steps must be an integer >= 1"),
                  (self.pretrain_lr > 0, "pretrain_lr must be a number > 0")]
        bad = [msg for ok, msg in checks if not ok]
        if bad:
            raise EngineError("llava-c option " + "; ".join(bad))
