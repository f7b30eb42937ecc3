"""The registry of continual-learning methods, filled by the method packages themselves.

A method registers its class with `@register` when its module is imported: the built-in ones are
imported below; another package adds its own under the `hicl.methods` entry-point group
(`[project.entry-points."hicl.methods"] my-method = "my_pkg.method"`), loaded here, so the CLI, the
TUI, the worker and its child processes all see it without a change to hicl.
"""

from __future__ import annotations

import dataclasses
import importlib
from importlib.metadata import entry_points
from typing import Any, TypeVar

from ..errors import EngineError
from .base import Method

M = TypeVar("M", bound=type[Method])

METHODS: dict[str, type[Method]] = {}
BUILTIN = ("lora.seq_lora", "lora.joint", "llava_c.method", "hide.method", "replay.method", "ewc.method", "lwf.method",
           "o_lora.method", "moelora.method", "merge.method")
ENTRY_POINTS = "hicl.methods"


def register(cls: M) -> M:
    """Add a Method subclass to the registry under its `name` (a class decorator)."""
    name = getattr(cls, "name", None)
    if not isinstance(name, str) or not name or name[0].isdigit() or any(c in name for c in ":,= "):
        raise EngineError(f"method class {cls.__qualname__} needs a name without ':', ',', '=' or spaces")
    if not dataclasses.is_dataclass(cls.Options):
        raise EngineError(f"method {name!r}: Options must be a dataclass")
    known = METHODS.get(name)
    if known is not None and known is not cls and known.__qualname__ != cls.__qualname__:
        raise EngineError(f"two methods are named {name!r}: {known.__module__} and {cls.__module__}")
    METHODS[name] = cls
    return cls


def unregister(name: str) -> None:
    METHODS.pop(name, None)


def load_plugins() -> None:
    """Import the methods other packages declare under the `hicl.methods` entry points."""
    for ep in entry_points(group=ENTRY_POINTS):
        try:
            ep.load()
        except Exception as exc:  # a broken plugin must say so, not break every command
            raise EngineError(f"the method plugin {ep.name!r} ({ep.value}) failed to load: {type(exc).__name__}: {exc}",
                              hint="fix or uninstall the package that declares it") from None


def method_names() -> list[str]:
    return list(METHODS)


def get_method(name: str, options: dict[str, Any] | None = None) -> Method:
    """An instance of method `name` with validated `options`."""
    try:
        cls = METHODS[name]
    except KeyError:
        raise EngineError(f"unknown method {name!r}", hint=f"available: {', '.join(METHODS)}") from None
    return cls(options)


for _module in BUILTIN:
    importlib.import_module(f"{__name__}.{_module}")
load_plugins()
