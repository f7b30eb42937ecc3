"""Stage t trains a new LoRA (A_t, B_t) on task t while the LoRAs of tasks 0..t-1 stay attached,
frozen, so the model during and after task t is the sum of every task's LoRA:

    W x + Σ_{s ≤ t} (α/r) B_s A_s x

and the loss adds, over every target module (as the official code computes it),

    λ₁ Σ_{s<t} Σ_{j,k} |(A_s A_tᵀ)[j, k]|  +  λ₂ (‖A_t‖_F + ‖B_t‖_F)

The first term pushes the rows of A_t (the input directions task t reads) orthogonal to those of
every earlier A_s, so the new update interferes little with the earlier tasks' subspaces; the
norm is the entrywise L1 of the r×r overlap (the paper writes it as a sum over the entries of
A_s A_tᵀ, the official code as `abs(A_s @ A_tᵀ).sum()`). The second is the official code's L2:
Frobenius norms of the new factors, not squared.

Defaults: λ₁ = 0.05, MCITlib's LLaVA setting, not the paper's 0.5. hicl tunes LLaVA-style models
on visual instruction data with LoRA on every linear of every decoder layer, which is the setting
MCITlib tuned its value in; the paper's 0.5 was set for T5 text-classification sequences. The
penalty is a sum over the target modules, so it grows with their number and λ₁ does not carry
over from one targeting to another. λ₂ = 0, the official scripts' value (`--lambda-l2` turns it on).

The earlier tasks' LoRAs and the new one are PEFT adapters of one model, all active (PEFT sums
the active adapters), the earlier ones frozen. A sum of t LoRAs of rank r is one LoRA of rank t·r
(A's stacked row-wise, B's column-wise, each task's scale folded in), which is PEFT's `cat`
combination (`add_weighted_adapter`), so the answering model is one plain PEFT adapter.

Files: `adapter/`, that rank-t·r sum in PEFT layout (`PeftModel.from_pretrained(base, 'adapter')`
gives the model after task t, with no hicl code), and `tasks/<i>/`, task i's own LoRA in PEFT
layout (what the next stage attaches), with `tasks/manifest.json` naming the tasks.
O-LoRA's penalty reads whole factors, so `--strategy fsdp` (sharded factors) is refused; DDP runs
it on every rank alike.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from ...errors import EngineError
from .. import register
from ..base import Export, StageContext, _existing
from ..lora.single import BuiltAdapterLora
from .options import OLoraOptions

if TYPE_CHECKING:
    import torch
    from torch import nn

ADAPTER = "adapter"
SUM = "o-lora-sum"


@register
class OLora(BuiltAdapterLora):
    """O-LoRA: a new LoRA per task, orthogonal to the earlier tasks' LoRAs, all of them summed."""

    name = "o-lora"
    Options = OLoraOptions
    reference = ("Wang et al., Orthogonal Subspace Learning for Language Model Continual Learning, "
                 "Findings of EMNLP 2023 (arXiv 2310.14152)")

    def __init__(self, options=None):
        super().__init__(options)
        self._factors: list = []  # penalty.Factors of every target module of the stage's model

    def plan(self, task_names: list[str]) -> list[list[str]]:
        return [[name] for name in task_names]

    def prepare(self, base: nn.Module, ctx: StageContext) -> nn.Module:
        import torch
        from peft.tuners.lora import LoraLayer

        from ...distributed import comm
        from ...modeling import task_adapters
        from ...modeling.adapters import new_lora
        from .penalty import Factors

        spec = ctx.spec
        if spec.strategy == "fsdp" and comm.world() > 1:
            raise EngineError("o-lora's orthogonality penalty needs every factor whole, which --strategy fsdp shards",
                              hint="run o-lora with --strategy ddp")
        if spec.stage_index > 0 and spec.prev_stage_dir is None:
            raise EngineError(f"o-lora stage {spec.stage_index + 1} needs the previous stage's folder",
                              hint="run the stages in order")
        # "default": this task's LoRA, trainable, from its own random A (the pipeline's seed alone
        # would start every task at the first task's A, the least orthogonal start there is)
        devices = [ctx.device] if getattr(ctx.device, "type", "cpu") == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(spec.train.seed * 1_000_003 + spec.stage_index)
            model = new_lora(base, spec.train)
        earlier = task_adapters.attach(model, spec.prev_stage_dir) if spec.stage_index > 0 else []
        if earlier:
            model.base_model.set_adapter(["default", *earlier])  # PEFT sums the active adapters
            for name, param in model.named_parameters():
                if any(f".{e}." in name for e in earlier):
                    param.requires_grad_(False)
        self._factors = [Factors(m.lora_A["default"].weight, m.lora_B["default"].weight,
                                 [m.lora_A[e].weight for e in earlier if e in m.lora_A])
                         for m in model.modules() if isinstance(m, LoraLayer) and "default" in m.lora_A]
        return model

    def extra_loss(self, model: nn.Module, batch: dict[str, torch.Tensor], step: int) -> torch.Tensor | None:
        from .penalty import penalty

        return penalty(self._factors, self.options.lambda_orth, self.options.lambda_l2)

    def save(self, model: nn.Module, ctx: StageContext) -> dict[str, str]:
        from ...modeling import task_adapters
        from ...modeling.adapters import save_adapter

        spec = ctx.spec
        if len(spec.train_tasks) != 1:
            raise EngineError(f"an o-lora stage trains exactly one task, this one has {len(spec.train_tasks)}")
        files = task_adapters.write(model, spec.stage_dir, spec.prev_stage_dir, spec.train_tasks[0].name)
        earlier = sorted((n for n in model.peft_config if n.startswith("task-")), key=lambda n: int(n[5:]))
        model.add_weighted_adapter([*earlier, "default"], [1.0] * (len(earlier) + 1), SUM, combination_type="cat")
        try:
            files.update({f"{ADAPTER}/{n}": h for n, h in save_adapter(model, spec.stage_dir / ADAPTER, SUM).items()})
        finally:
            model.delete_adapter(SUM)
        return files

    def export(self, stage_dir: Path) -> Export:
        files = _existing(stage_dir, [f"{ADAPTER}/adapter_config.json", f"{ADAPTER}/adapter_model.safetensors"])
        return Export(files=files, peft=True,
                      loader="PeftModel.from_pretrained(base, 'adapter'): one LoRA of rank t·r, the sum of every "
                             "task's LoRA (tasks/<i>/ holds each task's own, what the next stage attaches)")
