"""Online EWC on the LoRA parameters. Stage k trains the LoRA of stage k-1 further (as Seq-LoRA)
with a quadratic penalty that keeps the parameters the earlier tasks rely on near their values:

    loss_k = task loss + (λ/2) Σ_j F̄_{k-1,j} (θ_j − θ*_{k-1,j})²

over every LoRA factor entry j, θ* the parameters at the end of stage k-1. After each stage
(`after_train`) the diagonal empirical Fisher of the stage's task is estimated on at most
`--fisher-samples` of its training records (a sample seeded by the run seed and stage index):

    F_t = Σ_i (∇θ log p(y_i | x_i))² / Σ_i T_i

one backward pass per sample i, T_i its answer tokens, and accumulated online,

    F̄_t = γ F̄_{t-1} + F_t,   θ*_t = θ at the end of stage t.

Normalising by answer tokens puts the penalty on the scale of the training loss, a per-token
mean: at λ = 1 it is the Laplace (quadratic) approximation of the earlier tasks' loss around θ*,
each earlier task weighing as much as the current one (γ = 1). Both defaults are therefore 1; the
empirical, diagonal Fisher underestimates the curvature, so a larger λ holds the old tasks harder
at the cost of the new one.

Files: the stage's LoRA in PEFT layout (`adapter/`, the model that answers: plain
`PeftModel.from_pretrained`) and `ewc/state.safetensors` beside it, with the accumulated Fisher
(`fisher.<parameter>`) and the anchor (`anchor.<parameter>`) that the next stage reads. The run's
last stage computes no Fisher and writes no state: no stage reads it.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ...errors import EngineError
from .. import register
from ..base import StageContext
from ..lora.seq_lora import SeqLora
from . import STATE_DIR, STATE_FILE
from .options import EwcOptions

if TYPE_CHECKING:
    import torch
    from torch import nn


@register
class Ewc(SeqLora):
    """EWC: Seq-LoRA with an online diagonal-Fisher penalty holding the earlier tasks' parameters."""

    name = "ewc"
    Options = EwcOptions
    reference = ("Kirkpatrick et al., Overcoming catastrophic forgetting in neural networks, PNAS 2017; online "
                 "form: Schwarz et al., Progress & Compress, ICML 2018")

    def __init__(self, options: dict[str, Any] | None = None):
        super().__init__(options)
        self._penalty = None  # fisher.Penalty of the earlier stages, None at the first stage
        self._state: tuple[dict, dict, dict[str, str]] | None = None  # (Fisher, anchor, metadata) to save

    def _previous(self, ctx: StageContext) -> Path:
        if ctx.prev_stage_dir is None:
            raise EngineError(f"ewc stage {ctx.spec.stage_index + 1} needs the previous stage's folder",
                              hint="run the stages in order")
        return Path(ctx.prev_stage_dir) / STATE_DIR / STATE_FILE

    def prepare(self, base: nn.Module, ctx: StageContext) -> nn.Module:
        from .fisher import Penalty, load_state

        self._penalty = None
        if ctx.spec.stage_index > 0:
            fisher, anchor = load_state(self._previous(ctx))  # fail before training, not after
            if self.options.ewc_lambda > 0:
                self._penalty = Penalty(fisher, anchor, self.options.ewc_lambda)
        return super().prepare(base, ctx)

    def extra_loss(self, model: nn.Module, batch: dict[str, torch.Tensor], step: int) -> torch.Tensor | None:
        return self._penalty(model) if self._penalty is not None else None

    def fisher_records(self, ctx: StageContext) -> list[dict]:
        """The stage's records the Fisher is estimated on: all, or a seeded sample of `fisher_samples`."""
        records, n = ctx.records, self.options.fisher_samples
        if len(records) <= n:
            return list(records)
        rng = random.Random(f"hicl-ewc:{ctx.spec.train.seed}:{ctx.spec.stage_index}")
        return [records[i] for i in sorted(rng.sample(range(len(records)), n))]

    def after_train(self, model: nn.Module, ctx: StageContext) -> None:
        from .fisher import diagonal_fisher, load_state, trainable

        spec = ctx.spec
        self._state = None
        if spec.stage_index == spec.n_stages - 1:
            return  # no stage reads the last one's Fisher: its per-sample backward passes are saved
        records = self.fisher_records(ctx)
        fisher, tokens = diagonal_fisher(model, ctx.processor, records, max_length=spec.train.max_length,
                                         device=ctx.device, dtype=ctx.dtype)
        if spec.stage_index > 0:
            previous, _ = load_state(self._previous(ctx))
            fisher = {n: self.options.gamma * previous[n] + f if n in previous else f for n, f in fisher.items()}
        anchor = {n: p.detach().float().cpu().clone() for n, p in trainable(model)}
        self._state = (fisher, anchor, {"tasks": spec.stage_index + 1, "gamma": self.options.gamma,
                                        "samples": len(records), "answer_tokens": tokens})

    def save(self, model: nn.Module, ctx: StageContext) -> dict[str, str]:
        from ....core.fsio import sha256_file
        from .fisher import save_state

        files = super().save(model, ctx)
        if self._state is None:  # the run's last stage
            return files
        path = Path(ctx.stage_dir) / STATE_DIR / STATE_FILE
        save_state(path, *self._state)
        files[f"{STATE_DIR}/{STATE_FILE}"] = sha256_file(path)
        return files
