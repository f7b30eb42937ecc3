"""Typed method options: each method declares a dataclass, everything else is read from it.

A field's type says how a value given on the command line, in a TUI form or as JSON is coerced
(`"0.1"` or `1` for a float, `on`/`false` for a bool, a Literal's choices, `None` where the type
allows it); its `metadata["help"]` is the flag's help text; the dataclass's `__post_init__` checks
what a type cannot say (ranges, combinations). The CLI's flags, the TUI's run form, `hicl run
methods` and the demo's `method:key=value` labels all go through `make_options`, so none of them
guesses a type from a default. Pure Python: the CLI builds its flags from it at start.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass
from typing import Any, Literal, Union, get_args, get_origin

from ..errors import EngineError

TRUE = ("true", "on", "yes", "1")
FALSE = ("false", "off", "no", "0")


def option(default: Any, help: str, **kwargs: Any) -> Any:
    """A dataclass field with its help text, for an options class."""
    return dataclasses.field(default=default, metadata={"help": help}, **kwargs)


@dataclass(frozen=True)
class OptionSpec:
    """What a face needs to offer one option: name, kind, choices, default, help."""

    name: str
    kind: str  # bool | int | float | str | choice
    default: Any
    help: str
    choices: tuple[str, ...] = ()
    optional: bool = False  # None is accepted


def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _unwrap(tp: Any) -> tuple[Any, bool]:
    """(the type without None, whether None is allowed)."""
    origin = get_origin(tp)
    if origin in (Union, types.UnionType):
        args = [a for a in get_args(tp) if a is not type(None)]
        return (args[0] if len(args) == 1 else Union[tuple(args)]), len(args) < len(get_args(tp))
    return tp, False


def specs(cls: type) -> list[OptionSpec]:
    """The options of an options dataclass, in declaration order."""
    hints = _hints(cls)
    out = []
    for f in dataclasses.fields(cls):
        tp, optional = _unwrap(hints[f.name])
        if get_origin(tp) is Literal:
            kind, choices = "choice", tuple(str(c) for c in get_args(tp))
        else:
            kind, choices = tp.__name__, ()
        out.append(OptionSpec(f.name, kind, f.default, f.metadata.get("help", ""), choices, optional))
    return out


def coerce(spec: OptionSpec, value: Any, method: str) -> Any:
    """`value` as the option's type, or EngineError saying what was expected."""
    if value is None or (spec.optional and isinstance(value, str) and value.lower() in ("", "none", "null")):
        if spec.optional:
            return None
        raise EngineError(f"{method} option {spec.name} needs a value")
    want = {"bool": "true or false", "int": "an integer", "float": "a number", "str": "text",
            "choice": "one of " + ", ".join(spec.choices)}[spec.kind]
    bad = EngineError(f"{method} option {spec.name}={value!r} must be {want}",
                      hint=f"--{spec.name.replace('_', '-')}: {spec.help}" if spec.help else None)
    text = value.strip() if isinstance(value, str) else None
    if spec.kind == "bool":
        if isinstance(value, bool):
            return value
        if text is not None and text.lower() in TRUE + FALSE:
            return text.lower() in TRUE
        raise bad
    if spec.kind in ("int", "float"):
        if isinstance(value, bool):
            raise bad
        try:
            number = float(text) if text is not None else float(value)
        except (TypeError, ValueError):
            raise bad from None
        if spec.kind == "int":
            if number != int(number):
                raise bad
            return int(number)
        return number
    if spec.kind == "choice":
        choice = str(value).strip().lower() if not isinstance(value, bool) else None
        if choice not in spec.choices:
            raise bad
        return choice
    if isinstance(value, (dict, list)):
        raise bad
    return str(value)


def make_options(cls: type, raw: dict[str, Any] | None, method: str) -> Any:
    """An instance of the options dataclass `cls` from user-given values (unknown keys refused)."""
    raw = {str(k).replace("-", "_"): v for k, v in (raw or {}).items()}
    by_name = {s.name: s for s in specs(cls)}
    unknown = sorted(set(raw) - set(by_name))
    if unknown:
        known = ", ".join(by_name) or "none"
        raise EngineError(f"unknown option(s) for method {method!r}: {', '.join(unknown)}",
                          hint=f"known options: {known} (`hicl run methods {method}`)")
    try:
        return cls(**{k: coerce(by_name[k], v, method) for k, v in raw.items()})
    except ValueError as exc:
        raise EngineError(f"{method} options: {exc}") from None


def to_json(options: Any) -> dict[str, Any]:
    """Every option with its value, JSON-ready (what a method's saved state records)."""
    return dataclasses.asdict(options)


@dataclass(frozen=True)
class NoOptions:
    """The options of a method that has none."""
