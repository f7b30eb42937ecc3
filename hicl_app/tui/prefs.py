"""The TUI's remembered choices (the theme), kept in the workspace as tui.json."""

from __future__ import annotations

import json

from ..core.fsio import atomic_write_json
from ..core.settings import Settings

FILE = "tui.json"


def load_prefs(settings: Settings) -> dict:
    """The saved preferences; {} when there are none or the file is unreadable."""
    try:
        data = json.loads(settings.path(FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def save_prefs(settings: Settings, **changes) -> dict:
    prefs = {**load_prefs(settings), **changes}
    atomic_write_json(settings.path(FILE), prefs)
    return prefs
