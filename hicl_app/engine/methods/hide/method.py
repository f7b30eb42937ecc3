"""HiDe-LLaVA: fuse what the tasks share, keep per-task experts where they differ.

Each stage trains a fresh LoRA expert of its task on every target layer (the same rank as
seq-lora, so parameter counts compare) and saves it as the stage's PEFT adapter, plus the HiDe
state (experts of every task so far, image/instruction anchors, manifest; see engine/hide/).
The model after stage t keeps experts 1..t in the expanded layers, mixed per sample by
softmax(((cos(f_img, a_img) + cos(f_txt, a_txt)) / 2) / tau), and the other layers' experts fused
into the base weights. Importing this module does not import torch.

Defaults follow the paper (expand the top layer, fresh experts, τ = 0.1) except the fusion:
`mean-delta` measured best of the three on the built-in benchmark (`hicl demo`, seed 0: Last
16.5 against 0.0 for the official `sum` and 1.6 for `ties`). On that benchmark's 4-layer tiny
model no layer is "general" (mean cross-task CKA 0.35-0.61 after six tasks, top layer lowest),
so fusing three of the four layers costs most of each task's update; `--expand auto` expands
all four (Last 51.4 against seq-lora's 22.0 on the README's machine). See its results table.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from .options import DEFAULTS, HELP, validate
from ..base import Method
from ..lora.single import ADAPTER

if TYPE_CHECKING:
    from torch import nn

    from ...spec import StageSpec


class Hide(Method):
    name = "hide"
    defaults = DEFAULTS
    option_help = HELP

    def __init__(self, options: dict[str, Any] | None = None):
        super().__init__(options)
        validate(self.options)

    def plan(self, task_names: list[str]) -> list[list[str]]:
        return [[name] for name in task_names]

    def prepare(self, base: nn.Module, spec: StageSpec) -> nn.Module:
        import torch

        from ...modeling.adapters import new_lora
        from .experts import copy_into
        from .stage import previous_state

        prev = previous_state(spec.prev_stage_dir, spec.stage_index)  # fail before training, not after
        # Each task's expert starts from its own random A (as separate experts do in the official
        # code); the training RNG stream is left as the pipeline seeded it.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(spec.train.seed * 1_000_003 + spec.stage_index)
            model = new_lora(base, spec.train)
        if prev is not None and self.options["expert_init"] == "previous":
            copy_into(model, prev.experts[-1])
        return model

    def save(self, model: nn.Module, spec: StageSpec) -> dict[str, str]:
        from ...modeling.adapters import save_adapter
        from .stage import end_stage

        hashes = {f"{ADAPTER}/{name}": digest for name, digest in save_adapter(model, spec.stage_dir / ADAPTER).items()}
        hashes.update(end_stage(model, spec, self.options))
        return hashes

    def load(self, base: nn.Module, stage_dir: Path) -> nn.Module:
        from .stage import load_model

        return load_model(base, Path(stage_dir), self.options)

    def eval_model(self, model: nn.Module, spec: StageSpec) -> nn.Module:
        base = model.unload() if callable(getattr(model, "get_base_model", None)) else model
        return self.load(base, spec.stage_dir)
