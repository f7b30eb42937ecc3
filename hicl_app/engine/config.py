"""Plain configuration records for training, evaluation and model loading.

Dataclasses, not dicts, so a typo in a field name fails at construction time; `to_dict` /
`from_dict` give the JSON form the catalog stores and the checkpoint fingerprint uses.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, TypeVar

from .errors import EngineError

T = TypeVar("T")


@dataclass
class TrainConfig:
    """LoRA hyper-parameters and the optimisation schedule of one stage.

    `targets` None means every linear layer inside the language model's decoder layers
    (q, k, v, o, gate, up, down for Llama-style models); never the vision tower, projector or
    lm_head. `max_steps`, when set, overrides `epochs` (optimizer steps, not micro-batches).
    `max_length` counts an image as one token, as LLaVA does (its 576 patches come on top).
    `checkpoint_every` 0 saves only at the end of the stage.
    `cache_vision` computes a frozen vision tower's features once per image and reuses them
    across epochs (and keeps each sample's processed inputs); it changes no result.
    `group_by_length` batches samples of similar length together (less padding, a different
    but still seeded sample order).
    `gradient_checkpointing` recomputes each decoder layer's activations in the backward pass
    instead of keeping them (None: on for models above a billion parameters); same trajectory.
    """

    rank: int = 8
    alpha: int = 16
    dropout: float = 0.05
    targets: list[str] | None = None
    lr: float = 2e-4
    epochs: int = 1
    max_steps: int | None = None
    batch_size: int = 8
    grad_accum: int = 1
    warmup_ratio: float = 0.03
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    seed: int = 0
    checkpoint_every: int = 50
    max_length: int = 512
    cache_vision: bool = True
    group_by_length: bool = False
    gradient_checkpointing: bool | None = None

    def __post_init__(self) -> None:
        checks = [
            (self.rank >= 1, "rank must be >= 1"),
            (self.alpha > 0, "alpha must be > 0"),
            (0.0 <= self.dropout < 1.0, "dropout must be in [0, 1)"),
            (self.lr > 0, "lr must be > 0"),
            (self.epochs >= 1, "epochs must be >= 1"),
            (self.max_steps is None or self.max_steps >= 1, "max_steps must be >= 1"),
            (self.batch_size >= 1, "batch_size must be >= 1"),
            (self.grad_accum >= 1, "grad_accum must be >= 1"),
            (0.0 <= self.warmup_ratio < 1.0, "warmup_ratio must be in [0, 1)"),
            (self.weight_decay >= 0, "weight_decay must be >= 0"),
            (self.grad_clip >= 0, "grad_clip must be >= 0 (0 disables clipping)"),
            (self.checkpoint_every >= 0, "checkpoint_every must be >= 0 (0: only at the end)"),
            (self.max_length >= 8, "max_length must be >= 8"),
            (self.targets is None or (isinstance(self.targets, list) and self.targets),
             "targets must be None or a non-empty list of module names"),
        ]
        _check(checks, "train")


@dataclass
class EvalConfig:
    """Greedy generation settings for scoring.

    `cache_vision` reuses (and stores) the frozen vision features of images the model has
    already seen in this process, e.g. while training; it changes no answer.
    """

    batch_size: int = 32
    max_new_tokens: int = 32
    cache_vision: bool = True

    def __post_init__(self) -> None:
        _check([(self.batch_size >= 1, "batch_size must be >= 1"),
                (self.max_new_tokens >= 1, "max_new_tokens must be >= 1")], "eval")


@dataclass
class ModelConfig:
    """Which base model to load and where.

    `base` is a local folder or a hub id; `device` / `dtype` None pick CUDA + bfloat16 when
    available, else CPU + float32.
    """

    base: str
    device: str | None = None
    dtype: str | None = None

    def __post_init__(self) -> None:
        _check([(bool(self.base), "base must name a model folder or hub id"),
                (self.dtype in (None, "float32", "bfloat16", "float16"),
                 "dtype must be one of float32, bfloat16, float16")], "model")


def _check(checks: list[tuple[bool, str]], section: str) -> None:
    bad = [msg for ok, msg in checks if not ok]
    if bad:
        raise EngineError(f"invalid {section} config: " + "; ".join(bad))


def to_dict(cfg: Any) -> dict[str, Any]:
    """JSON-ready dict of a config dataclass (lists copied)."""
    return dataclasses.asdict(cfg)


def from_dict(cls: type[T], data: dict[str, Any] | None) -> T:
    """Build `cls` from a dict, refusing unknown keys so a misspelt option never passes silently."""
    data = dict(data or {})
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise EngineError(f"unknown {cls.__name__} option(s): {', '.join(unknown)}",
                          hint=f"known options: {', '.join(sorted(known))}")
    return cls(**data)
