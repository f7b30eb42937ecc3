"""HiDe inference cost: the `hide` model of a six-stage run vs the base with one LoRA merged.

The cheapest model a LoRA method can serve is the base with its adapter merged (no cost per
token). The HiDe model adds the routing encoders and, in its expanded layers, one expert per
task mixed per sample; its fused layers are merged like the LoRA. Both answer every test
question of the workload in batches; the figure is hide time / merged-LoRA time (target <= 1.2).
The parameters the HiDe stage keeps are reported beside it. The figure is for the method's
defaults (the paper's: the top layer expanded); the same stage served with every layer expanded
(what `--expand auto` chooses on the demo's 4-layer model) is timed beside it and reported.
"""

from __future__ import annotations

from .core import Result, interleaved, skipped

NAME = "hide-infer"
MEASURES = "HiDe model inference vs base + one merged LoRA"
TARGET = 1.2


def run(workload) -> Result:
    from ..engine.methods import method_names

    if "hide" not in method_names():
        return skipped(NAME, MEASURES, "method hide is not registered", f"<= {TARGET:g}x")
    from ..engine.adapters import load_lora
    from ..engine.config import EvalConfig
    from ..engine.hide.bench import param_report
    from ..engine.methods import get_method
    from ..engine.models import decoder_layers

    stage_dir = workload.hide_run()
    records = workload.records("test")
    cfg = EvalConfig(batch_size=32, max_new_tokens=12, cache_vision=False)
    method = get_method("hide")
    hide_loaded = workload.load()
    hide = method.load(hide_loaded.model, stage_dir)
    all_loaded = workload.load()
    every = ",".join(str(i) for i in range(len(decoder_layers(all_loaded.model)[1])))
    hide_all = get_method("hide", {"expand": every}).load(all_loaded.model, stage_dir)
    lora_loaded = workload.load()
    lora = load_lora(lora_loaded.model, stage_dir / "adapter").merge_and_unload()
    models = {"hide": (hide, hide_loaded), "hide-all-layers": (hide_all, all_loaded),
              "merged-lora": (lora, lora_loaded)}

    workload.log(f"{NAME}: {len(records)} questions, {workload.repeats} rounds")
    times, _ = interleaved({name: (lambda n=name: workload.timed_answers(*models[n], records, cfg)) for name in models},
                           workload.repeats)
    figure = times["hide"] / times["merged-lora"]
    all_ratio = times["hide-all-layers"] / times["merged-lora"]
    params = param_report(stage_dir, hide)
    params_all = param_report(stage_dir, hide_all)
    n = len(records)
    check = (f"{len(params['expanded_layers'])} expanded layer(s), {params['tasks']} experts, kept "
             f"{params['kept'] / params['one_adapter']:.2f}x one adapter; every layer expanded: "
             f"{all_ratio:.2f}x, kept {params_all['kept'] / params_all['one_adapter']:.2f}x")
    return Result(NAME, MEASURES, f"{n / times['hide']:.1f} samples/s", f"{n / times['merged-lora']:.1f} samples/s",
                  figure, "ratio", f"<= {TARGET:g}x", figure <= TARGET, check, None,
                  {"samples": n, "seconds": times, "options": method.options, "params": params,
                   "all_layers": {"ratio": all_ratio, "params": params_all}})
