"""HiDe inference: fused layers merged into the base weights once vs rebuilt on every forward.

The official HiDe-LLaVA code sums the task experts' LoRA factors of every general layer inside
each forward; hicl adds the fused update to the base weights once at load (`merge_fused`, on
by default). Both models come from the same six-stage `hide` run, use the official fusion
(`sum`) and answer every test question of the workload; their answers must match.
"""

from __future__ import annotations

from .core import Result, interleaved, skipped

NAME = "hide-merge"
MEASURES = "HiDe inference: merged fused layers vs per-forward rebuild"
TARGET = 2.0
FUSION = "sum"


def run(workload) -> Result:
    from ..engine.methods import get_method, method_names

    if "hide" not in method_names():
        return skipped(NAME, MEASURES, "method hide is not registered", f">= {TARGET:g}x")
    from ..engine.config import EvalConfig

    stage_dir = workload.hide_run()
    records = workload.records("test")
    cfg = EvalConfig(batch_size=32, max_new_tokens=12, cache_vision=False)
    models = {}
    for merged in (True, False):
        loaded = workload.load()
        method = get_method("hide", {"merge_fused": merged, "fusion": FUSION})
        models[merged] = (method.load(loaded.model, stage_dir), loaded)

    def trial(merged: bool):
        return workload.timed_answers(*models[merged], records, cfg)

    workload.log(f"{NAME}: {len(records)} questions, {workload.repeats} rounds")
    times, outputs = interleaved({"merged": lambda: trial(True), "per-forward": lambda: trial(False)},
                                 workload.repeats)
    reference = outputs["per-forward"][0]
    same = all(a == reference for a in outputs["merged"] + outputs["per-forward"])
    differ = sum(a != b for a, b in zip(outputs["merged"][0], reference))
    n = len(records)
    figure = times["per-forward"] / times["merged"]
    n_experts = len([p for p in stage_dir.parent.iterdir() if p.name.startswith("stage-")])
    return Result(
        NAME, MEASURES, f"{n / times['merged']:.1f} samples/s", f"{n / times['per-forward']:.1f} samples/s",
        figure, "x", f">= {TARGET:g}x", figure >= TARGET,
        "same predictions" if same else f"predictions differ on {differ}/{n}", same,
        {"samples": n, "experts": n_experts, "fusion": FUSION, "seconds": times, "same_predictions": same,
         "differing": differ})
