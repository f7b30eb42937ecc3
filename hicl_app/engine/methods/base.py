"""The small interface every continual-learning method implements.

A method decides (1) which tasks each stage trains on, (2) what model a stage trains, starting
from the base and the previous stage's saved state, (3) what it saves at the end of a stage, and
(4) which model answers at evaluation time. The training loop, data, checkpoints and scoring are
shared (`pipeline.run_stage`), so a new method is one module plus a registry entry.
Importing a method module must not import torch: the CLI asks methods for their plan.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from ..errors import EngineError

if TYPE_CHECKING:
    import torch
    from torch import nn

    from ..spec import StageSpec


class Method(ABC):
    name: ClassVar[str]
    #: accepted method options and their defaults; anything else is refused
    defaults: ClassVar[dict[str, Any]] = {}
    #: one line of help per option; `hicl run start` offers each as `--option-name`
    option_help: ClassVar[dict[str, str]] = {}

    def __init__(self, options: dict[str, Any] | None = None):
        options = dict(options or {})
        unknown = sorted(set(options) - set(self.defaults))
        if unknown:
            known = ", ".join(sorted(self.defaults)) or "none"
            raise EngineError(f"unknown option(s) for method {self.name!r}: {', '.join(unknown)}",
                              hint=f"known options: {known}")
        self.options = {**self.defaults, **options}

    @abstractmethod
    def plan(self, task_names: list[str]) -> list[list[str]]:
        """The tasks each stage trains on, in order."""

    @abstractmethod
    def prepare(self, base: nn.Module, spec: StageSpec) -> nn.Module:
        """The model to train in this stage, its trainable parameters marked `requires_grad`."""

    @abstractmethod
    def save(self, model: nn.Module, spec: StageSpec) -> dict[str, str]:
        """Write the stage's state under `spec.stage_dir`; return {relative path: sha256}."""

    @abstractmethod
    def load(self, base: nn.Module, stage_dir: Path) -> nn.Module:
        """Rebuild the evaluation model of a finished stage from what `save` wrote."""

    def eval_model(self, model: nn.Module, spec: StageSpec) -> nn.Module:
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
