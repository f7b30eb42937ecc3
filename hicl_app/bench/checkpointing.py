"""Peak memory of LoRA training with activation checkpointing on vs off, and the same losses.

A LoRA step's memory beyond the weights is the decoder layers' saved activations, which grow
with depth and sequence length; checkpointing keeps one layer's worth. So the model is deep (the
tiny widths with 12 decoder layers, built here, untrained: memory does not depend on what it
knows) and the samples long (captions that fill max_length 256), unless `--base` names a model,
which is then trained as it is. Each variant trains the same LoRA for a few steps in its own
child process, which reports its peak resident set size (and, on CUDA, peak allocated GPU
memory) and its per-step losses; the figure is the ratio on / off, and the losses must agree.

`python -m hicl_app.bench.checkpointing '{"base", "records", "checkpointing", "device", "dtype"}'`
runs one child.
"""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
from pathlib import Path

from .core import Result

NAME = "memory-checkpointing"
MEASURES = "peak RSS of LoRA training: gradient checkpointing on vs off (12 layers, 256 tokens)"
MAX_LENGTH = 256
STEPS = 4
BATCH_SIZE = 8
#: float32 losses of the two variants agree to rounding; low precision is reported, not checked
LOSS_TOLERANCE = 1e-5


def long_records(records: list[dict], n: int) -> list[dict]:
    """`n` samples on the workload's images whose answers run past MAX_LENGTH tokens."""
    out = []
    for i, r in enumerate(itertools.islice(itertools.cycle(records), n)):
        words = f"{r['question']} {r['answer']}".split()
        out.append({"id": f"long-{i}", "image": r["image"], "question": "Describe the image in detail.",
                    "answer": " ".join(itertools.islice(itertools.cycle(words), 2 * MAX_LENGTH)), "history": []})
    return out


def _config():
    from ..engine.config import TrainConfig

    return TrainConfig(max_steps=STEPS, batch_size=BATCH_SIZE, lr=1e-3, dropout=0.0, max_length=MAX_LENGTH,
                       checkpoint_every=0, seed=0)


def child(spec: dict) -> dict:
    """One variant: a fresh LoRA on the base, trained STEPS steps; its peaks and losses."""
    import time

    import torch

    from ..core.taskfile import load_records
    from ..engine.config import ModelConfig
    from ..engine.modeling.adapters import new_lora
    from ..engine.modeling.checkpointing import enable_gradient_checkpointing
    from ..engine.modeling.models import load_base
    from ..engine.train.loop import train
    from .child import peak_rss_mb

    cfg = _config()
    loaded = load_base(ModelConfig(spec["base"], device=spec["device"], dtype=spec["dtype"]))
    torch.manual_seed(cfg.seed)
    model = new_lora(loaded.model, cfg)
    on = enable_gradient_checkpointing(model, spec["checkpointing"])
    records = load_records(Path(spec["records"]))
    cuda = loaded.device.type == "cuda"
    if cuda:
        torch.cuda.reset_peak_memory_stats(loaded.device)
    losses: list[float] = []
    rss_before, t0 = peak_rss_mb(), time.perf_counter()
    train(model, loaded.processor, records, cfg, device=loaded.device, dtype=loaded.dtype, checkpoint_dir=None,
          fingerprint={}, on_event=lambda e: losses.append(e["loss"]) if e["type"] == "loss" else None)
    out = {"checkpointing": on, "losses": losses, "seconds": time.perf_counter() - t0,
           "peak_rss_mb": peak_rss_mb(), "peak_rss_before_training_mb": rss_before,
           "dtype": str(loaded.dtype).removeprefix("torch.")}
    if cuda:
        out["peak_gpu_mb"] = torch.cuda.max_memory_allocated(loaded.device) / 2**20
    return out


def _run_child(spec: dict) -> dict:
    done = subprocess.run([sys.executable, "-m", __name__, json.dumps(spec)], capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"the checkpointing={spec['checkpointing']} child failed (exit {done.returncode}): "
                           f"{done.stderr.strip()[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def run(workload) -> Result:
    from ..builtin.tiny import build_tiny_base
    from ..core.taskfile import write_records

    work = workload.work / NAME
    work.mkdir(parents=True, exist_ok=True)
    if workload.tiny:
        workload.log(f"{NAME}: building a 12-layer tiny model")
        base = build_tiny_base(work / "deep-base", seed=0, size="deep")
    else:
        base = workload.base
    records = work / "long.jsonl"
    write_records(records, long_records(workload.records("train"), STEPS * BATCH_SIZE))
    runs = {}
    for setting in (False, True):
        workload.log(f"{NAME}: {STEPS} LoRA steps with checkpointing {'on' if setting else 'off'} in a child process")
        runs[setting] = _run_child({"base": str(base), "records": str(records), "checkpointing": setting,
                                    "device": workload.device, "dtype": workload.dtype})
    off, on = runs[False], runs[True]
    diff = max(abs(a - b) for a, b in zip(off["losses"], on["losses"]))
    same = diff <= LOSS_TOLERANCE if off["dtype"] == "float32" else None
    grown = {k: v["peak_rss_mb"] - v["peak_rss_before_training_mb"] for k, v in (("on", on), ("off", off))}
    check = (f"losses differ by at most {diff:.1e}; peak RSS of each child, of which training added "
             f"{grown['on']:.0f} vs {grown['off']:.0f} MB")
    if off.get("peak_gpu_mb") and on.get("peak_gpu_mb"):
        check += f"; GPU peak ratio {on['peak_gpu_mb'] / off['peak_gpu_mb']:.2f}"
    return Result(NAME, MEASURES, f"{on['peak_rss_mb']:.0f} MB", f"{off['peak_rss_mb']:.0f} MB",
                  on["peak_rss_mb"] / off["peak_rss_mb"], "ratio", "report", None, check, same,
                  {"on": on, "off": off, "max_loss_difference": diff, "base": str(base)})


if __name__ == "__main__":
    print(json.dumps(child(json.loads(sys.argv[1]))))
