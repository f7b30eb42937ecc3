"""The `hide` method's options (pure Python, so `hicl run start` checks a value before anything
is recorded). Defaults follow the paper (expand the top layer, fresh experts, tau = 0.1) except the
fusion, `mean-delta`, which the README's results compare with the official `sum` and `ties`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Literal

from ...errors import EngineError
from ..options import option

FUSIONS = ("sum", "mean-delta", "ties")


@dataclass(frozen=True)
class HideOptions:
    tau: float = option(0.1, "Routing temperature: w = softmax(similarity / tau).")
    fusion: Literal["sum", "mean-delta", "ties"] = option(
        "mean-delta", "How the general layers fuse the task experts: sum (official: (ΣB)(ΣA)), mean-delta "
                      "(mean of B·A) or ties (TIES merging).")
    expand: str = option("top", "Layers that keep one expert per task: top (last decoder layer), auto (mean "
                                "cross-task CKA under --cka-threshold) or a comma-separated list of layer indices.")
    cka_threshold: float = option(0.9, "With --expand auto: expand the layers whose mean cross-task CKA is under this.")
    cka_kernel: Literal["linear", "rbf"] = option("linear", "CKA kernel for --expand auto: linear or rbf.")
    router_encoder: str | None = option(None, "Folder of a CLIP-style dual encoder for routing (default: the "
                                              "model's own vision tower and input embeddings).")
    merge_fused: bool = option(True, "Merge the fused layers into the base weights once at load (false: rebuild "
                                     "them on every forward like the official code, same outputs, slower).")
    ties_density: float = option(0.2, "With --fusion ties: fraction of each task delta's entries kept by magnitude.")
    probe_samples: int = option(16, "Probe samples per task for CKA (a fixed sample of its training records).")
    expert_init: Literal["fresh", "previous"] = option(
        "fresh", "How a task's expert starts: fresh (a new LoRA, as the paper) or previous (a copy of the "
                 "previous task's expert, which it then leaves unchanged).")
    routing: Literal["soft", "top1"] = option(
        "soft", "How the expanded layers mix the experts: soft (the paper: every expert, weighted by w) or "
                "top1 (each sample's highest-weight expert alone: one rank-r path per layer, not t).")
    merge_top1: bool = option(True, "With --routing top1: a batch whose samples all pick one expert runs with it "
                                    "merged into the weights (the cost of base + one merged LoRA; one extra copy "
                                    "of the expanded layers' weights); false: always through the low-rank path.")
    expert_rank: int = option(0, "Keep each task expert at this rank: at the end of its stage, the best rank-k "
                                 "approximation (truncated SVD) of each module's B·A replaces the trained factors "
                                 "in the HiDe state (the stage's PEFT adapter stays at the trained rank); 0: keep "
                                 "the trained rank.")

    def __post_init__(self) -> None:
        if not self.tau > 0:
            raise EngineError(f"hide option tau must be > 0, got {self.tau}", hint="the paper uses 0.1")
        if not 0 < self.cka_threshold <= 1:
            raise EngineError(f"cka_threshold must be in (0, 1], got {self.cka_threshold}")
        if not 0 < self.ties_density <= 1:
            raise EngineError(f"ties_density must be in (0, 1], got {self.ties_density}")
        if self.probe_samples < 2:
            raise EngineError(f"probe_samples must be >= 2, got {self.probe_samples}")
        if self.expert_rank < 0:
            raise EngineError(f"expert_rank must be >= 0 (0: the trained rank), got {self.expert_rank}",
                              hint="e.g. --expert-rank 2")
        if self.expert_rank and self.expert_init == "previous":
            raise EngineError("expert_rank cannot be combined with expert_init=previous: a compressed expert "
                              "cannot seed a LoRA of the trained rank", hint="drop one of the two options")
        expand = self.expand.strip().lower()
        if expand not in ("top", "auto"):
            parts = [p for p in expand.replace(" ", "").split(",") if p]
            if not parts or not all(p.lstrip("-").isdigit() for p in parts):
                raise EngineError(f"expand must be top, auto or a comma-separated list of layer indices, "
                                  f"not {self.expand!r}", hint="e.g. --expand top, --expand auto or --expand 10,11")
        folder = self.router_encoder
        if folder is not None:
            if not folder:
                raise EngineError(f"router_encoder must be a folder path, got {folder!r}")
            if not os.path.isfile(os.path.join(os.path.expanduser(folder), "config.json")):
                raise EngineError(f"router encoder folder {folder} has no config.json",
                                  hint="pass a folder saved with save_pretrained of a CLIP-style model and its processor")
