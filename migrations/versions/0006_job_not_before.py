"""job not_before: a job retried with back-off waits in the queue until then (live hub pushes)

Revision ID: 0006_job_not_before
Revises: 0005_relative_base_model
Create Date: 2026-12-03 06:00:00.000000
"""
from alembic import op
import sqlalchemy as sa
import sqlmodel


revision = '0006_job_not_before'
down_revision = '0005_relative_base_model'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.add_column(sa.Column('not_before', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.drop_column('not_before')
