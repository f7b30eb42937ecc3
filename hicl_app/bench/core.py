"""What every benchmark shares: its result record and side-by-side timing.

Each figure is a ratio (or a difference) of two variants timed in the same run, interleaved
trial by trial and summarised by the median, so a busy machine slows both alike.
Pure Python: the CLI imports this at start.
"""

from __future__ import annotations

import statistics
from dataclasses import asdict, dataclass, field
from typing import Any, Callable

Trial = Callable[[], "tuple[float, Any]"]


@dataclass
class Result:
    """One benchmark's outcome. `figure` is `baseline / ours` for speed-ups (unit "x"),
    `ours / baseline` for ratios of cost ("ratio"), `ours - baseline` for overheads ("s").
    `same` is the correctness check (same predictions, same losses) where there is one."""

    name: str
    measures: str
    ours: str
    baseline: str
    figure: float | None
    unit: str
    target: str
    met: bool | None
    check: str
    same: bool | None = None
    details: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def figure_text(self) -> str:
        if self.figure is None:
            return "—"
        if self.unit == "s":
            return f"{self.figure:+.3f} s"
        return f"{self.figure:.2f}x"


def make_clock(device: str) -> tuple[Callable[[], float], str]:
    """(clock, its name) for timing work on `device`.

    On a CPU the clock is this process's CPU time, with torch on one thread: other processes on a
    shared machine then barely move it, where wall time swings several-fold. On a GPU it is wall
    time after a device synchronisation, since the work happens off the CPU.
    """
    import time

    import torch

    if device.startswith("cuda"):
        def gpu_wall() -> float:
            torch.cuda.synchronize()
            return time.perf_counter()

        return gpu_wall, "wall time (CUDA synchronised)"
    torch.set_num_threads(1)
    return time.process_time, "process CPU time, 1 torch thread"


def skipped(name: str, measures: str, why: str, target: str = "") -> Result:
    return Result(name, measures, "—", "—", None, "x", target, None, f"skipped: {why}", None)


def interleaved(trials: dict[str, Trial], repeats: int) -> tuple[dict[str, float], dict[str, list[Any]]]:
    """Run each trial `repeats` times, alternating; (median seconds, outputs in run order) by name.

    A trial returns (seconds, output): it times only the work, not its own setup.
    """
    times: dict[str, list[float]] = {name: [] for name in trials}
    outputs: dict[str, list[Any]] = {name: [] for name in trials}
    for _ in range(repeats):
        for name, trial in trials.items():
            seconds, output = trial()
            times[name].append(seconds)
            outputs[name].append(output)
    return {name: statistics.median(values) for name, values in times.items()}, outputs
