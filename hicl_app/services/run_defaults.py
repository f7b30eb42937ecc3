"""The hyper-parameters a run gets for the values a user leaves out: chosen by the base's size,
or a named preset.

The engine's `TrainConfig` defaults (lr 2e-4, one epoch) are LLaVA-1.5's LoRA recipe for a
billion-parameter model; a tiny base (the built-in one, a test model) learns almost nothing with
them on a small task. Below `TINY_PARAMS` parameters a run therefore defaults to a larger step
and more epochs. `--preset demo` gives exactly the settings `hicl demo` trains with.

Precedence: a value the user gives > the preset > the base-size default > `TrainConfig`.
"""

from __future__ import annotations

from typing import Any

from .base_model import BaseModel

#: bases with fewer parameters than this get `TINY` as their defaults
TINY_PARAMS = 100_000_000

#: defaults for a tiny base (under 100M parameters)
TINY: dict[str, Any] = {"lr": 3e-3, "epochs": 8, "warmup_ratio": 0.1}

#: `--preset NAME`: train and eval settings; "demo" is what `hicl demo` trains each stage with
#: (tests/faces/test_cli_newuser.py checks it against the demo's own configuration)
PRESETS: dict[str, dict[str, dict[str, Any]]] = {
    "demo": {"train": {"lr": 4e-3, "max_steps": 130, "batch_size": 8, "rank": 8, "dropout": 0.0, "seed": 0,
                       "warmup_ratio": 0.1, "checkpoint_every": 130},
             "eval": {"batch_size": 64, "max_new_tokens": 12}},
}

DEFAULTS_HELP = (f"Defaults follow the base's size: under {TINY_PARAMS // 1_000_000}M parameters lr 3e-3, 8 epochs, "
                 "warmup 0.1 (a tiny base learns little with less); otherwise lr 2e-4, 1 epoch, warmup 0.03 "
                 "(LLaVA-1.5's LoRA recipe). --preset demo: `hicl demo`'s settings (lr 4e-3, 130 steps a "
                 "stage, batch 8, rank 8, dropout 0, warmup 0.1, eval batch 64, 12 new tokens).")


def size_label(params: int | None) -> str:
    if params is None:
        return "size unknown"
    return f"{params / 1e9:.1f}B parameters" if params >= 1e9 else f"{params / 1e6:.1f}M parameters"


def defaults_for(base: BaseModel, preset: str | None = None) -> tuple[dict[str, Any], dict[str, Any], str]:
    """(train defaults, eval defaults, where they come from) for a run on `base`."""
    from ..core.errors import InvalidInput

    if preset is not None:
        if preset not in PRESETS:
            raise InvalidInput(f"unknown preset {preset!r}", hint=f"choose one of {', '.join(PRESETS)}")
        chosen = PRESETS[preset]
        return dict(chosen["train"]), dict(chosen.get("eval", {})), f"preset {preset}"
    if base.params is not None and base.params < TINY_PARAMS:
        return dict(TINY), {}, f"defaults for a tiny base ({size_label(base.params)})"
    size = "unknown size" if base.params is None else size_label(base.params)
    return {}, {}, f"defaults for a base of {size}"


def merge(given: dict[str, Any], defaults: dict[str, Any]) -> dict[str, Any]:
    """`given`'s values (None: not given) over `defaults`."""
    return {**defaults, **{k: v for k, v in given.items() if v is not None}}
