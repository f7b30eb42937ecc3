"""Method options as users write them: `-o KEY=VALUE` on `hicl run start`, `METHOD:KEY=VALUE` labels
in `hicl demo --methods`. One parser for both, so a value means the same wherever it is typed;
each method's options dataclass then coerces and checks it (`engine.methods.options`).
"""

from __future__ import annotations

import json
import re
from typing import Any, Iterable

from ..core.errors import InvalidInput


def parse_value(text: str) -> Any:
    """JSON where it parses (`0.1`, `true`, `null`), else the text itself (`auto`, `0,3`)."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def parse_pairs(pairs: Iterable[str], *, example: str = "-o fusion=sum") -> dict[str, Any]:
    """`["fusion=sum", "tau=0.2"]` -> {"fusion": "sum", "tau": 0.2}; dashes in keys become underscores."""
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise InvalidInput(f"bad method option {pair!r}", hint=f"write KEY=VALUE, e.g. {example}")
        out[key.strip().replace("-", "_")] = parse_value(value)
    return out


def parse_variant(label: str) -> tuple[str, dict[str, Any]]:
    """`llava-c:sac=off:uir_weight=0` -> ("llava-c", {"sac": "off", "uir_weight": 0}): a method with
    some options changed, so ablations run side by side."""
    method, *pairs = label.split(":")
    try:
        return method.strip(), parse_pairs(pairs, example="llava-c:sac=off")
    except InvalidInput:
        raise InvalidInput(f"bad method variant {label!r}",
                           hint="write METHOD:KEY=VALUE[:KEY=VALUE], e.g. llava-c:sac=off") from None


def split_methods(text: str) -> tuple[str, ...]:
    """`seq-lora,hide:expand=0,3` -> ("seq-lora", "hide:expand=0,3"): the methods of `--methods`.

    Commas separate methods, but a piece that starts with a layer index continues the option
    value before it (no method name starts with a digit), so a list value such as `expand=0,3`
    needs no quoting of its own, also with more options after it (`hide:expand=2,3:routing=top1`)."""
    out: list[str] = []
    for piece in (p.strip() for p in text.split(",")):
        if out and "=" in out[-1] and re.fullmatch(r"-?\d+(:.*)?", piece):
            out[-1] += "," + piece
        elif piece:
            out.append(piece)
    return tuple(out)


def check_method(method: str, options: dict[str, Any], *, what: str = "") -> None:
    """Refuse an unknown method or a bad option value before anything is recorded."""
    from ..engine.errors import EngineError
    from ..engine.methods import get_method

    try:
        get_method(method, options)
    except EngineError as exc:
        raise InvalidInput(f"{what}{exc}", hint=exc.hint) from None
