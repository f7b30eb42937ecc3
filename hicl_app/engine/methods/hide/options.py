"""The `hide` method's options: defaults, one line of help each, and validation (pure Python).

Kept free of torch so `hicl run start` can check a bad value before anything is recorded.
"""

from __future__ import annotations

import os
from typing import Any

from ...errors import EngineError

FUSIONS = ("sum", "mean-delta", "ties")
KERNELS = ("linear", "rbf")
EXPERT_INITS = ("fresh", "previous")
ROUTINGS = ("soft", "top1")

DEFAULTS: dict[str, Any] = {
    "tau": 0.1,
    "fusion": "mean-delta",
    "expand": "top",
    "cka_threshold": 0.9,
    "cka_kernel": "linear",
    "router_encoder": None,
    "merge_fused": True,
    "ties_density": 0.2,
    "probe_samples": 16,
    "expert_init": "fresh",
    "routing": "soft",
    "merge_top1": True,
    "expert_rank": 0,
}

HELP: dict[str, str] = {
    "tau": "Routing temperature: w = softmax(similarity / tau).",
    "fusion": "How the general layers fuse the task experts: sum (official: (ΣB)(ΣA)), mean-delta "
              "(mean of B·A) or ties (TIES merging).",
    "expand": "Layers that keep one expert per task: top (last decoder layer), auto (mean cross-task CKA "
              "under --cka-threshold) or a comma-separated list of layer indices.",
    "cka_threshold": "With --expand auto: expand the layers whose mean cross-task CKA is under this.",
    "cka_kernel": "CKA kernel for --expand auto: linear or rbf.",
    "router_encoder": "Folder of a CLIP-style dual encoder for routing (default: the model's own vision "
                      "tower and input embeddings).",
    "merge_fused": "Merge the fused layers into the base weights once at load (false: rebuild them on "
                   "every forward like the official code, same outputs, slower).",
    "ties_density": "With --fusion ties: fraction of each task delta's entries kept by magnitude.",
    "probe_samples": "Probe samples per task for CKA (a fixed sample of its training records).",
    "expert_init": "How a task's expert starts: fresh (a new LoRA, as the paper) or previous (a copy of the "
                   "previous task's expert, which it then leaves unchanged).",
    "routing": "How the expanded layers mix the experts: soft (the paper: every expert, weighted by w) or "
               "top1 (each sample's highest-weight expert alone: one rank-r path per layer, not t).",
    "merge_top1": "With --routing top1: a batch whose samples all pick one expert runs with it merged into "
                  "the weights (the cost of base + one merged LoRA; one extra copy of the expanded layers' "
                  "weights); false: always through the expert's low-rank path.",
    "expert_rank": "Keep each task expert at this rank: at the end of its stage, the best rank-k approximation "
                   "(truncated SVD) of each module's B·A replaces the trained factors in the HiDe state (the "
                   "stage's PEFT adapter stays at the trained rank). Fewer parameters kept; 0: keep the trained rank.",
}


def _number(options: dict, key: str, kind: type) -> Any:
    value = options[key]
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (kind is int and not isinstance(value, int)):
        raise EngineError(f"hide option {key} must be a{'n integer' if kind is int else ' number'}, got {value!r}")
    return value


def validate(options: dict[str, Any]) -> None:
    """Raise EngineError (what, how to fix) on the first bad value."""
    if not _number(options, "tau", float) > 0:
        raise EngineError(f"hide option tau must be > 0, got {options['tau']}", hint="the paper uses 0.1")
    if options["fusion"] not in FUSIONS:
        raise EngineError(f"unknown fusion {options['fusion']!r}", hint=f"use one of {', '.join(FUSIONS)}")
    if options["cka_kernel"] not in KERNELS:
        raise EngineError(f"unknown CKA kernel {options['cka_kernel']!r}", hint=f"use one of {', '.join(KERNELS)}")
    if not 0 < _number(options, "cka_threshold", float) <= 1:
        raise EngineError(f"cka_threshold must be in (0, 1], got {options['cka_threshold']}")
    if not 0 < _number(options, "ties_density", float) <= 1:
        raise EngineError(f"ties_density must be in (0, 1], got {options['ties_density']}")
    if _number(options, "probe_samples", int) < 2:
        raise EngineError(f"probe_samples must be >= 2, got {options['probe_samples']}")
    for key in ("merge_fused", "merge_top1"):
        if not isinstance(options[key], bool):
            raise EngineError(f"{key} must be true or false, got {options[key]!r}")
    if options["expert_init"] not in EXPERT_INITS:
        raise EngineError(f"unknown expert_init {options['expert_init']!r}", hint=f"use one of {', '.join(EXPERT_INITS)}")
    rank = _number(options, "expert_rank", int)
    if rank < 0:
        raise EngineError(f"expert_rank must be >= 0 (0: the trained rank), got {rank}", hint="e.g. --expert-rank 2")
    if rank and options["expert_init"] == "previous":
        raise EngineError("expert_rank cannot be combined with expert_init=previous: a compressed expert cannot "
                          "seed a LoRA of the trained rank", hint="drop one of the two options")
    if options["routing"] not in ROUTINGS:
        raise EngineError(f"unknown routing {options['routing']!r}", hint=f"use one of {', '.join(ROUTINGS)}")
    expand = str(options["expand"]).strip().lower()
    if expand not in ("top", "auto"):
        parts = [p for p in expand.replace(" ", "").split(",") if p]
        if not parts or not all(p.lstrip("-").isdigit() for p in parts):
            raise EngineError(f"expand must be top, auto or a comma-separated list of layer indices, not {options['expand']!r}",
                              hint="e.g. --expand top, --expand auto or --expand 10,11")
    folder = options["router_encoder"]
    if folder is not None:
        if not isinstance(folder, str) or not folder:
            raise EngineError(f"router_encoder must be a folder path, got {folder!r}")
        if not os.path.isfile(os.path.join(os.path.expanduser(folder), "config.json")):
            raise EngineError(f"router encoder folder {folder} has no config.json",
                              hint="pass a folder saved with save_pretrained of a CLIP-style model and its processor")
