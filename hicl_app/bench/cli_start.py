"""CLI start-up: `hicl --help` in a fresh process vs `python -c pass`.

The faces import nothing heavy at start (no torch, transformers, peft or textual), so the
overhead over a bare interpreter should stay under 0.3 s. Median of interleaved runs.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from .core import Result, interleaved

NAME = "cli-start"
MEASURES = "CLI start: `hicl --help` vs `python -c pass`"
TARGET = 0.3
RUNS = 7


def hicl_command() -> list[str]:
    """The installed `hicl` script beside this interpreter, else `python -m hicl_app`."""
    script = Path(sys.executable).with_name("hicl")
    return [str(script)] if script.is_file() else [sys.executable, "-m", "hicl_app"]


def _timed(command: list[str]):
    def trial():
        t0 = time.perf_counter()
        done = subprocess.run(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        seconds = time.perf_counter() - t0
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(command)} exited {done.returncode}: {done.stderr.strip()[-500:]}")
        return seconds, None
    return trial


def run(workload=None) -> Result:
    hicl = hicl_command() + ["--help"]
    times, _ = interleaved({"hicl": _timed(hicl), "python": _timed([sys.executable, "-c", "pass"])}, RUNS)
    extra = times["hicl"] - times["python"]
    return Result(NAME, MEASURES, f"{times['hicl']:.3f} s", f"{times['python']:.3f} s", extra, "s",
                  f"<= +{TARGET:g} s", extra <= TARGET, f"median of {RUNS} runs each", None,
                  {"command": hicl, "seconds": times, "runs": RUNS})
