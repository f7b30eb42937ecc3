"""The app's themes are data: every JSON file in the shipped themes folder is a Textual Theme."""

from __future__ import annotations

import json
from importlib import resources

from textual.theme import Theme

DEFAULT_THEME = "hicl-dark"
STYLESHEET = "hicl.tcss"


def _folder():
    return resources.files("hicl_app._themes")


def stylesheet_path() -> str:
    return str(_folder() / STYLESHEET)


def load_themes() -> list[Theme]:
    """Themes from the shipped *.json files, sorted by name; the keys are Theme's fields."""
    themes = []
    for entry in sorted(_folder().iterdir(), key=lambda p: p.name):
        if entry.name.endswith(".json"):
            themes.append(Theme(**json.loads(entry.read_text(encoding="utf-8"))))
    return themes
