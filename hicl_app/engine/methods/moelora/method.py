"""Every target linear of the language model gets E LoRA experts (A_e, B_e) of rank r_e and a
router R (E × in, no bias), and the model is trained task after task, each stage continuing the
previous one's experts and routers (like seq-lora):

    g(x) = softmax(R x)                           per token, Σ_e g_e(x) = 1
    y    = W x + (α / (E · r_e)) Σ_e g_e(x) B_e A_e x

CoIN's MoELoRA mixes every expert (`--top-k 0`, the default); `--top-k k` keeps each token's k
largest gates, renormalised (a softmax over the k largest logits), so the other experts get
exactly 0. By default the run's LoRA rank r is split between the experts (r_e = r / E, as CoIN
does), so the parameter count and the scale α/r are those of seq-lora's LoRA plus the routers;
`--rank-per-expert` sets r_e instead. The router reads the layer's input token by token, so
padding tokens never change another token's gates and batched answers equal one-by-one answers.

PEFT has no mixture-of-LoRA-experts adapter type (its LoRA layers sum the active adapters with
fixed weights, none routed per token), so `layer.py` wraps the target linears itself, the way
CoIN's fork of PEFT does, and the state is saved beside a JSON config rather than as a PEFT adapter.

Files: `moelora/weights.safetensors` (every module's router, stacked A's and B's) and
`moelora/config.json` (experts, rank per expert, top-k, scale, dropout, the wrapped modules).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from ...errors import EngineError
from .. import register
from ..base import Export, Method, StageContext, _existing
from . import CONFIG_FILE, STATE_DIR, WEIGHTS_FILE
from .options import MoELoraOptions

if TYPE_CHECKING:
    from torch import nn

    from ...config import TrainConfig


@register
class MoELora(Method):
    """MoELoRA: a per-token routed mixture of LoRA experts in every target linear, trained task by task."""

    name = "moelora"
    Options = MoELoraOptions
    reference = ("Chen et al., CoIN: A Benchmark of Continual Instruction tuNing for Multimodel Large Language "
                 "Model, NeurIPS 2024 Datasets and Benchmarks (its MoELoRA baseline)")

    def plan(self, task_names: list[str]) -> list[list[str]]:
        return [[name] for name in task_names]

    def expert_rank(self, train: TrainConfig) -> int:
        if self.options.rank_per_expert:
            return self.options.rank_per_expert
        if train.rank % self.options.experts:
            raise EngineError(f"moelora splits the LoRA rank {train.rank} between {self.options.experts} experts, "
                              "which does not divide it",
                              hint=f"use a --rank that {self.options.experts} divides, or set --rank-per-expert")
        return train.rank // self.options.experts

    def config(self, base: nn.Module, train: TrainConfig):
        from .layer import MoEConfig, target_paths

        r_e = self.expert_rank(train)
        return MoEConfig(experts=self.options.experts, rank_per_expert=r_e, top_k=self.options.top_k,
                         scale=float(train.alpha) / (self.options.experts * r_e), dropout=train.dropout,
                         modules=target_paths(base, train.targets))

    def prepare(self, base: nn.Module, ctx: StageContext) -> nn.Module:
        from .layer import load_state, read_config, wrap

        spec = ctx.spec
        for param in base.parameters():
            param.requires_grad_(False)
        config = self.config(base, spec.train)
        if spec.stage_index == 0:
            modules = wrap(base, config)
        else:
            if spec.prev_stage_dir is None:
                raise EngineError(f"moelora stage {spec.stage_index + 1} needs the previous stage's folder",
                                  hint="run the stages in order")
            saved = read_config(spec.prev_stage_dir)
            if (saved.experts, saved.rank_per_expert, saved.top_k, saved.modules) != \
                    (config.experts, config.rank_per_expert, config.top_k, config.modules):
                raise EngineError("moelora's experts, rank, top-k or targets differ from the previous stage's",
                                  hint="keep the same options, --rank and --targets for the whole run")
            modules = load_state(base, spec.prev_stage_dir, config)
        for module in modules.values():
            for param in module.trainable():
                param.requires_grad_(True)
        return base

    def save(self, model: nn.Module, ctx: StageContext) -> dict[str, str]:
        from .layer import save_state

        return save_state(model, self.config_of(model, ctx), ctx.stage_dir, ctx.spec.model.base)

    def config_of(self, model: nn.Module, ctx: StageContext):
        from .layer import MoEConfig, moe_modules

        modules = moe_modules(model)
        first = next(iter(modules.values()), None)
        if first is None:
            raise EngineError("the model carries no MoELoRA module to save")
        r_e = self.expert_rank(ctx.spec.train)
        return MoEConfig(experts=first.experts, rank_per_expert=r_e, top_k=first.top_k, scale=first.scale,
                         dropout=ctx.spec.train.dropout, modules=list(modules))

    def load(self, base: nn.Module, stage_dir: Path) -> nn.Module:
        from .layer import load_state

        load_state(base, Path(stage_dir))
        for param in base.parameters():
            param.requires_grad_(False)
        return base

    def export(self, stage_dir: Path) -> Export:
        files = _existing(stage_dir, [f"{STATE_DIR}/{WEIGHTS_FILE}", f"{STATE_DIR}/{CONFIG_FILE}"])
        return Export(files=files, peft=False,
                      loader=f"hicl: get_method('moelora').load(base, stage_dir) wraps each linear that "
                             f"{STATE_DIR}/{CONFIG_FILE} lists with its router and experts from "
                             f"{STATE_DIR}/{WEIGHTS_FILE} (PEFT has no mixture-of-LoRA-experts adapter type)")
