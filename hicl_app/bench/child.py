"""Child process of the memory benchmark: one method's run, then its peak memory as JSON.

`python -m hicl_app.bench.child '{"base", "work", "method", "device", "dtype", "tasks": [TaskData fields]}'`
"""

from __future__ import annotations

import json
import resource
import sys
from pathlib import Path


def peak_rss_mb() -> float:
    """This process's peak resident set size.

    On Linux from /proc (VmHWM, the high-water mark of this process's own memory map): getrusage's
    ru_maxrss survives exec, so a child started by a large parent would report the parent's size.
    """
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024  # kB
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024  # bytes on macOS, KiB on Linux


def main(argv: list[str]) -> None:
    from ..engine.spec import TaskData
    from .runs import run_method
    from .workload import Workload

    spec = json.loads(argv[0])
    work = Path(spec["work"])
    work.mkdir(parents=True, exist_ok=True)
    workload = Workload(base=Path(spec["base"]), tiny=False, tasks=[TaskData(**t) for t in spec["tasks"]],
                        work=work, log=lambda message: None, device=spec["device"], dtype=spec["dtype"])
    stages = run_method(workload, spec["method"], work / "run", evaluate=True)
    out = {"method": spec["method"], "stages": len(stages), "peak_rss_mb": peak_rss_mb()}
    import torch

    if torch.cuda.is_available() and (spec["device"] or "cuda").startswith("cuda"):
        out["peak_gpu_mb"] = torch.cuda.max_memory_allocated() / 2**20
    print(json.dumps(out))


if __name__ == "__main__":
    main(sys.argv[1:])
