"""Registry of continual-learning methods: a new method is a module plus one entry here."""

from __future__ import annotations

from typing import Any

from ..errors import EngineError
from .base import Method
from .hide.method import Hide
from .lora.joint import Joint
from .llava_c.method import LlavaC
from .lora.seq_lora import SeqLora

METHODS: dict[str, type[Method]] = {cls.name: cls for cls in (SeqLora, Joint, LlavaC, Hide)}


def method_names() -> list[str]:
    return list(METHODS)


def get_method(name: str, options: dict[str, Any] | None = None) -> Method:
    """An instance of method `name` with validated `options`."""
    try:
        cls = METHODS[name]
    except KeyError:
        raise EngineError(f"unknown method {name!r}", hint=f"available: {', '.join(METHODS)}") from None
    return cls(options)
