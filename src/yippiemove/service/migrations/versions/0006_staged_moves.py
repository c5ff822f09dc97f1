"""Issue 17, staged moves until cut-over: a job's schedule (first pass, top-ups every
``interval`` seconds, a final pass at ``final_at`` or on the customer's word) and the
history of its passes.

Revision ID: 0006
Revises: 0005
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "staged_schedules",
        sa.Column("job_id", sa.String(length=32), nullable=False),
        sa.Column("interval", sa.Float(), nullable=False),
        sa.Column("start_at", sa.Float(), nullable=False),
        sa.Column("final_at", sa.Float(), nullable=True),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("next_run_at", sa.Float(), nullable=True),
        sa.Column("final_requested", sa.Boolean(), nullable=False, server_default=sa.false()),
        sa.Column("current_kind", sa.String(length=16), nullable=False),
        sa.ForeignKeyConstraint(["job_id"], ["jobs.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("job_id"),
    )
    op.create_index("ix_staged_schedules_next_run_at", "staged_schedules", ["next_run_at"])
    op.create_table(
        "staged_passes",
        sa.Column("job_id", sa.String(length=32), nullable=False),
        sa.Column("number", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("started", sa.Float(), nullable=True),
        sa.Column("finished", sa.Float(), nullable=False),
        sa.Column("outcome", sa.String(length=16), nullable=False),
        sa.Column("copied", sa.Integer(), nullable=False),
        sa.Column("already_present", sa.Integer(), nullable=False),
        sa.Column("failed", sa.Integer(), nullable=False),
        sa.Column("bytes", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(["job_id"], ["jobs.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("job_id", "number"),
    )


def downgrade() -> None:
    op.drop_table("staged_passes")
    op.drop_index("ix_staged_schedules_next_run_at", table_name="staged_schedules")
    op.drop_table("staged_schedules")
