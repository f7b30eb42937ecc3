"""The interface every continual-learning method implements, modelled on PEFT's tuners.

A method is one package under `engine/methods/` with an options dataclass (`Options`, see
`options.py`) and a `Method` subclass registered in `methods/__init__.py`. It decides which
tasks each stage trains on (`plan`), what model a stage trains (`prepare`), what it saves
(`save`) and which model answers (`eval_model`, `load`). The training loop, data, checkpoints and
scoring are shared (`pipeline.run_stage`), and the optional hooks below let a method change the
stage without touching them: the stage's records (`train_records`: replay), a term of the loss
(`extra_loss`: regularisers, distillation), work after training (`after_train`: a Fisher, a
freeze), what resuming must notice (`fingerprint`) and what a published bundle loads (`export`).
The worker, the CLI and the TUI know methods only through this class, so adding one touches none
of them. Importing a method module must not import torch: the CLI asks methods for their plan
and options.
"""

from __future__ import annotations

import inspect
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from ...core.fsio import sha256_file
from .options import NoOptions, make_options

if TYPE_CHECKING:
    import torch
    from torch import nn

    from ..spec import StageSpec

#: what a stage folder holds that is an output of evaluation, not state the next stage reads
NOT_STATE = ("predictions", "stage.json")


@dataclass
class StageContext:
    """What a method's hooks see of the stage being run."""

    spec: StageSpec
    processor: Any
    device: Any
    dtype: Any
    #: the stage's training records (its tasks' files; `train_records` may change them)
    records: list[dict] = field(default_factory=list)

    @property
    def stage_dir(self) -> Path:
        return self.spec.stage_dir

    @property
    def prev_stage_dir(self) -> Path | None:
        return self.spec.prev_stage_dir


@dataclass
class Export:
    """The files of the model that actually answers after a stage, and how to load it.

    `peft` is True when `PeftModel.from_pretrained(base, <bundle>/adapter)` alone gives that
    model; otherwise `loader` says in a sentence what does (a model card prints it).
    """

    files: list[str]
    peft: bool
    loader: str


class Method(ABC):
    name: ClassVar[str]
    #: the options dataclass; its fields are the method's flags, form fields and `-o` keys
    Options: ClassVar[type] = NoOptions
    #: the paper or source the method follows (printed by `hicl run methods NAME`)
    reference: ClassVar[str] = ""

    def __init__(self, options: dict[str, Any] | None = None):
        self.options = make_options(self.Options, options, self.name)

    @classmethod
    def summary(cls) -> str:
        """The first line of the method's documentation."""
        return (inspect.getdoc(cls) or "").strip().splitlines()[0] if inspect.getdoc(cls) else ""

    @classmethod
    def documentation(cls) -> str:
        """The method's whole documentation: its module docstring (the equations) and class docstring."""
        module = inspect.getmodule(cls)
        return "\n\n".join(d for d in (inspect.getdoc(cls), inspect.getdoc(module)) if d)

    @abstractmethod
    def plan(self, task_names: list[str]) -> list[list[str]]:
        """The tasks each stage trains on, in order."""

    @abstractmethod
    def prepare(self, base: nn.Module, ctx: StageContext) -> nn.Module:
        """The model to train in this stage, its trainable parameters marked `requires_grad`."""

    @abstractmethod
    def save(self, model: nn.Module, ctx: StageContext) -> dict[str, str]:
        """Write the stage's state under `ctx.stage_dir`; return {relative path: sha256}."""

    @abstractmethod
    def load(self, base: nn.Module, stage_dir: Path) -> nn.Module:
        """Rebuild the evaluation model of a finished stage from what `save` wrote."""

    def train_records(self, ctx: StageContext) -> list[dict]:
        """The records the stage trains on; the stage's own tasks' records unless overridden."""
        return ctx.records

    def after_train(self, model: nn.Module, ctx: StageContext) -> None:
        """Work after the last training step and before `save` (runs again on a resumed stage)."""

    def eval_model(self, model: nn.Module, ctx: StageContext) -> nn.Module:
        """The model that answers after training; the trained model itself unless overridden."""
        return model

    def extra_loss(self, model: nn.Module, batch: dict[str, torch.Tensor], step: int) -> torch.Tensor | None:
        """A term added to the task loss of each micro-batch of optimizer step `step` (None: none).

        Called by the training loop with the batch already on the model's device; it must be a
        pure function of (model, batch, step) so that a resumed stage follows the same trajectory.
        """
        return None

    def needs_tasks(self) -> list[str]:
        """Catalog tasks the options name beyond the run's own; the worker resolves them into
        `StageSpec.extra_tasks` (and refuses the run if one is missing)."""
        return []

    def fingerprint(self, prev_stage_dir: Path | None) -> dict[str, str]:
        """{relative path: sha256} of every file of the previous stage this stage depends on.

        A checkpoint taken against other files is not resumed. The default: every file of the
        previous stage's folder but its evaluation outputs.
        """
        if prev_stage_dir is None or not Path(prev_stage_dir).is_dir():
            return {}
        root = Path(prev_stage_dir)
        return {p.relative_to(root).as_posix(): sha256_file(p) for p in sorted(root.rglob("*"))
                if p.is_file() and p.relative_to(root).parts[0] not in NOT_STATE}

    def export(self, stage_dir: Path) -> Export:
        """The files of the answering model after the stage in `stage_dir`: its PEFT adapter unless overridden."""
        return Export(files=_existing(stage_dir, ["adapter/adapter_config.json", "adapter/adapter_model.safetensors"]),
                      peft=True, loader="PeftModel.from_pretrained(base, 'adapter')")


def _existing(stage_dir: Path, names: list[str]) -> list[str]:
    return [n for n in names if (Path(stage_dir) / n).is_file()]
