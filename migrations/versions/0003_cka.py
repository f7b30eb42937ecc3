"""cka_results: CKA similarity between a run's task models, per decoder layer and kernel

Revision ID: 0003_cka
Revises: 0002_pushes
Create Date: 2026-11-22 22:30:00.000000
"""
from alembic import op
import sqlalchemy as sa
import sqlmodel


revision = '0003_cka'
down_revision = '0002_pushes'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('cka_results',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('run_id', sa.Integer(), nullable=False),
    sa.Column('kernel', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column('layer', sa.Integer(), nullable=False),
    sa.Column('labels', sa.JSON(), nullable=False),
    sa.Column('matrix', sa.JSON(), nullable=False),
    sa.Column('mean_cross', sa.Float(), nullable=True),
    sa.Column('n_probe', sa.Integer(), nullable=False),
    sa.Column('details', sa.JSON(), nullable=False),
    sa.Column('created_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
    sa.ForeignKeyConstraint(['run_id'], ['runs.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('run_id', 'kernel', 'layer', name='uq_cka_run_kernel_layer')
    )
    with op.batch_alter_table('cka_results', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_cka_results_run_id'), ['run_id'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('cka_results', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_cka_results_run_id'))

    op.drop_table('cka_results')
