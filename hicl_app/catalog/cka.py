"""CKA results of a run in the catalog: one row per (kernel, layer), replaced when recomputed."""

from __future__ import annotations

import math
from typing import Any

from sqlmodel import Session, select

from .models import CkaResult, utcnow


def _num(value: float | None) -> float | None:
    """nan (undefined CKA) is stored as null: neither JSON nor SQLite keep nan."""
    return None if value is None or math.isnan(value) else float(value)


def store_cka(session: Session, run_id: int, kernel: str, labels: list[str], layers: dict[int, dict[str, Any]],
              n_probe: int, details: dict[str, Any] | None = None) -> list[CkaResult]:
    """Upsert the rows of `layers` ({layer: {"matrix", "mean_cross"}}) for `run_id` and `kernel`."""
    rows = []
    for layer, value in sorted(layers.items()):
        row = session.exec(select(CkaResult).where(CkaResult.run_id == run_id, CkaResult.kernel == kernel,
                                                   CkaResult.layer == int(layer))).first()
        if row is None:
            row = CkaResult(run_id=run_id, kernel=kernel, layer=int(layer), n_probe=n_probe)
        row.labels, row.matrix = list(labels), [[_num(v) for v in r] for r in value["matrix"]]
        row.mean_cross, row.n_probe = _num(value["mean_cross"]), n_probe
        row.details, row.created_at = dict(details or {}), utcnow()
        session.add(row)
        rows.append(row)
    return rows


def cka_of_run(session: Session, run_id: int, kernel: str | None = None) -> list[CkaResult]:
    """The stored rows of a run, by kernel then layer."""
    q = select(CkaResult).where(CkaResult.run_id == run_id)
    if kernel is not None:
        q = q.where(CkaResult.kernel == kernel)
    return list(session.exec(q.order_by(CkaResult.kernel, CkaResult.layer)))


def cka_panels(session: Session, run_id: int) -> dict[str, list[list[float]]]:
    """{"layer L" (or "layer L (rbf)" for non-linear kernels): matrix} for display."""
    return {f"layer {r.layer}" + ("" if r.kernel == "linear" else f" ({r.kernel})"): r.matrix
            for r in cka_of_run(session, run_id)}
