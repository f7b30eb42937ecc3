"""The start-run form's values turned into start_run's arguments, checked like the CLI checks them.

The hyper-parameter fields' defaults are the run defaults (`services.run_config`); learning rate and
epochs are left empty, meaning "chosen by the base's size" as `hicl run start` chooses them
(`services.run_defaults`). A method's own fields come from its options dataclass, so the form
offers what `hicl run start` offers.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..core.errors import InvalidInput
from ..engine.config import TrainConfig
from ..services.run_config import default, run_config

#: The form's hyper-parameter fields: (key, label, type, default).
TRAIN_FIELDS: tuple[tuple[str, str, type, object], ...] = (
    ("rank", "LoRA rank", int, default(TrainConfig, "rank")),
    ("lr", "learning rate", float, None),
    ("epochs", "epochs", int, None),
    ("max_steps", "max steps / stage", int, default(TrainConfig, "max_steps")),
    ("batch_size", "batch size", int, default(TrainConfig, "batch_size")),
)


@dataclass
class RunRequest:
    method: str
    tasks: list[str]
    base: str
    name: str | None
    config: dict
    #: the hyper-parameters typed in (None: not given) and the method options, for `config_for`
    train: dict | None = None
    method_options: dict | None = None


def config_for(request: RunRequest, base) -> dict:
    """The run's config once its base is found: the values typed in over the base's defaults."""
    from ..services.run_defaults import defaults_for, merge

    train, evaluation, source = defaults_for(base)
    config = run_config(train=merge(request.train or {}, train), eval=evaluation,
                        method_options=request.method_options or {})
    return {**config, "defaults": source}


def method_choices() -> list[str]:
    """The engine's registered methods (the registry is imported lazily, as start_run does)."""
    try:
        from ..engine.methods import method_names
    except ImportError:
        return []
    return list(method_names())


def method_fields(method: str | None) -> list[Any]:
    """The options of `method` (`OptionSpec`s: name, kind, choices, default, help), none when unknown."""
    from ..engine.methods import METHODS
    from ..engine.methods.options import specs

    cls = METHODS.get(method or "")
    return specs(cls.Options) if cls is not None else []


def parse_run_form(method: str | None, tasks: list[str], base: str, name: str, values: dict[str, str],
                   options: dict[str, str] | None = None) -> RunRequest:
    """Check the fields a form can get wrong; every problem is reported at once.

    `options` holds the method option fields as typed; an empty one keeps the option's default.
    """
    problems = []
    if not method:
        problems.append("method: choose one")
    if not tasks:
        problems.append("tasks: tick at least one, in training order")
    if not base.strip():
        problems.append("base: a local model folder or a hub id")
    numbers: dict = {}
    given: dict = {}
    for key, label, kind, fallback in TRAIN_FIELDS:
        raw = (values.get(key) or "").strip()
        if not raw:
            numbers[key] = fallback
            given[key] = None
            continue
        try:
            number = kind(raw)
        except ValueError:
            problems.append(f"{label}: {raw!r} is not {'a whole number' if kind is int else 'a number'}")
            continue
        if number <= 0:
            problems.append(f"{label}: must be positive")
        numbers[key] = given[key] = number
    chosen = {k: v.strip() for k, v in (options or {}).items() if v and v.strip()}
    if method and chosen:
        from ..engine.errors import EngineError
        from ..engine.methods import get_method

        try:
            typed = get_method(method, chosen).options
            chosen = {k: getattr(typed, k) for k in chosen}  # recorded as the CLI's flags would
        except EngineError as exc:
            problems.append(f"{method} options: {exc}")
    if problems:
        raise InvalidInput("the run form has problems", problems)
    return RunRequest(method=method, tasks=list(tasks), base=base.strip(), name=name.strip() or None,
                      config=run_config(train=numbers, method_options=chosen), train=given, method_options=chosen)
