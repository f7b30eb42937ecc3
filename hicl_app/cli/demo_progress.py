"""`hicl demo`'s progress on a terminal: a bar with an ETA for the base build's phases, then one
bar per run (and one for all of them), redrawn in place on stderr."""

from __future__ import annotations

import sys
import time

import click

from .output import fmt_num

WIDTH = 24


def bar(fraction: float, width: int = WIDTH) -> str:
    filled = max(0, min(width, int(width * fraction)))
    return "[" + "#" * filled + "." * (width - filled) + "]"


def duration(seconds: float | None) -> str:
    """'1m05s', '42s', or '?' while unknown."""
    if seconds is None:
        return "?"
    seconds = max(0, round(seconds))
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


class BaseBar:
    """The base build's events as one updating line: the vision tower's pretraining, then the model's."""

    PHASES = {"vision": "base 1/2: vision tower", "language": "base 2/2: language model"}

    def __init__(self) -> None:
        self.phase: str | None = None
        self.started = time.monotonic()
        self.open = False  # a bar is on the current line

    def close(self) -> None:
        """End the bar's line, so what is printed next starts on its own."""
        if self.open:
            click.echo("", err=True)
            self.open = False

    def __call__(self, event: dict) -> None:
        if event.get("kind") == "base_phase":
            self.close()
            self.phase, self.started = event["phase"], time.monotonic()
            self._draw(0, event.get("total") or 0, None, None)
        elif event.get("kind") == "vision_step":
            step, total = event["step"], event["total"]
            if step == 0:  # the scenes are rendered: the clock of the steps starts now
                self.started = time.monotonic()
            elapsed = time.monotonic() - self.started
            self._draw(step, total, event.get("loss"), elapsed * (total - step) / step if step else None)
        elif event.get("type") == "progress" and self.phase == "language":
            self._draw(event.get("step") or 0, event.get("total") or 0, event.get("loss"), event.get("eta_s"))
        else:  # vision_accuracy (logged next), base_done
            self.close()

    def _draw(self, step: int, total: int, loss, eta) -> None:
        label = self.PHASES.get(self.phase or "", self.phase or "base")
        line = (f"\r{label} {bar(step / total if total else 0)} {step}/{total} loss {fmt_num(loss, 3)} "
                f"eta {duration(eta)}")
        click.echo(line.ljust(90), err=True, nl=False)
        self.open = True


class RunsBoard:
    """`demo_progress.runs_status` snapshots as a block of lines, one per run and one for all."""

    def __init__(self) -> None:
        self.lines = 0
        self.started = time.monotonic()

    def __call__(self, status: dict) -> None:
        rows = []
        width = max([len(r["label"]) for r in status["runs"]] + [8])
        width = min(width, 40)
        for r in status["runs"]:
            if r["status"] == "completed":
                where = f"done, {r['stages']} stage{'s' if r['stages'] != 1 else ''}"
            elif r["status"] in ("failed", "cancelled"):
                where = r["status"]
            elif r["stage"] is None and r["done"] == 0:
                where = "queued"
            else:
                current = (r["stage"] + 1) if r["stage"] is not None else r["done"] + 1
                where = f"stage {current}/{r['stages']} eta {duration(r['eta_s'])}"
            rows.append(f"  {r['label'][:width].ljust(width)} {bar(r['fraction'])} {100 * r['fraction']:3.0f}%  {where}")
        rows.append(f"  {'all runs'.ljust(width)} {bar(status['fraction'])} {100 * status['fraction']:3.0f}%  "
                    f"eta {duration(status['eta_s'])}, {duration(time.monotonic() - self.started)} so far")
        out = sys.stderr
        if self.lines:
            out.write(f"\x1b[{self.lines}F")  # back to the first line of the previous block
        out.write("".join(f"\x1b[2K{line[:120]}\n" for line in rows))
        out.flush()
        self.lines = len(rows)
