"""The configuration a run records, written once for `hicl run start`, the TUI's form and the demo.

Defaults are the engine's config dataclasses' own (`TrainConfig`, `EvalConfig`), with LoRA alpha
at twice the rank unless given. The run records the whole resolved configuration, so `hicl run
show` prints what trained, and a later change of a default never changes an old run.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from ..core.errors import InvalidInput
from ..engine.config import EvalConfig, ModelConfig, TrainConfig, from_dict, to_dict
from ..engine.errors import EngineError


def default(section: type, name: str) -> Any:
    """The default of one field of a config dataclass (what a face shows beside its flag)."""
    return next(f.default for f in dataclasses.fields(section) if f.name == name)


def run_config(*, train: dict[str, Any] | None = None, eval: dict[str, Any] | None = None,
               model: dict[str, Any] | None = None, method_options: dict[str, Any] | None = None,
               eval_all: bool = False, general_task: str | None = None, nproc: int | None = None,
               launcher_args: str | None = None, strategy: str | None = None) -> dict[str, Any]:
    """The run's config from the values a user gave (None: the default), checked like the worker
    will build it, so a bad value fails before anything is recorded.

    `nproc` (ranks per stage; None: the worker's `--nproc`), `strategy` (ddp or fsdp) and
    `launcher_args` (torchrun flags, e.g. for several nodes) go under "launch": they change where
    and how a stage runs, not its result.
    """
    train = {k: v for k, v in (train or {}).items() if v is not None}
    train.setdefault("alpha", 2 * train.get("rank", default(TrainConfig, "rank")))
    try:
        resolved = {"train": to_dict(from_dict(TrainConfig, train)),
                    "eval": to_dict(from_dict(EvalConfig, {k: v for k, v in (eval or {}).items() if v is not None}))}
        model = {k: v for k, v in (model or {}).items() if v}
        from_dict(ModelConfig, {"base": "-", **model})
    except EngineError as exc:
        raise InvalidInput(str(exc), hint=exc.hint) from None
    return {**resolved, "model": model, "method_options": dict(method_options or {}), "eval_all": bool(eval_all),
            **({"general_task": general_task} if general_task else {}), **_launch(nproc, launcher_args, strategy)}


def _launch(nproc: int | None, launcher_args: str | None, strategy: str | None) -> dict[str, Any]:
    import shlex

    from ..engine.spec import STRATEGIES

    if strategy is not None and strategy not in STRATEGIES:
        raise InvalidInput(f"--strategy must be one of {', '.join(STRATEGIES)}, not {strategy!r}")
    if nproc is not None and nproc < 1:
        raise InvalidInput(f"--nproc must be >= 1, not {nproc}", hint="the number of processes (GPUs) per stage")
    try:
        args = shlex.split(launcher_args or "")
    except ValueError as exc:
        raise InvalidInput(f"--launcher-args {launcher_args!r} does not parse: {exc}") from None
    bad = [a for a in args if a.split("=")[0] in ("--nproc-per-node", "--nproc_per_node", "--max-restarts",
                                                   "--max_restarts")]
    if bad:
        raise InvalidInput(f"--launcher-args may not set {bad[0].split('=')[0]}: hicl sets it",
                           hint="use --nproc for the processes per node")
    launch = {**({"nproc": nproc} if nproc else {}), **({"strategy": strategy} if strategy else {}),
              **({"launcher_args": args} if args else {})}
    return {"launch": launch} if launch else {}
