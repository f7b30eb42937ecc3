"""Training: stage t trains a fresh LoRA expert `(A_t, B_t)` of its task on every target layer (the
rank of seq-lora, so parameter counts compare) and saves it as the stage's PEFT adapter, plus the
HiDe state under `hide/`: every task expert so far, each task's anchors `a_img[t]`, `a_txt[t]`
(the mean image and instruction features of its training prompts) and a manifest.

The model after stage t, per sample x:

    s_t = (cos(f_img(x), a_img[t]) + cos(f_txt(x), a_txt[t])) / 2,    w = softmax(s / tau)
    expanded layers:  W x + scale * sum_t w_t B_t A_t x          (tau = 0.1; or top-1 routing)
    fused layers:     (W + fuse(B_1 A_1, ..., B_t A_t)) x,  merged into W once at load

with `fuse` = `sum` (the official `(ΣB)(ΣA)`), `mean-delta` (mean of `B_t A_t`) or `ties`. The
expanded layers are the top decoder layer (the paper), a list, or (`auto`) every layer whose mean
cross-task linear or RBF CKA, measured on the same probe inputs for every task's expert, is under
a threshold. The routing encoders are the model's own vision tower and input embeddings (pooled),
or a CLIP-style dual encoder. Routing weights are per sample, so batched inference equals one by
one.

Serving many expanded layers: `--routing top1` runs each sample on its highest-weight expert
alone (one rank-r path per layer instead of t). A batch whose samples all pick one expert runs
with that expert merged into the expanded weights (the cost of base + one merged LoRA);
`generate` on a mixed batch runs each expert's samples in turn with their expert merged, and a
plain forward of a mixed batch takes each expert's low-rank path with the original tensors
swapped back (`--merge-top1 false`: always the paths). `--expert-rank K` keeps each expert in the
HiDe state as the best rank-K approximation of each module's `B·A` (truncated SVD at the end of
its stage), so the state holds fewer parameters; the stage's PEFT adapter keeps the trained rank.

State under a stage folder: `hide/experts.safetensors` (every expert so far),
`hide/anchors.safetensors` and `hide/manifest.json` (tasks, scales, encoder, expanded layers,
probes, CKA); the routed model is rebuilt from it alone. `hicl analyze cka RUN` prints the
cross-task CKA per layer that `--expand auto` reads.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from .. import register
from ..base import Export, Method, StageContext, _existing
from ..lora.single import ADAPTER
from . import ANCHORS_FILE, EXPERTS_FILE, MANIFEST_FILE, STATE_DIR
from .options import HideOptions

if TYPE_CHECKING:
    from torch import nn


@register
class Hide(Method):
    """HiDe-LLaVA: fuse what the tasks share, keep per-task experts where they differ."""

    name = "hide"
    Options = HideOptions
    reference = "Guo et al., HiDe-LLaVA: Hierarchical Decoupling for Continual Instruction Tuning of MLLMs, ACL 2025"

    def plan(self, task_names: list[str]) -> list[list[str]]:
        return [[name] for name in task_names]

    def prepare(self, base: nn.Module, ctx: StageContext) -> nn.Module:
        import torch

        from ...modeling.adapters import new_lora
        from ...modeling.lora_factors import copy_into
        from .stage import previous_state

        spec = ctx.spec
        prev = previous_state(spec.prev_stage_dir, spec.stage_index)  # fail before training, not after
        # Each task's expert starts from its own random A (as separate experts do in the official
        # code); the training RNG stream is left as the pipeline seeded it.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(spec.train.seed * 1_000_003 + spec.stage_index)
            model = new_lora(base, spec.train)
        if prev is not None and self.options.expert_init == "previous":
            copy_into(model, prev.experts[-1])
        return model

    def save(self, model: nn.Module, ctx: StageContext) -> dict[str, str]:
        from ...modeling.adapters import save_adapter
        from .stage import end_stage

        hashes = {f"{ADAPTER}/{name}": digest for name, digest in save_adapter(model, ctx.stage_dir / ADAPTER).items()}
        hashes.update(end_stage(model, ctx.spec, self.options))
        return hashes

    def load(self, base: nn.Module, stage_dir: Path) -> nn.Module:
        from .stage import load_model

        return load_model(base, Path(stage_dir), self.options)

    def eval_model(self, model: nn.Module, ctx: StageContext) -> nn.Module:
        base = model.unload() if callable(getattr(model, "get_base_model", None)) else model
        return self.load(base, ctx.stage_dir)

    def export(self, stage_dir: Path) -> Export:
        files = _existing(stage_dir, [f"{STATE_DIR}/{n}" for n in (EXPERTS_FILE, ANCHORS_FILE, MANIFEST_FILE)])
        return Export(files=files, peft=False,
                      loader="hicl: get_method('hide', options).load(base, stage_dir) rebuilds the routed model "
                             f"from {STATE_DIR}/ (adapter/ alone is this stage's task expert, not the HiDe model)")
