"""Stage k trains the LoRA of stage k-1 further (as Seq-LoRA) on task k's records plus a replay
memory of every earlier task s < k:

    D'_k = D_k ∪ M_1 ∪ … ∪ M_{k-1},   M_s ⊂ D_s,   |M_s| = round(ρ · |D_s|)  (or N: --replay-per-task)

ρ is `--replay-ratio` (default 0.1). Each memory M_s is drawn once, without replacement, from the
task's stored training records with a generator seeded by (run seed, s, task name) alone: every
later stage replays the same samples, as an episodic memory of that size would hold them, and a
resumed or re-planned stage draws exactly the same set (the pipeline also fingerprints the mixed
records, so a checkpoint taken on other data is not resumed). The training loop shuffles D'_k
like any stage's data, and the run's steps are unchanged: with `--epochs`, a stage sees more
samples. The model after task t is one LoRA, `W0 + (alpha/r) B_t A_t`, saved in PEFT layout.
"""

from __future__ import annotations

import random

from ....core.taskfile import load_records
from ...errors import EngineError
from .. import register
from ..base import StageContext
from ..lora.seq_lora import SeqLora
from .options import ReplayOptions


def memory(records: list[dict], size: int, seed: int, position: int, task: str) -> list[dict]:
    """The `size` records of an earlier task replayed in every later stage (in file order)."""
    rng = random.Random(f"hicl-replay:{seed}:{position}:{task}")
    return [records[i] for i in sorted(rng.sample(range(len(records)), size))]


@register
class Replay(SeqLora):
    """Replay: Seq-LoRA with a fixed, seeded sample of each earlier task mixed into every later stage."""

    name = "replay"
    Options = ReplayOptions
    reference = ("experience replay (Rolnick et al., Experience Replay for Continual Learning, NeurIPS 2019), "
                 "the rehearsal baseline of continual instruction tuning benchmarks")

    def train_records(self, ctx: StageContext) -> list[dict]:
        spec = ctx.spec
        if spec.stage_index == 0:
            return ctx.records
        if not spec.earlier_tasks:
            raise EngineError(f"replay stage {spec.stage_index + 1} was given no earlier tasks to replay",
                              hint="start the run through `hicl run start`, or pass StageSpec.earlier_tasks")
        own = {t.name for t in spec.train_tasks}
        mixed = list(ctx.records)
        for position, task in enumerate(spec.earlier_tasks):
            if task.name in own:
                continue
            try:
                records = load_records(task.train_path)
            except (OSError, ValueError) as exc:
                raise EngineError(f"cannot read the training records of earlier task {task.name!r} at "
                                  f"{task.train_path}: {exc}") from None
            size = self.options.memory_size(len(records))
            mixed += memory(records, size, spec.train.seed, position, task.name)
        return mixed
