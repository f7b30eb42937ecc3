"""Peak memory of a six-task `hide` run vs a `seq-lora` run on the same data.

Each run goes through every stage (training and evaluation of the tasks seen so far) in its own
child process, which reports its peak resident set size (and, on CUDA, peak allocated GPU
memory). The figure is the ratio hide / seq-lora; HiDe promises memory efficiency.
"""

from __future__ import annotations

import json
import subprocess
import sys

from .core import Result, skipped

NAME = "memory"
MEASURES = "peak RSS: 6-task hide run vs seq-lora run"
METHODS = ("hide", "seq-lora")


def _child(workload, method: str) -> dict:
    spec = {"base": str(workload.base), "work": str(workload.work / f"memory-{method}"), "method": method,
            "device": workload.device, "dtype": workload.dtype,
            "tasks": [{"name": t.name, "train_path": str(t.train_path), "test_path": str(t.test_path),
                       "scorer": t.scorer} for t in workload.tasks]}
    done = subprocess.run([sys.executable, "-m", "hicl_app.bench.child", json.dumps(spec)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"the {method} child run failed (exit {done.returncode}): {done.stderr.strip()[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def run(workload) -> Result:
    from ..engine.methods import method_names

    missing = [m for m in METHODS if m not in method_names()]
    if missing:
        return skipped(NAME, MEASURES, f"method {', '.join(missing)} is not registered", "report")
    peaks = {}
    for method in METHODS:
        workload.log(f"{NAME}: a 6-stage {method} run in a child process")
        peaks[method] = _child(workload, method)
    hide, seq = peaks["hide"], peaks["seq-lora"]
    figure = hide["peak_rss_mb"] / seq["peak_rss_mb"]
    check = "peak RSS of each child"
    if hide.get("peak_gpu_mb") and seq.get("peak_gpu_mb"):
        check += f"; GPU peak ratio {hide['peak_gpu_mb'] / seq['peak_gpu_mb']:.2f}"
    return Result(NAME, MEASURES, f"{hide['peak_rss_mb']:.0f} MB", f"{seq['peak_rss_mb']:.0f} MB", figure,
                  "ratio", "report", None, check, None, {"hide": hide, "seq-lora": seq})
