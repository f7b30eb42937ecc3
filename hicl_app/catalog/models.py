"""SQLModel tables. Any change here needs an Alembic revision in migrations/versions/
(tests/services/test_migrations.py fails on drift)."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any, Optional

from sqlalchemy import JSON, Column, Index, Text, UniqueConstraint
from sqlmodel import Field, SQLModel

from .paths import ModelRef, WorkspacePath


def utcnow() -> datetime:
    """Aware UTC; SQLModel stores it as UTC and gives it back aware, on SQLite too."""
    return datetime.now(timezone.utc)


def _json(default=None):
    factory = dict if default is None else default
    return Field(default_factory=factory, sa_column=Column(JSON, nullable=False))


class Task(SQLModel, table=True):
    __tablename__ = "tasks"

    id: Optional[int] = Field(default=None, primary_key=True)
    name: str = Field(index=True, unique=True)
    source_path: str = Field(sa_type=WorkspacePath)  # path columns: relative when inside the workspace
    source_sha256: str
    source_format: str  # llava | vqa
    images_dir: str = Field(sa_type=WorkspacePath)
    test_source_path: Optional[str] = Field(default=None, sa_type=WorkspacePath)
    test_source_sha256: Optional[str] = None
    test_fraction: Optional[float] = None
    split_seed: int = 0
    n_train: int
    n_test: int
    scorer: str
    data_dir: str = Field(sa_type=WorkspacePath)  # workspace folder holding the normalised train.jsonl / test.jsonl
    created_at: datetime = Field(default_factory=utcnow)


class Run(SQLModel, table=True):
    __tablename__ = "runs"

    id: Optional[int] = Field(default=None, primary_key=True)
    name: str = Field(index=True)
    method: str
    base_model: str = Field(sa_type=ModelRef)  # a hub id, or a folder: "./..." when inside the workspace
    task_order: list = _json(list)
    config: dict = _json()
    env: dict = _json()
    status: str = Field(default="queued", index=True)
    error: Optional[str] = Field(default=None, sa_column=Column(Text))
    created_at: datetime = Field(default_factory=utcnow)
    started_at: Optional[datetime] = None
    finished_at: Optional[datetime] = None


class Stage(SQLModel, table=True):
    __tablename__ = "stages"
    __table_args__ = (UniqueConstraint("run_id", "index", name="uq_stages_run_index"),)

    id: Optional[int] = Field(default=None, primary_key=True)
    run_id: int = Field(foreign_key="runs.id", index=True, ondelete="CASCADE")
    index: int
    train_tasks: list = _json(list)
    status: str = Field(default="queued")
    steps: Optional[int] = None
    train_samples: Optional[int] = None
    error: Optional[str] = Field(default=None, sa_column=Column(Text))
    started_at: Optional[datetime] = None
    finished_at: Optional[datetime] = None


class Adapter(SQLModel, table=True):
    __tablename__ = "adapters"

    id: Optional[int] = Field(default=None, primary_key=True)
    run_id: int = Field(foreign_key="runs.id", index=True, ondelete="CASCADE")
    stage_id: int = Field(foreign_key="stages.id", index=True, ondelete="CASCADE")
    kind: str = "peft"
    path: str = Field(sa_type=WorkspacePath)
    sha256: str  # of adapter_model.safetensors
    size_bytes: int
    files: dict = _json()  # relative path -> sha256, every file of the stage's state
    created_at: datetime = Field(default_factory=utcnow)


class Score(SQLModel, table=True):
    """One cell of the accuracy matrix: R[stage_index][task]. stage_index -1 = base model."""

    __tablename__ = "scores"
    __table_args__ = (UniqueConstraint("run_id", "stage_index", "task_name", name="uq_scores_cell"),)

    id: Optional[int] = Field(default=None, primary_key=True)
    run_id: int = Field(foreign_key="runs.id", index=True, ondelete="CASCADE")
    stage_index: int
    task_name: str
    score: float
    n: int
    scorer: str
    predictions_path: Optional[str] = Field(default=None, sa_type=WorkspacePath)
    details: dict = _json()
    created_at: datetime = Field(default_factory=utcnow)


class CurvePoint(SQLModel, table=True):
    """A training-curve point (loss, learning rate, ...) of one stage."""

    __tablename__ = "curve_points"
    __table_args__ = (Index("ix_curve_points_run_stage", "run_id", "stage_index", "name"),)

    id: Optional[int] = Field(default=None, primary_key=True)
    run_id: int = Field(foreign_key="runs.id", ondelete="CASCADE")
    stage_index: int
    name: str
    step: int
    value: float


class Job(SQLModel, table=True):
    __tablename__ = "jobs"
    __table_args__ = (Index("ix_jobs_status_id", "status", "id"),)

    id: Optional[int] = Field(default=None, primary_key=True)
    kind: str = "stage"
    run_id: Optional[int] = Field(default=None, foreign_key="runs.id", index=True, ondelete="CASCADE")
    stage_id: Optional[int] = Field(default=None, foreign_key="stages.id", ondelete="CASCADE")
    depends_on: Optional[int] = Field(default=None, foreign_key="jobs.id", ondelete="SET NULL")
    status: str = "queued"  # queued | running | done | failed | cancelled
    attempts: int = 0
    max_attempts: int = 3
    lease_owner: Optional[str] = None
    lease_expires_at: Optional[datetime] = None
    not_before: Optional[datetime] = None  # a job retried with back-off is not claimed before this
    heartbeat_at: Optional[datetime] = None
    cancel_requested: bool = False
    payload: dict = _json()
    progress: dict = _json()
    error: Optional[str] = Field(default=None, sa_column=Column(Text))
    traceback: Optional[str] = Field(default=None, sa_column=Column(Text))
    log_path: Optional[str] = Field(default=None, sa_type=WorkspacePath)
    created_at: datetime = Field(default_factory=utcnow)
    started_at: Optional[datetime] = None
    finished_at: Optional[datetime] = None


class Event(SQLModel, table=True):
    __tablename__ = "events"

    id: Optional[int] = Field(default=None, primary_key=True)
    ts: datetime = Field(default_factory=utcnow, index=True)
    run_id: Optional[int] = Field(default=None, foreign_key="runs.id", index=True, ondelete="CASCADE")
    job_id: Optional[int] = Field(default=None, foreign_key="jobs.id", ondelete="SET NULL")
    level: str = "info"
    message: str = Field(sa_column=Column(Text, nullable=False))
    data: dict[str, Any] = _json()


class Push(SQLModel, table=True):
    """One publication of a run's stage to a Hugging Face Hub repo: one commit, one tag.

    Holds no credential: the token is read from the environment or the hub login at push time.
    """

    __tablename__ = "pushes"

    id: Optional[int] = Field(default=None, primary_key=True)
    run_id: int = Field(foreign_key="runs.id", index=True, ondelete="CASCADE")
    stage_index: int
    repo_id: str
    endpoint: str
    revision: str
    commit_oid: str
    commit_url: str
    tag: Optional[str] = None
    private: bool = False
    files: dict = _json()  # path in the repo -> {"sha256": ..., "size": ...}
    created_at: datetime = Field(default_factory=utcnow)


class CkaResult(SQLModel, table=True):
    """CKA similarity between the task models of a run at one decoder layer, on shared probe inputs.

    `labels` names the rows/columns of `matrix` (task names, in task order); `mean_cross` is the
    mean of the off-diagonal cells (the per-layer figure used to choose expanded layers).
    Undefined cells (a side with constant features) are stored as null.
    """

    __tablename__ = "cka_results"
    __table_args__ = (UniqueConstraint("run_id", "kernel", "layer", name="uq_cka_run_kernel_layer"),)

    id: Optional[int] = Field(default=None, primary_key=True)
    run_id: int = Field(foreign_key="runs.id", index=True, ondelete="CASCADE")
    kernel: str  # linear | rbf
    layer: int  # decoder layer index, 0-based
    labels: list = _json(list)
    matrix: list = _json(list)
    mean_cross: Optional[float] = None  # None when undefined (a model with constant features)
    n_probe: int
    details: dict = _json()  # probe tasks, per-task probe counts, feature kind
    created_at: datetime = Field(default_factory=utcnow)
