"""Batched evaluation vs the one-sample-at-a-time greedy loop of the research eval scripts.

The reference loop does what LLaVA's `model_vqa.py` does per question: open the image, run the
processor on it and the prompt, `generate` greedily, decode. hicl's `generate_answers` encodes
everything first, sorts by length, left-pads batches and decodes with the KV cache. Both answer
every test question of the workload through the same PEFT-wrapped model; the answers must match.
The vision cache is off here, so the figure is batching alone.
"""

from __future__ import annotations

from typing import Any

from .core import Result, interleaved

NAME = "eval"
MEASURES = "evaluation: batched generate vs one sample at a time"
TARGET = 4.0
BATCH_SIZE = 32
MAX_NEW_TOKENS = 12


def one_by_one(model: Any, processor: Any, records: list[dict], max_new_tokens: int, device, dtype) -> list[str]:
    """Greedy answers, one `generate` call per sample, as the research scripts do."""
    import torch

    from ..engine.data.encoding import Encoder, load_image
    from ..engine.eval.generate import stop_ids

    encoder = Encoder(processor)
    tokenizer = processor.tokenizer
    stops = stop_ids(model, tokenizer)
    answers = []
    with torch.no_grad():
        for record in records:
            if record.get("history"):
                raise ValueError("the reference loop handles single-turn samples only")
            prompt = "".join(text for text, _ in encoder.segments(record, with_answer=False))
            inputs = processor(images=[load_image(record["image"])], text=[prompt], return_tensors="pt")
            inputs = {k: (v.to(device, dtype) if v.is_floating_point() else v.to(device)) for k, v in inputs.items()}
            out = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False,
                                 pad_token_id=tokenizer.pad_token_id, eos_token_id=sorted(stops))
            row = out[0, inputs["input_ids"].shape[1]:].tolist()
            cut = next((k for k, t in enumerate(row) if t in stops), len(row))
            answers.append(tokenizer.decode(row[:cut], skip_special_tokens=True).strip())
    return answers


def run(workload) -> Result:
    from ..engine.config import EvalConfig, TrainConfig
    from ..engine.eval.generate import generate_answers
    from ..engine.modeling.adapters import new_lora

    loaded = workload.load()
    model = new_lora(loaded.model, TrainConfig())  # evaluated as after a stage: through PEFT
    model.eval()
    records = workload.records("test")
    cfg = EvalConfig(batch_size=BATCH_SIZE, max_new_tokens=MAX_NEW_TOKENS, cache_vision=False)
    kw = dict(device=loaded.device, dtype=loaded.dtype)

    def batched():
        t0 = workload.clock()
        answers = generate_answers(model, loaded.processor, records, cfg, **kw)
        return workload.clock() - t0, answers

    def reference():
        t0 = workload.clock()
        answers = one_by_one(model, loaded.processor, records, MAX_NEW_TOKENS, **kw)
        return workload.clock() - t0, answers

    workload.log(f"{NAME}: {len(records)} questions, {workload.repeats} rounds")
    times, outputs = interleaved({"batched": batched, "one-by-one": reference}, workload.repeats)
    same = all(a == outputs["one-by-one"][0] for a in outputs["batched"] + outputs["one-by-one"])
    differ = sum(a != b for a, b in zip(outputs["batched"][0], outputs["one-by-one"][0]))
    n = len(records)
    figure = times["one-by-one"] / times["batched"]
    return Result(
        NAME, MEASURES, f"{n / times['batched']:.1f} samples/s", f"{n / times['one-by-one']:.1f} samples/s",
        figure, "x", f">= {TARGET:g}x", figure >= TARGET,
        "same predictions" if same else f"predictions differ on {differ}/{n}", same,
        {"samples": n, "batch_size": BATCH_SIZE, "max_new_tokens": MAX_NEW_TOKENS, "seconds": times,
         "same_predictions": same, "differing": differ})
