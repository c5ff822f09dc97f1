"""Issue 17, journey-batches: batches as first-class objects (a batch, its lines, their
pre-flight verdicts; credentials of lines not yet started, encrypted).

Revision ID: 0007
Revises: 0006
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "batches",
        sa.Column("id", sa.String(length=32), primary_key=True),
        sa.Column(
            "user_id", sa.Integer(), sa.ForeignKey("users.id", ondelete="CASCADE"), nullable=False
        ),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("created", sa.Float(), nullable=False),
        sa.Column("started", sa.Float(), nullable=True),
        sa.Column("notify_end_users", sa.Boolean(), nullable=False),
        sa.Column("autostart", sa.Boolean(), nullable=False),
        sa.Column("lines_total", sa.Integer(), nullable=False),
        sa.Column("lines_checked", sa.Integer(), nullable=False),
        sa.Column("lines_bad", sa.Integer(), nullable=False),
        sa.Column("folders", sa.JSON(), nullable=True),
    )
    op.create_index("ix_batches_user_id", "batches", ["user_id"])
    op.create_table(
        "batch_lines",
        sa.Column(
            "batch_id",
            sa.String(length=32),
            sa.ForeignKey("batches.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("line", sa.Integer(), primary_key=True),
        sa.Column("source", sa.JSON(), nullable=False),
        sa.Column("dest", sa.JSON(), nullable=False),
        sa.Column("check", sa.String(length=16), nullable=False),
        sa.Column("side", sa.String(length=8), nullable=True),
        sa.Column("kind", sa.String(length=32), nullable=True),
        sa.Column("message", sa.Text(), nullable=True),
        sa.Column("credentials", sa.LargeBinary(), nullable=True),
        sa.Column("job_id", sa.String(length=32), nullable=True),
        sa.Column("end_user_mailed", sa.Boolean(), nullable=False),
    )
    op.create_index("ix_batch_lines_job_id", "batch_lines", ["job_id"])


def downgrade() -> None:
    op.drop_index("ix_batch_lines_job_id", table_name="batch_lines")
    op.drop_table("batch_lines")
    op.drop_index("ix_batches_user_id", table_name="batches")
    op.drop_table("batches")
