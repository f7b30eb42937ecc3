"""LLaVA-c: task-by-task LoRA with Spectral-Aware Consolidation and Unsupervised Inquiry
Regularization, and an optional continual-pretraining step for the projector.

Our reading of the paper (its code is not published; METHODS.md, "LLaVA-c"); every choice is an
option. Each stage trains a fresh LoRA on top of the consolidated model of the stages before:

* prepare: load the base; restore the tuned projector and merge the previous stage's
  consolidated delta `D_{t-1}` into the weights (exact, once); in stage 0 with
  `pretrain_task`, first tune the projector on that task's captions; wrap a fresh LoRA.
* train: the task loss plus, with UIR, `uir_weight ×` the feature distance on text-only
  inquiries between the LoRA model and the same weights with the adapter disabled (`uir.py`).
* save: the stage's own LoRA in PEFT layout (`adapter/`, relative to the consolidated model it
  was trained on), the new consolidated delta `D_t = SAC(D_{t-1}, Δ_t)` as low-rank factors
  (`sac/consolidated.safetensors` + `sac/manifest.json`, streamed layer by layer, see
  `sac.py`), and the projector (`projector.safetensors`) when one was tuned.
* evaluate / load: base + `D_t` (+ projector): the consolidated model is the one that answers.

Importing this module does not import torch.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from ...errors import EngineError
from ..base import Method

if TYPE_CHECKING:
    import torch
    from torch import nn

    from ...spec import StageSpec

ADAPTER = "adapter"
SAC_DIR = "sac"
SAC_FILE = "consolidated.safetensors"
SAC_MANIFEST = "manifest.json"


def _switch(value: Any, key: str) -> str:
    if value in (True, "on", "true", "yes", 1):
        return "on"
    if value in (False, "off", "false", "no", 0):
        return "off"
    raise EngineError(f"llava-c option {key}={value!r} must be on or off")


def _number(value: Any, key: str, kind: type, low: float, what: str) -> Any:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (kind is int and value != int(value)):
        raise EngineError(f"llava-c option {key}={value!r} must be {what}")
    value = kind(value)
    if value < low:
        raise EngineError(f"llava-c option {key}={value!r} must be {what}")
    return value


class LlavaC(Method):
    name = "llava-c"
    defaults = {
        "sac": "on",
        "sac_gamma": 1.0,
        "sac_rank": 0,
        "sac_overlap": "projection",
        "uir": "on",
        "uir_weight": 0.01,
        "uir_distance": "mse",
        "uir_batch": 4,
        "pretrain_task": "",
        "pretrain_steps": 100,
        "pretrain_lr": 1e-3,
    }
    option_help = {
        "sac": "on: spectral-aware consolidation of each task's delta; off: plain addition (exact, rank grows).",
        "sac_gamma": "Exponent of the overlap calibration: sigma_k / c_k^gamma (0: truncated SVD, no calibration).",
        "sac_rank": "Rank bound of the consolidated delta per layer (0: twice the LoRA rank).",
        "sac_overlap": "How SAC measures the two tasks' share of a direction: projection (METHODS.md: "
                       "|u_k' D v_k| vs |u_k' Delta v_k|) or aligned (cosines of the two contributions, "
                       "which stays 1 where the SVD merely mixes independent directions).",
        "uir": "on: unsupervised inquiry regularization; off: none.",
        "uir_weight": "Weight of the UIR feature distance in the loss (0 disables it).",
        "uir_distance": "UIR distance between last hidden states: mse (squared L2 per token) or cos (1 - cosine).",
        "uir_batch": "Text-only inquiries per optimizer step (half task instructions, half general questions).",
        "pretrain_task": "Task whose captions tune the projector before the first stage (empty: no pretraining).",
        "pretrain_steps": "Projector pretraining steps.",
        "pretrain_lr": "Projector pretraining learning rate.",
    }

    def __init__(self, options: dict[str, Any] | None = None):
        super().__init__(options)
        o = self.options
        o["sac"], o["uir"] = _switch(o["sac"], "sac"), _switch(o["uir"], "uir")
        o["sac_gamma"] = _number(o["sac_gamma"], "sac_gamma", float, 0.0, "a number >= 0")
        o["sac_rank"] = _number(o["sac_rank"], "sac_rank", int, 0, "an integer >= 0 (0: twice the LoRA rank)")
        o["uir_weight"] = _number(o["uir_weight"], "uir_weight", float, 0.0, "a number >= 0")
        o["uir_batch"] = _number(o["uir_batch"], "uir_batch", int, 1, "an integer >= 1")
        if o["sac_overlap"] not in ("projection", "aligned"):
            raise EngineError(f"llava-c option sac_overlap={o['sac_overlap']!r} must be projection or aligned")
        if o["uir_distance"] not in ("mse", "cos"):
            raise EngineError(f"llava-c option uir_distance={o['uir_distance']!r} must be mse or cos")
        if not isinstance(o["pretrain_task"], str):
            raise EngineError(f"llava-c option pretrain_task={o['pretrain_task']!r} must be a task name")
        o["pretrain_steps"] = _number(o["pretrain_steps"], "pretrain_steps", int, 1, "an integer >= 1")
        o["pretrain_lr"] = _number(o["pretrain_lr"], "pretrain_lr", float, 1e-12, "a number > 0")
        self._task_inquiries: list[list[int]] = []
        self._general_inquiries: list[list[int]] = []
        self._reference = None  # uir.ReferenceFeatures of this stage's pool
        self._pad_id = 0
        self._seed = 0
        self._projector = False

    @property
    def uir_active(self) -> bool:
        return self.options["uir"] == "on" and self.options["uir_weight"] > 0

    def plan(self, task_names: list[str]) -> list[list[str]]:
        return [[name] for name in task_names]

    def needs_tasks(self) -> list[str]:
        return [self.options["pretrain_task"]] if self.options["pretrain_task"] else []

    def sac_rank(self, lora_rank: int) -> int:
        return self.options["sac_rank"] or 2 * lora_rank

    # ------------------------------------------------------------------ stage

    def prepare(self, base: nn.Module, spec: StageSpec) -> nn.Module:
        from ...modeling.adapters import new_lora
        from .projector import FILE, load_projector
        from .sac import apply_factors

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
            from ....taskfile import load_records
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

        tasks, general = pick(len(self._task_inquiries), len(self._general_inquiries), self.options["uir_batch"],
                              self._seed, step)
        chosen = [self._task_inquiries[i] for i in tasks] + [self._general_inquiries[i] for i in general]
        offset = len(self._task_inquiries)
        reference = self._reference.batch(model, tasks + [offset + i for i in general])
        return self.options["uir_weight"] * uir_loss(model, chosen, pad_id=self._pad_id,
                                                     distance=self.options["uir_distance"], reference=reference)

    def save(self, model: nn.Module, spec: StageSpec) -> dict[str, str]:
        from ....fsio import atomic_write_json, sha256_file
        from ...modeling.adapters import save_adapter
        from .projector import FILE, save_projector
        from .sac import consolidate_model

        stage_dir = Path(spec.stage_dir)
        files = {f"{ADAPTER}/{n}": h for n, h in save_adapter(model, stage_dir / ADAPTER).items()}
        prev = _previous(spec) / SAC_DIR / SAC_FILE if spec.stage_index > 0 else None
        rank = self.sac_rank(spec.train.rank)
        mode = "sac" if self.options["sac"] == "on" else "add"
        out = stage_dir / SAC_DIR / SAC_FILE
        result = consolidate_model(model, prev, out, mode=mode, gamma=self.options["sac_gamma"], rank=rank,
                                   metadata={"tasks": str(spec.stage_index + 1)}, overlap=self.options["sac_overlap"])
        manifest = {"format": "hicl-sac", "version": 1, "file": SAC_FILE, "stage_index": spec.stage_index,
                    "tasks_consolidated": spec.stage_index + 1, "gamma": self.options["sac_gamma"],
                    "overlap": self.options["sac_overlap"],
                    "rank_bound": rank if mode == "sac" else None, **result.summary(),
                    "factors": "<module>.us = U*S (d_out x r), <module>.vt = V^T (r x d_in); delta = us @ vt"}
        atomic_write_json(stage_dir / SAC_DIR / SAC_MANIFEST, manifest)
        for name in (SAC_FILE, SAC_MANIFEST):
            files[f"{SAC_DIR}/{name}"] = sha256_file(stage_dir / SAC_DIR / name)
        if self._projector:
            save_projector(model, stage_dir / FILE)
            files[FILE] = sha256_file(stage_dir / FILE)
        return files

    def eval_model(self, model: nn.Module, spec: StageSpec) -> nn.Module:
        """Swap the trained LoRA for the consolidated delta: W0 + D_{t-1} + (D_t - D_{t-1})."""
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

    # ------------------------------------------------------------------ pretraining

    def _pretrains(self, spec: StageSpec) -> bool:
        return bool(self.options["pretrain_task"]) and spec.stage_index == 0

    def _pretrain(self, base: nn.Module, processor: Any, spec: StageSpec) -> None:
        from ....fsio import sha256_file
        from ....taskfile import load_records
        from .projector import tune_projector

        name = self.options["pretrain_task"]
        task = spec.extra_tasks.get(name)
        if task is None:
            raise EngineError(f"llava-c pretrain_task {name!r} was not resolved into data for this stage",
                              hint="start the run through `hicl run start`, or pass the task in StageSpec.extra_tasks")
        records = load_records(task.train_path)
        if not records:
            raise EngineError(f"pretrain task {name!r} has no training records")
        fingerprint = {"task": name, "data": sha256_file(task.train_path), "base": spec.model.base}
        tune_projector(base, processor, records, spec.train, steps=self.options["pretrain_steps"],
                       lr=self.options["pretrain_lr"], checkpoint_dir=Path(spec.checkpoint_dir) / "pretrain",
                       fingerprint=fingerprint)


def _previous(spec: StageSpec) -> Path:
    if spec.prev_stage_dir is None:
        raise EngineError(f"llava-c stage {spec.stage_index + 1} needs the previous stage's folder",
                          hint="run the stages in order")
    return Path(spec.prev_stage_dir)


def _processor(spec: StageSpec) -> Any:
    """The base model's processor (the inquiries and captions are encoded with it)."""
    from transformers import AutoProcessor

    try:
        processor = AutoProcessor.from_pretrained(spec.model.base)
    except Exception as exc:
        raise EngineError(f"cannot load the processor of {spec.model.base}: {type(exc).__name__}: {exc}") from exc
    tok = processor.tokenizer
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    return processor
