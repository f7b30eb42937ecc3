"""The continual-learning metrics of a run on one line."""

from __future__ import annotations

from rich.text import Text
from textual.widgets import Static

from ..data import fmt_score, fmt_signed
from .style import Palette

LABELS = (("mft", "MFT"), ("last", "Last"), ("avg", "Avg"), ("bwt", "BWT"), ("forgetting", "Forgetting"),
          ("fwt", "FWT"))
SIGNED = {"bwt", "fwt"}


def metrics_text(metrics: dict, palette: Palette) -> Text:
    text = Text()
    for key, label in LABELS:
        value = metrics.get(key)
        if key == "fwt" and value is None:
            continue
        if text:
            text.append("  ")
        text.append(f"{label} ", style=palette.muted.hex)
        text.append(fmt_signed(value, 2) if key in SIGNED else fmt_score(value, 2), style="bold")
    return text


class MetricsBar(Static):
    DEFAULT_CSS = "MetricsBar { height: 1; }"

    def show(self, metrics: dict) -> None:
        self.update(metrics_text(metrics, Palette.of(self.app)))
