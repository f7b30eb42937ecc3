"""Stage t trains a fresh LoRA on task t from the base model (as joint trains its one LoRA), keeps
it, and merges the task LoRAs 1..t into the one adapter that answers. With the task deltas
Δ_i = (α/r) B_i A_i and weights w_i (`--task-weight`; 0: 1/t for the linear modes, 1 for the TIES
ones):

    linear        Δ = Σ_i w_i Δ_i                                   (task arithmetic)
    ties          Δ = disjoint mean over i of w_i trim_k(Δ_i) where its sign agrees with
                      the elected sign sign(Σ_i trim_k(Δ_i))          (TIES-merging)
    dare_linear   Δ = Σ_i w_i m_i ⊙ Δ_i / k,   m_i ~ Bernoulli(k)   (DARE)
    dare_ties     DARE's m_i ⊙ Δ_i / k in TIES' sign election and disjoint mean

with k the `--density` (trim_k keeps the k largest-magnitude entries). PEFT's
`add_weighted_adapter` does every merge, not code of hicl's. In delta space (the default) it
merges the Δ_i and writes the result back as a LoRA of rank `--merge-rank` by truncated SVD
(PEFT's `svd`, `ties_svd`, `dare_linear_svd`, `dare_ties_svd`); linear with rank 0 uses PEFT's
`cat` instead, which stacks the weighted factors into a LoRA of rank Σ r_i equal to Σ w_i Δ_i
exactly. `--merge-space factors` merges the A's and the B's separately (PEFT's `linear`, `ties`,
`dare_linear`, `dare_ties`): cheap, but B·A of the merged factors carries cross-task products,
so it only approximates the formulas above. After the first task the merged adapter is that
task's LoRA scaled by w_1 (PEFT merges a single adapter linearly). DARE draws its masks from
torch's generator seeded with (seed, stage), so a stage merges the same way every time.

Files: `adapter/`, the merged LoRA in PEFT layout (the answering model:
`PeftModel.from_pretrained(base, 'adapter')`), `tasks/<i>/`, task i's own LoRA in PEFT layout (what
the next merges read; `tasks/manifest.json` names the tasks), and `merge.json`, how it was merged.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from ...errors import EngineError
from .. import register
from ..base import Export, StageContext, _existing
from ..lora.single import BuiltAdapterLora
from .options import MergeOptions

if TYPE_CHECKING:
    from torch import nn

ADAPTER = "adapter"
MERGED = "merged"
RECORD = "merge.json"
#: PEFT's combination type for each (mode, space)
COMBINATIONS = {("linear", "delta"): "svd", ("ties", "delta"): "ties_svd", ("dare_linear", "delta"): "dare_linear_svd",
                ("dare_ties", "delta"): "dare_ties_svd", ("linear", "factors"): "linear", ("ties", "factors"): "ties",
                ("dare_linear", "factors"): "dare_linear", ("dare_ties", "factors"): "dare_ties"}


def merge_seed(seed: int, stage_index: int) -> int:
    """The torch seed DARE's masks are drawn with at stage `stage_index` of a run seeded `seed`."""
    return (seed * 1_000_003 + stage_index) % (2 ** 63)


