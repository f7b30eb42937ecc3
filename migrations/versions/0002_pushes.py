"""pushes: publications of a run's stage to a Hugging Face Hub repo

Revision ID: 0002_pushes
Revises: 0001_initial
Create Date: 2026-11-22 21:00:00.000000
"""
from alembic import op
import sqlalchemy as sa
import sqlmodel


revision = '0002_pushes'
down_revision = '0001_initial'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('pushes',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('run_id', sa.Integer(), nullable=False),
    sa.Column('stage_index', sa.Integer(), nullable=False),
    sa.Column('repo_id', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column('endpoint', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column('revision', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column('commit_oid', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column('commit_url', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column('tag', sqlmodel.sql.sqltypes.AutoString(), nullable=True),
    sa.Column('private', sa.Boolean(), nullable=False),
    sa.Column('files', sa.JSON(), nullable=False),
    sa.Column('created_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
    sa.ForeignKeyConstraint(['run_id'], ['runs.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('pushes', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_pushes_run_id'), ['run_id'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('pushes', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_pushes_run_id'))

    op.drop_table('pushes')
