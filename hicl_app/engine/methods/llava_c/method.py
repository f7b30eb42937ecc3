"""Each stage trains a fresh LoRA on top of the consolidated model of the stages before. The
paper's code is not published and its equations are not at hand: what follows is this project's
documented reading, every choice a named option.

Spectral-aware consolidation (SAC), for task balance. After task t, with the task delta
`Δ_t = scale · B_t A_t` of each LoRA layer and the consolidated delta `D_{t-1}` of the tasks before:

    D_{t-1} + Δ_t = U S Vᵀ
    p_k = |u_kᵀ D_{t-1} v_k|,  q_k = |u_kᵀ Δ_t v_k|,  c_k = (p_k + q_k) / max(p_k, q_k)
    D_t = Σ_{k ≤ r_cons} (σ_k / c_k^γ) u_k v_kᵀ

Plain addition (`--sac off`) over-weights directions the tasks share; dividing by the overlap
`c_k ∈ [1, 2]` (`--sac-gamma`, default 1) evens them out, and keeping the top `r_cons` directions
(`--sac-rank`, default twice the LoRA rank) bounds the consolidated rank whatever the number of
tasks. The SVD runs on the factored form (a QR of each factor and the SVD of a small core), one
layer at a time, never on a dense d×d matrix. `--sac-overlap aligned` measures the two
contributions as vectors instead, `a_k = D v_k`, `b_k = Δ v_k`, `a'_k = Dᵀ u_k`, `b'_k = Δᵀ u_k`:

    c_k = 1 + cos⁺(a_k, b_k) · cos⁺(a'_k, b'_k) · min(|a_k|, |b_k|) / max(|a_k|, |b_k|)

which is 2 for identical deltas, as above, but 1 for independent tasks whose directions the SVD
of `D + Δ` merely mixes because their singular values nearly tie (the projection form reads them
as half shared).

Unsupervised inquiry regularization (UIR), against base-model degradation. Inquiries are
instructions without answers (the task's own questions and a pool of general ones). The loss adds

    λ · mean over inquiry tokens of ‖h(x) − h_ref(x)‖²      (or 1 − cos: `--uir-distance cos`)

with `h` the language model's last hidden state (after the final norm) of the text-only inquiry
under the current LoRA and `h_ref` the same with the adapter off: the stage's starting model,
with no second model in memory, computed once per stage (`--uir-weight` λ, default 0.01). Each
step draws `--uir-batch` inquiries, half from the stage's own questions (at most 256 per task),
half from a built-in pool of general questions (never the held-out general task's prompts), as a
function of (seed, step), so a resumed stage repeats them.

Continual pretraining: `--pretrain-task NAME` tunes only the projector on that task's pairs for
`--pretrain-steps` at `--pretrain-lr` before the first stage's LoRA (checkpointed and resumed like
any training); later stages and evaluation use the tuned projector.

Files: the stage's own LoRA in PEFT layout (`adapter/`, relative to the consolidated model it was
trained on), `D_t` as low-rank factors (`sac/consolidated.safetensors` + `sac/manifest.json`,
streamed layer by layer) and the projector (`projector.safetensors`) when `--pretrain-task` tuned
it on a caption task before the first stage. The model that answers is base + `D_t` (+ projector).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from ...errors import EngineError
from .. import register
from ..base import Export, Method, StageContext, _existing
from . import PROJECTOR_FILE, SAC_DIR, SAC_FILE, SAC_MANIFEST
from .options import LlavaCOptions

if TYPE_CHECKING:
    import torch
    from torch import nn

    from ...spec import StageSpec

ADAPTER = "adapter"


@register
class LlavaC(Method):
    """LLaVA-c: task-by-task LoRA with spectral-aware consolidation and inquiry regularization."""

    name = "llava-c"
    Options = LlavaCOptions
    reference = "LLaVA-c: Continual Improved Visual Instruction Tuning, arXiv 2506.08666 (this project's reading)"

    def __init__(self, options: dict[str, Any] | None = None):
        super().__init__(options)
        self._task_inquiries: list[list[int]] = []
        self._general_inquiries: list[list[int]] = []
        self._reference = None  # uir.ReferenceFeatures of this stage's pool
        self._pad_id = 0
        self._seed = 0
        self._projector = False

    @property
    def uir_active(self) -> bool:
        return self.options.uir and self.options.uir_weight > 0

    def plan(self, task_names: list[str]) -> list[list[str]]:
        return [[name] for name in task_names]

    def needs_tasks(self) -> list[str]:
        return [self.options.pretrain_task] if self.options.pretrain_task else []

    def sac_rank(self, lora_rank: int) -> int:
        return self.options.sac_rank or 2 * lora_rank

    # ------------------------------------------------------------------ stage

    def prepare(self, base: nn.Module, ctx: StageContext) -> nn.Module:
        from ...modeling.adapters import new_lora
        from .projector import FILE, load_projector
        from .sac import apply_factors

        spec = ctx.spec
        processor = _processor(spec) if (self.uir_active or self._pretrains(spec)) else None
        self._projector = False
        if spec.stage_index > 0:
            prev = _previous(spec)
            if (prev / FILE).is_file():
                load_projector(base, prev / FILE)
                self._projector = True
            apply_factors(base, prev / SAC_DIR / SAC_FILE)
        elif self._pretrains(spec):
            self._pretrain(base, processor, spec)
            self._projector = True
        self._seed = spec.train.seed
        self._task_inquiries, self._general_inquiries = [], []
        if self.uir_active:
            from ....core.taskfile import load_records
            from .uir import GENERAL_INQUIRIES, encode_inquiries, task_instructions

            questions = [q for t in spec.train_tasks for q in task_instructions(load_records(t.train_path))]
            self._task_inquiries = encode_inquiries(processor, list(dict.fromkeys(questions)), spec.train.max_length)
            self._general_inquiries = encode_inquiries(processor, list(GENERAL_INQUIRIES), spec.train.max_length)
            self._pad_id = processor.tokenizer.pad_token_id
            from .uir import ReferenceFeatures

            self._reference = ReferenceFeatures(self._task_inquiries + self._general_inquiries, self._pad_id)
        return new_lora(base, spec.train)

    def extra_loss(self, model: nn.Module, batch: dict[str, torch.Tensor], step: int) -> torch.Tensor | None:
        if not self.uir_active or not (self._task_inquiries or self._general_inquiries):
            return None
        from .uir import pick, uir_loss

        tasks, general = pick(len(self._task_inquiries), len(self._general_inquiries), self.options.uir_batch,
                              self._seed, step)
        chosen = [self._task_inquiries[i] for i in tasks] + [self._general_inquiries[i] for i in general]
        offset = len(self._task_inquiries)
        reference = self._reference.batch(model, tasks + [offset + i for i in general])
        return self.options.uir_weight * uir_loss(model, chosen, pad_id=self._pad_id,
                                                     distance=self.options.uir_distance, reference=reference)

    def save(self, model: nn.Module, ctx: StageContext) -> dict[str, str]:
        from ....core.fsio import atomic_write_json, sha256_file
        from ...modeling.adapters import save_adapter
        from .projector import FILE, save_projector
        from .sac import consolidate_model

        spec = ctx.spec
        stage_dir = Path(spec.stage_dir)
        files = {f"{ADAPTER}/{n}": h for n, h in save_adapter(model, stage_dir / ADAPTER).items()}
        prev = _previous(spec) / SAC_DIR / SAC_FILE if spec.stage_index > 0 else None
        rank = self.sac_rank(spec.train.rank)
        mode = "sac" if self.options.sac else "add"
        out = stage_dir / SAC_DIR / SAC_FILE
        result = consolidate_model(model, prev, out, mode=mode, gamma=self.options.sac_gamma, rank=rank,
                                   metadata={"tasks": str(spec.stage_index + 1)}, overlap=self.options.sac_overlap)
        manifest = {"format": "hicl-sac", "version": 1, "file": SAC_FILE, "stage_index": spec.stage_index,
                    "tasks_consolidated": spec.stage_index + 1, "gamma": self.options.sac_gamma,
                    "overlap": self.options.sac_overlap,
                    "rank_bound": rank if mode == "sac" else None, **result.summary(),
                    "factors": "<module>.us = U*S (d_out x r), <module>.vt = V^T (r x d_in); delta = us @ vt"}
        atomic_write_json(stage_dir / SAC_DIR / SAC_MANIFEST, manifest)
        for name in (SAC_FILE, SAC_MANIFEST):
            files[f"{SAC_DIR}/{name}"] = sha256_file(stage_dir / SAC_DIR / name)
        if self._projector:
            save_projector(model, stage_dir / FILE)
            files[FILE] = sha256_file(stage_dir / FILE)
        return files

    def eval_model(self, model: nn.Module, ctx: StageContext) -> nn.Module:
        """Swap the trained LoRA for the consolidated delta: W0 + D_{t-1} + (D_t - D_{t-1})."""
        spec = ctx.spec
        from .sac import apply_factors

        net = model.unload()
        prev = _previous(spec) / SAC_DIR / SAC_FILE if spec.stage_index > 0 else None
        apply_factors(net, Path(spec.stage_dir) / SAC_DIR / SAC_FILE, minus=prev)
        return net

    def load(self, base: nn.Module, stage_dir: Path) -> nn.Module:
        from .projector import FILE, load_projector
        from .sac import apply_factors

        stage_dir = Path(stage_dir)
        if (stage_dir / FILE).is_file():
            load_projector(base, stage_dir / FILE)
        apply_factors(base, stage_dir / SAC_DIR / SAC_FILE)
        return base

    def export(self, stage_dir: Path) -> Export:
        files = _existing(stage_dir, [f"{SAC_DIR}/{SAC_FILE}", f"{SAC_DIR}/{SAC_MANIFEST}", PROJECTOR_FILE])
        return Export(files=files, peft=False,
                      loader=f"hicl: get_method('llava-c').load(base, stage_dir) adds the consolidated delta "
                             f"{SAC_DIR}/{SAC_FILE} (us @ vt per module) to the base weights, and loads "
                             f"{PROJECTOR_FILE} where present (adapter/ is this stage's LoRA alone, trained on top of "
                             "the previous consolidated model)")

    # ------------------------------------------------------------------ pretraining

    def _pretrains(self, spec: StageSpec) -> bool:
        return bool(self.options.pretrain_task) and spec.stage_index == 0

    def _pretrain(self, base: nn.Module, processor: Any, spec: StageSpec) -> None:
        from ....core.fsio import sha256_file
        from ....core.taskfile import load_records
        from .projector import tune_projector

        name = self.options.pretrain_task
        task = spec.extra_tasks.get(name)
        if task is None:
            raise EngineError(f"llava-c pretrain_task {name!r} was not resolved into data for this stage",
                              hint="start the run through `hicl run start`, or pass the task in StageSpec.extra_tasks")
        records = load_records(task.train_path)
        if not records:
            raise EngineError(f"pretrain task {name!r} has no training records")
        fingerprint = {"task": name, "data": sha256_file(task.train_path), "base": spec.model.base}
        tune_projector(base, processor, records, spec.train, steps=self.options.pretrain_steps,
                       lr=self.options.pretrain_lr, checkpoint_dir=Path(spec.checkpoint_dir) / "pretrain",
                       fingerprint=fingerprint)


def _previous(spec: StageSpec) -> Path:
    if spec.prev_stage_dir is None:
        raise EngineError(f"llava-c stage {spec.stage_index + 1} needs the previous stage's folder",
                          hint="run the stages in order")
    return Path(spec.prev_stage_dir)


def _processor(spec: StageSpec) -> Any:
    """The base model's processor (the inquiries and captions are encoded with it)."""
    from ...modeling.processors import load_processor

    try:
        processor = load_processor(spec.model.base)
    except Exception as exc:
        raise EngineError(f"cannot load the processor of {spec.model.base}: {type(exc).__name__}: {exc}") from exc
    tok = processor.tokenizer
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    return processor