@register
class Merge(BuiltAdapterLora):
    """Adapter merging: a LoRA per task from the base, merged by task arithmetic, TIES or DARE (PEFT)."""

    name = "merge"
    Options = MergeOptions
    reference = ("Ilharco et al., Editing Models with Task Arithmetic, ICLR 2023; Yadav et al., TIES-Merging, "
                 "NeurIPS 2023; Yu et al., Language Models are Super Mario (DARE), ICML 2024; merged by PEFT's "
                 "add_weighted_adapter")

    def plan(self, task_names: list[str]) -> list[list[str]]:
        return [[name] for name in task_names]

    def prepare(self, base: nn.Module, ctx: StageContext) -> nn.Module:
        from ...modeling.adapters import new_lora

        if ctx.spec.stage_index > 0 and ctx.spec.prev_stage_dir is None:
            raise EngineError(f"merge stage {ctx.spec.stage_index + 1} needs the previous stage's folder",
                              hint="run the stages in order")
        return new_lora(base, ctx.spec.train)  # from the base, never from an earlier task's LoRA

    def weights(self, n_tasks: int) -> list[float]:
        if self.options.task_weight:
            return [self.options.task_weight] * n_tasks
        mean = self.options.merge_mode in ("linear", "dare_linear")
        return [1.0 / n_tasks if mean else 1.0] * n_tasks

    def combination(self, ranks: list[int], dims: list[int]) -> dict[str, Any]:
        """The keyword arguments of PEFT's add_weighted_adapter (but adapters and weights)."""
        o = self.options
        if o.merge_mode == "linear" and o.merge_space == "delta" and not o.merge_rank:
            return {"combination_type": "cat"}
        kwargs: dict[str, Any] = {"combination_type": COMBINATIONS[(o.merge_mode, o.merge_space)]}
        if o.merge_mode != "linear":
            kwargs["density"] = o.density
        if o.merge_space == "delta":
            kwargs["svd_rank"] = min(o.merge_rank or sum(ranks), min(dims))
        return kwargs

    def merge(self, model: nn.Module, adapters: list[str], seed: int) -> dict[str, Any]:
        """Add the adapter MERGED to the PEFT `model`: `adapters` merged as the options say."""
        import torch
        from peft.tuners.lora import LoraLayer

        layers = [m for m in model.modules() if isinstance(m, LoraLayer)]
        ranks = [model.peft_config[a].r for a in adapters]
        dims = [min(m.in_features, m.out_features) for m in layers]
        kwargs = self.combination(ranks, dims)
        weights = self.weights(len(adapters))
        device = next(iter(layers)).lora_A[adapters[-1]].weight.device if layers else torch.device("cpu")
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            torch.manual_seed(seed)
            model.add_weighted_adapter(adapters, weights, MERGED, **kwargs)
        return {"adapters": adapters, "weights": weights, "seed": seed, **kwargs}

    def save(self, model: nn.Module, ctx: StageContext) -> dict[str, str]:
        from ....core.fsio import atomic_write_json, sha256_file
        from ...modeling import task_adapters
        from ...modeling.adapters import save_adapter

        spec = ctx.spec
        if len(spec.train_tasks) != 1:
            raise EngineError(f"a merge stage trains exactly one task, this one has {len(spec.train_tasks)}")
        files = task_adapters.write(model, spec.stage_dir, spec.prev_stage_dir, spec.train_tasks[0].name)
        earlier = task_adapters.attach(model, spec.prev_stage_dir) if spec.stage_index > 0 else []
        how = self.merge(model, [*earlier, "default"], merge_seed(spec.train.seed, spec.stage_index))
        try:
            files.update({f"{ADAPTER}/{n}": h for n, h in save_adapter(model, spec.stage_dir / ADAPTER, MERGED).items()})
        finally:
            for name in [MERGED, *earlier]:
                model.delete_adapter(name)
        names = task_adapters.task_names(spec.stage_dir)
        atomic_write_json(spec.stage_dir / RECORD, {"format": 1, "tasks": names, "mode": self.options.merge_mode,
                                                    "space": self.options.merge_space, **how})
        files[RECORD] = sha256_file(spec.stage_dir / RECORD)
        return files

    def export(self, stage_dir: Path) -> Export:
        files = _existing(stage_dir, [f"{ADAPTER}/adapter_config.json", f"{ADAPTER}/adapter_model.safetensors"])
        return Export(files=files, peft=True,
                      loader="PeftModel.from_pretrained(base, 'adapter'): the task LoRAs merged into one "
                             "(tasks/<i>/ holds each task's own, merge.json how they were merged)")
