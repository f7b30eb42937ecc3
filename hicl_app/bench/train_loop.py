"""Training throughput: hicl's loop with its fast paths vs a plain PEFT + transformers Trainer.

Same model (the base with a fresh LoRA from the same seed), data (every task's training set,
mixed, as joint training sees it), optimizer (AdamW), learning-rate schedule, clipping and
token-weighted loss. The Trainer gets what a research script gives it: a dataset that opens and
processes the image and tokenizes the conversation on every access, and a padding collator
(hicl's own encoding and collation, so both see identical tokens).

The Trainer reads the samples in hicl's order, so its per-step losses must match hicl's with
the vision cache on and grouping off (the Trainer logs losses rounded to 4 decimals). Grouping
by length changes the order, so the speed figure (cache + grouping) is not compared for losses.
LoRA dropout is 0: the Trainer's data loader draws from the global RNG, which would shift
dropout masks between the two.
"""

from __future__ import annotations

from typing import Any

from .core import Result, interleaved, skipped

NAME = "train"
MEASURES = "training samples/s: vision cache + length grouping vs PEFT + Trainer"
TARGET = 1.3
LOSS_TOLERANCE = 1e-3
EPOCHS = 2


def _config(**overrides):
    from ..engine.config import TrainConfig

    return TrainConfig(**{"epochs": EPOCHS, "batch_size": 8, "lr": 1e-3, "dropout": 0.0, "checkpoint_every": 0,
                          "seed": 0, **overrides})


def _fresh_lora(workload, cfg):
    import torch

    from ..engine.modeling.adapters import new_lora

    loaded = workload.load()
    torch.manual_seed(cfg.seed)
    return loaded, new_lora(loaded.model, cfg)


def hicl_trial(workload, records: list[dict], cfg) -> tuple[float, list[float]]:
    from ..engine.train.loop import train

    loaded, model = _fresh_lora(workload, cfg)
    losses: list[float] = []
    t0 = workload.clock()
    train(model, loaded.processor, records, cfg, device=loaded.device, dtype=loaded.dtype, checkpoint_dir=None,
          fingerprint={}, on_event=lambda e: losses.append(e["loss"]) if e["type"] == "loss" else None)
    return workload.clock() - t0, losses


def trainer_trial(workload, records: list[dict], cfg, log_every_step: bool = False) -> tuple[float, list[float]]:
    """The baseline: transformers' Trainer over an on-the-fly dataset, in hicl's sample order."""
    import tempfile

    import torch
    from transformers import Trainer, TrainingArguments
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    from ..engine.data.encoding import Encoder, collate
    from ..engine.train.loop import Schedule

    loaded, model = _fresh_lora(workload, cfg)
    encoder = Encoder(loaded.processor, cfg.max_length)
    pad_id = loaded.processor.tokenizer.pad_token_id
    schedule = Schedule(len(records), cfg)
    order = [i for epoch in range(cfg.epochs) for i in schedule.epoch_order(epoch)]

    class OnTheFly(torch.utils.data.Dataset):
        def __len__(self) -> int:
            return len(order)

        def __getitem__(self, i: int) -> Any:
            return encoder.encode(records[order[i]])

    class InOrder(Trainer):
        def _get_train_sampler(self, *args, **kwargs):
            return torch.utils.data.SequentialSampler(self.train_dataset)

    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=cfg.lr,
                                  weight_decay=cfg.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: schedule.lr(step) / cfg.lr)
    with tempfile.TemporaryDirectory(prefix="hicl-bench-trainer-", dir=workload.work) as out:
        args = TrainingArguments(
            output_dir=out, per_device_train_batch_size=cfg.batch_size, num_train_epochs=1,
            max_grad_norm=cfg.grad_clip, logging_steps=1 if log_every_step else 10**9, report_to=[],
            save_strategy="no", dataloader_num_workers=0, remove_unused_columns=False,
            use_cpu=loaded.device.type == "cpu", disable_tqdm=True, seed=cfg.seed, logging_nan_inf_filter=False)
        trainer = InOrder(model=model, args=args, train_dataset=OnTheFly(), optimizers=(optimizer, scheduler),
                          data_collator=lambda items: collate(items, pad_id, "right"))
        for callback in (PrinterCallback, ProgressCallback):
            trainer.remove_callback(callback)
        t0 = workload.clock()
        trainer.train()
        seconds = workload.clock() - t0
    return seconds, [h["loss"] for h in trainer.state.log_history if "loss" in h]


def run(workload) -> Result:
    try:
        import accelerate  # noqa: F401  (the Trainer needs it; hicl does not)
    except ImportError:
        return skipped(NAME, MEASURES, "the Trainer baseline needs accelerate (pip install accelerate)",
                       f">= {TARGET:g}x")
    records = workload.records("train")
    plain, grouped = _config(), _config(group_by_length=True)
    workload.log(f"{NAME}: {len(records)} samples x {EPOCHS} epochs, {workload.repeats} rounds")
    _, trainer_losses = trainer_trial(workload, records, plain, log_every_step=True)
    times, outputs = interleaved({
        "trainer": lambda: trainer_trial(workload, records, plain),
        "cache": lambda: hicl_trial(workload, records, plain),
        "cache+grouping": lambda: hicl_trial(workload, records, grouped),
        "no-cache": lambda: hicl_trial(workload, records, _config(cache_vision=False)),
    }, workload.repeats)
    hicl_losses = outputs["cache"][0]
    diff = (max(abs(a - b) for a, b in zip(hicl_losses, trainer_losses))
            if len(hicl_losses) == len(trainer_losses) else float("inf"))
    samples = len(records) * EPOCHS
    rate = {name: samples / seconds for name, seconds in times.items()}
    figure = times["trainer"] / times["cache+grouping"]
    same = diff <= LOSS_TOLERANCE
    return Result(
        NAME, MEASURES, f"{rate['cache+grouping']:.1f} samples/s", f"{rate['trainer']:.1f} samples/s",
        figure, "x", f">= {TARGET:g}x", figure >= TARGET,
        f"loss curve max |diff| {diff:.1e} (cache vs Trainer, same order)" if same
        else f"loss curves differ: max |diff| {diff:.1e} > {LOSS_TOLERANCE:g}", same,
        {"samples_per_s": rate, "seconds": times, "steps": len(hicl_losses), "loss_max_abs_diff": diff,
         "cache_only_speedup": times["trainer"] / times["cache"],
         "no_cache_speedup": times["trainer"] / times["no-cache"], "same_loss_curve": same})
