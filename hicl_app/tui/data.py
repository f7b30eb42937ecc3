"""What the screens show, read from the catalog in plain data (no Textual here).

Screens call these from worker threads and hand the result to the UI thread, so a slow disk
or a busy database never freezes the interface.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..catalog import dashboard as board
from ..catalog.db import Catalog
from ..catalog.report import run_detail
from ..catalog.runs import get_run
from ..catalog.tasks import list_tasks
from ..core import clmetrics

PAGE_SIZE = 100


@dataclass
class DashboardData:
    tasks: list[dict]
    runs: list[dict]
    runs_total: int
    page: int
    page_size: int
    jobs: list[dict]

    @property
    def pages(self) -> int:
        return max(1, -(-self.runs_total // self.page_size))


def load_dashboard(catalog: Catalog, page: int = 0, page_size: int = PAGE_SIZE) -> DashboardData:
    """One page of runs (clamped to the last page), every task, and the jobs worth watching."""
    with catalog.session() as s:
        total = board.count_runs(s)
        page = max(0, min(page, max(0, -(-total // page_size) - 1)))
        tasks = [{"name": t.name, "n_train": t.n_train, "n_test": t.n_test, "scorer": t.scorer,
                  "format": t.source_format} for t in list_tasks(s)]
        runs = board.runs_page(s, page * page_size, page_size)
        jobs = board.watched_jobs(s)
    return DashboardData(tasks=tasks, runs=runs, runs_total=total, page=page, page_size=page_size, jobs=jobs)


@dataclass
class RunData:
    """A run whole: report.run_detail's dict plus raw job progress, loss curves and CKA."""

    detail: dict
    jobs: list[dict]
    loss: dict[int, list[tuple[int, float]]]
    cka: dict[str, list[list[float]]] = field(default_factory=dict)
    #: the CKA a method measured itself while training (hide with --expand auto), see stored_cka
    stored_cka: dict | None = None

    @property
    def id(self) -> int:
        return self.detail["id"]

    def forgetting(self) -> list[float | None]:
        return column_forgetting(self.detail["matrix"])


def load_run(catalog: Catalog, ref: int | str) -> RunData:
    with catalog.session() as s:
        run = get_run(s, ref)
        detail = run_detail(s, run)
        jobs = board.jobs_of_run(s, run.id)
        loss = board.curve_points(s, run.id, "loss")
    return RunData(detail=detail, jobs=jobs, loss=loss, cka=load_cka(catalog, detail["id"]),
                   stored_cka=stored_cka(detail))


def stored_cka(detail: dict) -> dict | None:
    """The CKA summary a hide run stored with its latest stage's state (it measures the mean
    cross-task CKA per decoder layer to choose the layers it expands): {"stage", "kernel",
    "n_probe", "mean_cross": {layer: value}, "expanded", "threshold"}; None when the run stored
    none. Read from the stage's own manifest, so it needs no `hicl analyze cka`."""
    import json
    from pathlib import Path

    if detail.get("method") != "hide":
        return None
    from ..engine.methods.hide import MANIFEST_FILE, STATE_DIR  # constants only: no torch

    for a in sorted(detail["adapters"], key=lambda a: a["stage_index"] or 0, reverse=True):
        path = Path(a["path"]).parent / STATE_DIR / MANIFEST_FILE
        try:
            manifest = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        cka = manifest.get("cka")
        if isinstance(cka, dict) and cka.get("mean_cross"):
            return {"stage": a["stage_index"], "kernel": cka.get("kernel"), "n_probe": cka.get("n_probe"),
                    "mean_cross": {int(k): v for k, v in cka["mean_cross"].items()},
                    "expanded": list(manifest.get("expanded_layers") or []),
                    "threshold": (manifest.get("options") or {}).get("cka_threshold")}
    return None


def load_cka(catalog: Catalog, run_id: int) -> dict[str, list[list[float]]]:
    """{"layer L": CKA matrix} stored for a run by `hicl analyze cka` (empty when none; the run
    screen shows its CKA panel only when this returns something)."""
    from ..catalog.cka import cka_panels

    with catalog.session() as s:
        return cka_panels(s, run_id)


def column_forgetting(matrix: list[list[float | None]]) -> list[float | None]:
    """Per task j: best score before the latest complete row L minus the score at L (None
    where the task was not trained before L): the drop you see down each matrix column."""
    last = clmetrics.last_complete_row(matrix) if matrix else None
    width = max((len(r) for r in matrix), default=0)
    out: list[float | None] = [None] * width
    if last is None:
        return out
    for j in range(min(width, last)):
        final = matrix[last][j] if j < len(matrix[last]) else None
        earlier = [matrix[t][j] for t in range(j, last) if j < len(matrix[t]) and matrix[t][j] is not None]
        if final is not None and earlier:
            out[j] = max(earlier) - final
    return out


def fmt_score(value: float | None, digits: int = 1) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


def fmt_signed(value: float | None, digits: int = 1) -> str:
    """`+1.5`, `-2.0`; a value that rounds to zero is `0.0`, never `-0.0`."""
    if value is None:
        return "—"
    if round(value, digits) == 0:
        return f"{0:.{digits}f}"
    return f"{value:+.{digits}f}"


def column_scales(rows: list[list[float | None]]) -> list[tuple[float, float]]:
    """Per column, the colour scale from half its best score (red, and anything below) to its
    best (green): a task is judged against what it reached, so a 48% task beside a caption task
    scoring 180 is not drawn as a failure, and a drop to 3/4 of the best shows as amber."""
    width = max((len(r) for r in rows), default=0)
    scales = []
    for j in range(width):
        best = max((r[j] for r in rows if j < len(r) and r[j] is not None), default=0.0)
        scales.append((best / 2, best) if best > 0 else (best - 1.0, best))
    return scales


def fmt_eta(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    seconds = int(round(seconds))
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    if seconds >= 60:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds}s"


def fmt_size(n: int | None) -> str:
    if n is None:
        return "—"
    size = float(n)
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1024 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return str(n)


def progress_of(job: dict) -> tuple[float | None, str]:
    """(fraction done or None, "step/total") of a job's progress dict."""
    p = job.get("progress") or {}
    step, total = p.get("step"), p.get("total")
    if job.get("status") == "done":
        return 1.0, f"{step}/{total}" if total else "done"
    if not total:
        return None, ""
    return min(1.0, max(0.0, (step or 0) / total)), f"{step or 0}/{total}"


def stage_label(run: dict) -> str:
    """"k/N" stages done of a run summary."""
    return f"{run['stages_done']}/{run['stages']}"
