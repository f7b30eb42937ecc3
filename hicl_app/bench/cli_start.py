"""CLI start-up: `hicl --help` in a fresh process vs `python -c pass`.

The faces import nothing heavy at start (no torch, transformers, peft or textual), so the
overhead over a bare interpreter should stay under 0.3 s. Each command runs several times,
interleaved; the figure is the difference of the medians of the child's CPU time (user + system),
which other processes on a shared machine barely move; wall times are reported beside it.
"""

from __future__ import annotations

import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

from .core import Result

NAME = "cli-start"
MEASURES = "CLI start: `hicl --help` vs `python -c pass`"
TARGET = 0.3
RUNS = 7


def hicl_command() -> list[str]:
    """The installed `hicl` script beside this interpreter, else `python -m hicl_app`."""
    script = Path(sys.executable).with_name("hicl")
    return [str(script)] if script.is_file() else [sys.executable, "-m", "hicl_app"]


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def time_command(command: list[str]) -> tuple[float, float]:
    """(CPU seconds, wall seconds) of one run of `command`; raises if it fails."""
    cpu0, wall0 = _children_cpu(), time.perf_counter()
    done = subprocess.run(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    wall, cpu = time.perf_counter() - wall0, _children_cpu() - cpu0
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} exited {done.returncode}: {done.stderr.strip()[-500:]}")
    return cpu, wall


def run(workload=None) -> Result:
    commands = {"hicl": hicl_command() + ["--help"], "python": [sys.executable, "-c", "pass"]}
    samples: dict[str, list[tuple[float, float]]] = {name: [] for name in commands}
    for _ in range(RUNS):
        for name, command in commands.items():
            samples[name].append(time_command(command))
    cpu = {name: statistics.median(s[0] for s in runs) for name, runs in samples.items()}
    wall = {name: statistics.median(s[1] for s in runs) for name, runs in samples.items()}
    extra = cpu["hicl"] - cpu["python"]
    return Result(NAME, MEASURES, f"{cpu['hicl']:.3f} s", f"{cpu['python']:.3f} s", extra, "s",
                  f"<= +{TARGET:g} s", extra <= TARGET,
                  f"CPU time, median of {RUNS}; wall {wall['hicl'] - wall['python']:+.3f} s", None,
                  {"command": commands["hicl"], "cpu_seconds": cpu, "wall_seconds": wall, "runs": RUNS})
