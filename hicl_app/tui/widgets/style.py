"""Colours taken from the active theme for Rich text in tables (statuses, bars, heat cells)."""

from __future__ import annotations

from dataclasses import dataclass

from rich.text import Text
from textual.app import App
from textual.color import Color


@dataclass(frozen=True)
class Palette:
    primary: Color
    accent: Color
    success: Color
    warning: Color
    error: Color
    foreground: Color
    background: Color
    surface: Color

    @classmethod
    def of(cls, app: App) -> "Palette":
        system = app.current_theme.to_color_system()
        return cls(primary=system.primary, accent=system.accent or system.primary, success=system.success,
                   warning=system.warning, error=system.error, foreground=system.foreground,
                   background=system.background, surface=system.surface or system.background)

    @property
    def muted(self) -> Color:
        return self.foreground.blend(self.background, 0.45)

    def status(self, status: str) -> Text:
        colour = {"running": self.primary, "completed": self.success, "done": self.success, "failed": self.error,
                  "cancelled": self.warning, "queued": self.muted}.get(status, self.foreground)
        return Text(status, style=colour.hex)

    def heat(self, value: float | None, lo: float, hi: float) -> str:
        """A Rich style for a cell worth `value` on a lo..hi scale: error, warning, success."""
        if value is None:
            return self.muted.hex
        f = 0.5 if hi - lo < 1e-9 else min(1.0, max(0.0, (value - lo) / (hi - lo)))
        colour = self.error.blend(self.warning, f * 2) if f < 0.5 else self.warning.blend(self.success, f * 2 - 1)
        back = colour.blend(self.background, 0.35)
        return f"bold {back.get_contrast_text(1.0).hex} on {back.hex}"

    def bar(self, fraction: float | None, width: int, status: str = "running") -> Text:
        """A progress bar as text: filled and empty parts in the theme's colours."""
        if fraction is None:
            return Text("╌" * width, style=self.muted.hex)
        filled = round(fraction * width)
        colour = self.success if status == "done" else self.error if status == "failed" else self.primary
        bar = Text("━" * filled, style=colour.hex)
        bar.append("━" * (width - filled), style=self.foreground.blend(self.background, 0.8).hex)
        return bar
