"""`hicl bench`: the speed-ups that set hicl apart from the research code, measured side by side.

One short module per benchmark, each with NAME, MEASURES and `run(workload) -> Result`.
Importing this package imports no torch; each benchmark imports what it needs when it runs.
"""

from __future__ import annotations

import importlib

from ..core.errors import InvalidInput
from .core import Result

#: benchmark name -> module, in the order they run
MODULES = {
    "eval": "eval_batched",
    "train": "train_loop",
    "hide-merge": "hide_merge",
    "hide-infer": "hide_infer",
    "cli-start": "cli_start",
    "memory": "memory",
    "memory-checkpointing": "checkpointing",
}


def select(only: str | None) -> list[str]:
    """Names to run from a comma-separated --only (all when None), refusing unknown ones.

    A name also selects its family: `memory` runs `memory-checkpointing` too.
    """
    if not only:
        return list(MODULES)
    names = [n.strip() for n in only.split(",") if n.strip()]
    unknown = [n for n in names if n not in MODULES]
    if unknown or not names:
        raise InvalidInput(f"unknown benchmark(s) in --only: {', '.join(unknown) or '(none given)'}",
                           hint=f"choose from {', '.join(MODULES)}")
    return [n for n in MODULES if any(n == m or n.startswith(m + "-") for m in names)]


#: benchmarks that need no model or data
STANDALONE = {"cli-start"}


def run_benchmark(name: str, workload) -> Result:
    """Run one benchmark; `workload` may be None for the STANDALONE ones."""
    module = importlib.import_module(f".{MODULES[name]}", __name__)
    return module.run(workload)


__all__ = ["MODULES", "STANDALONE", "Result", "run_benchmark", "select"]
