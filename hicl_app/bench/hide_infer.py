"""HiDe inference cost: the `hide` model of a six-stage run vs the base with one LoRA merged.

The cheapest model a LoRA method can serve is the base with its adapter merged (no cost per
token). The HiDe model adds the routing encoders and, in its expanded layers, one expert per
task mixed per sample; its fused layers are merged like the LoRA. The figure is hide time /
merged-LoRA time of a forward pass over the same batches of every test prompt of the workload
(target <= 1.2): the same tokens for both, batched task by task as an evaluation runs them.
Greedy generation is timed too and reported, in batches of 32 across task boundaries (mixed
batches, as mixed traffic would be), but the two models' answers differ in length, so that
ratio also measures how much each one says.
The parameters the HiDe stage keeps are reported beside it. The figure is for the method's
defaults (the paper's: the top layer expanded); the same stage served with the `VARIANTS` below is
timed beside it and reported.
"""

from __future__ import annotations

from .core import Result, interleaved, skipped

NAME = "hide-infer"
MEASURES = "HiDe model inference vs base + one merged LoRA"
TARGET = 1.2
#: the same stage served with other options, timed beside the default: the first and the top layer
#: expanded, every layer (what `--expand auto` chooses on the demo's 4-layer model), and every layer
#: with top-1 routing (a batch of one task runs with its expert merged into the weights), and the
#: same without that merge (one expert's rank-r path per sample instead of all t); "all" = every layer
VARIANTS = {"hide-first-top": {"expand": "0,-1"}, "hide-all-layers": {"expand": "all"},
            "hide-all-top1": {"expand": "all", "routing": "top1"},
            "hide-all-top1-unmerged": {"expand": "all", "routing": "top1", "merge_top1": False}}


def run(workload) -> Result:
    from ..engine.methods import method_names

    if "hide" not in method_names():
        return skipped(NAME, MEASURES, "method hide is not registered", f"<= {TARGET:g}x")
    from ..engine.config import EvalConfig
    from ..engine.methods import get_method
    from ..engine.methods.options import to_json
    from ..engine.modeling.adapters import load_lora
    from ..engine.modeling.models import decoder_layers
    from .hide_model import param_report

    stage_dir = workload.hide_run()
    records = workload.records("test")
    by_task = [workload.task_records(t, "test") for t in workload.tasks]
    cfg = EvalConfig(batch_size=32, max_new_tokens=12, cache_vision=False)
    method = get_method("hide")
    hide_loaded = workload.load()
    hide = method.load(hide_loaded.model, stage_dir)
    models = {"hide": (hide, hide_loaded)}
    every = ",".join(str(i) for i in range(len(decoder_layers(hide_loaded.model)[1])))
    for name, options in VARIANTS.items():
        loaded = workload.load()
        options = {**options, "expand": every if options["expand"] == "all" else options["expand"]}
        models[name] = (get_method("hide", options).load(loaded.model, stage_dir), loaded)
    lora_loaded = workload.load()
    models["merged-lora"] = (load_lora(lora_loaded.model, stage_dir / "adapter").merge_and_unload(), lora_loaded)

    batches = [b for task in by_task for b in _batches(hide_loaded, task, cfg.batch_size)]
    workload.log(f"{NAME}: {len(records)} prompts in {len(batches)} batches of one task, {workload.repeats} rounds")
    times, _ = interleaved({name: (lambda n=name: _timed_forward(workload, models[n][0], batches)) for name in models},
                           workload.repeats)
    gen, _ = interleaved({name: (lambda n=name: workload.timed_answers(*models[n], records, cfg)) for name in models},
                         workload.repeats)
    figure = times["hide"] / times["merged-lora"]
    params = param_report(stage_dir, hide)
    variants = {name: {"options": VARIANTS[name], "ratio": times[name] / times["merged-lora"],
                       "generate_ratio": gen[name] / gen["merged-lora"], "params": param_report(stage_dir, models[name][0])}
                for name in VARIANTS}
    n = len(records)
    check = (f"{len(params['expanded_layers'])} expanded layer(s), {params['tasks']} experts, kept "
             f"{params['kept'] / params['one_adapter']:.2f}x one adapter, generation "
             f"{gen['hide'] / gen['merged-lora']:.2f}x; "
             + "; ".join(f"{' '.join(f'{k} {o}' for k, o in v['options'].items())}: {v['ratio']:.2f}x, kept "
                         f"{v['params']['kept'] / v['params']['one_adapter']:.2f}x, generation {v['generate_ratio']:.2f}x"
                         for v in variants.values()))
    return Result(NAME, MEASURES, f"{n / times['hide']:.1f} samples/s", f"{n / times['merged-lora']:.1f} samples/s",
                  figure, "ratio", f"<= {TARGET:g}x", figure <= TARGET, check, None,
                  {"samples": n, "forward_seconds": times, "generate_seconds": gen, "options": to_json(method.options), "params": params,
                   "variants": variants})


def _batches(loaded, records: list[dict], size: int) -> list[dict]:
    """The prompts of `records`, encoded and left-padded in batches of `size`, on the model's device."""
    from ..engine.data.encoding import Encoder, collate

    encoder = Encoder(loaded.processor, max_length=10**9)
    prompts = [encoder.encode(r, with_answer=False) for r in records]
    pad = loaded.processor.tokenizer.pad_token_id
    out = []
    for start in range(0, len(prompts), size):
        batch = collate(prompts[start:start + size], pad, "left")
        batch.pop("labels")
        out.append({k: (v.to(loaded.device, loaded.dtype) if v.is_floating_point() else v.to(loaded.device))
                    for k, v in batch.items()})
    return out


def _timed_forward(workload, model, batches: list[dict]) -> tuple[float, None]:
    import torch

    t0 = workload.clock()
    with torch.no_grad():
        for batch in batches:
            model(**batch)
    return workload.clock() - t0, None
