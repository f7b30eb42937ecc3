"""The engine's events as the lines a job's log shows (`hicl logs`): one readable line each,
never a raw event dict, and training progress at most about twenty times a stage."""

from __future__ import annotations

#: progress lines per stage (plus the first and the last step)
PROGRESS_LINES = 20


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    s = int(round(seconds))
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


def progress_line(p: dict) -> str:
    """`step 62/125  loss 0.583  lr 2.0e-04  41.5 samples/s  ETA 3m15s`"""
    parts = [f"step {p.get('step')}/{p.get('total')}"]
    if p.get("loss") is not None:
        parts.append(f"loss {p['loss']:.4f}")
    if p.get("lr") is not None:
        parts.append(f"lr {p['lr']:.2e}")
    if p.get("samples_per_s") is not None:
        parts.append(f"{p['samples_per_s']:.1f} samples/s")
    parts.append(f"ETA {duration(p.get('eta_s'))}")
    return "  ".join(parts)


class LogLines:
    """Which events become log lines, and how they read."""

    def __init__(self) -> None:
        self.logged_bucket = -1

    def line(self, event: dict) -> str | None:
        kind = event.get("type")
        if kind == "progress":
            step, total = event.get("step") or 0, event.get("total") or 0
            bucket = step * PROGRESS_LINES // total if total else 0
            if bucket == self.logged_bucket and step != total:
                return None
            self.logged_bucket = bucket
            return progress_line(event)
        if kind == "eval":
            done, total = event.get("done"), event.get("total")
            if done == 0:
                return f"evaluating {event.get('task')} ({total} samples)"
            return f"evaluated {event.get('task')}: {done}/{total}" if done == total else None
        if kind == "checkpoint":
            return f"checkpoint at step {event.get('step')}: {event.get('path')}"
        if kind == "log":
            return str(event.get("message", ""))
        return None
