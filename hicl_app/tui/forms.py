"""The start-run form's values turned into start_run's arguments, checked like the CLI checks them."""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import InvalidInput

#: The form's hyper-parameter fields: (key, label, type, default); the CLI's defaults.
TRAIN_FIELDS: tuple[tuple[str, str, type, object], ...] = (
    ("rank", "LoRA rank", int, 8),
    ("lr", "learning rate", float, 2e-4),
    ("epochs", "epochs", float, 1.0),
    ("max_steps", "max steps / stage", int, None),
    ("batch_size", "batch size", int, 8),
)


@dataclass
class RunRequest:
    method: str
    tasks: list[str]
    base: str
    name: str | None
    config: dict


def method_choices() -> list[str]:
    """The engine's registered methods (the registry is imported lazily, as start_run does)."""
    try:
        from ..engine.methods import method_names
    except ImportError:
        return []
    return list(method_names())


def run_config(*, rank: int = 8, lr: float = 2e-4, epochs: float = 1.0, max_steps: int | None = None,
               batch_size: int = 8) -> dict:
    """The run config `hicl run start` records for the same options (other options at their defaults)."""
    return {
        "train": {"rank": rank, "alpha": 2.0 * rank, "lr": lr, "epochs": epochs, "max_steps": max_steps,
                  "batch_size": batch_size, "grad_accum": 1, "warmup_ratio": 0.03, "seed": 0,
                  "checkpoint_every": 50},
        "eval": {"batch_size": 32, "max_new_tokens": 32},
        "model": {},
        "method_options": {},
        "eval_all": False,
    }


def parse_run_form(method: str | None, tasks: list[str], base: str, name: str, values: dict[str, str]) -> RunRequest:
    """Check the fields a form can get wrong; every problem is reported at once."""
    problems = []
    if not method:
        problems.append("method: choose one")
    if not tasks:
        problems.append("tasks: tick at least one, in training order")
    if not base.strip():
        problems.append("base: a local model folder or a hub id")
    numbers: dict = {}
    for key, label, kind, default in TRAIN_FIELDS:
        raw = (values.get(key) or "").strip()
        if not raw:
            numbers[key] = default
            continue
        try:
            number = kind(raw)
        except ValueError:
            problems.append(f"{label}: {raw!r} is not {'a whole number' if kind is int else 'a number'}")
            continue
        if number <= 0:
            problems.append(f"{label}: must be positive")
        numbers[key] = number
    if problems:
        raise InvalidInput("the run form has problems", problems)
    return RunRequest(method=method, tasks=list(tasks), base=base.strip(), name=name.strip() or None,
                      config=run_config(**numbers))
