"""Engine failures a user can act on, and the cooperative-stop signal.

`EngineError` derives from the project's `HiclError` so the CLI renders it like any other user
error (message + hint); the engine stays free of any CLI import because `hicl_app.core.errors` is
pure Python.
"""

from __future__ import annotations

from pathlib import Path

from ..core.errors import HiclError


class EngineError(HiclError):
    """A model, data or checkpoint problem; the message says what and where."""


class CheckpointRefused(EngineError):
    """The caller refused a checkpoint when told `before_checkpoint` (its job's lease went to
    another worker, or the launcher relaying for rank 0 is gone): nothing was written and no older
    checkpoint was pruned, since the process now holding the job owns the checkpoint folder."""


class Stopped(Exception):
    """Training stopped on request at a step boundary, after writing a checkpoint.

    Not an error: the worker catches it and later calls `run_stage` again to resume from
    `checkpoint` (None only if stopping happened before the first step of a fresh run).
    """

    def __init__(self, step: int, checkpoint: Path | None):
        super().__init__(f"stopped at step {step}" + (f"; checkpoint in {checkpoint}" if checkpoint else ""))
        self.step = step
        self.checkpoint = checkpoint


class RanksFailed(Exception):
    """A process of a distributed stage died without an error of its own (killed, out of memory).

    Not the user's fault and not the stage's: the caller re-queues the stage, which then resumes
    from its last checkpoint.
    """
