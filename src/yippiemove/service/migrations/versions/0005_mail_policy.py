"""Issue 17, e-mail policy: a job's batch (one summary mail when its last job ends, and
whether it was sent) and each customer's time zone (times in mails).

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("batch_id", sa.String(length=32), nullable=True))
        batch.add_column(
            sa.Column("batch_mailed", sa.Boolean(), nullable=False, server_default=sa.false())
        )
        batch.create_index("ix_jobs_batch_id", ["batch_id"], unique=False)
    with op.batch_alter_table("users") as batch:
        batch.add_column(sa.Column("timezone", sa.String(length=64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("users") as batch:
        batch.drop_column("timezone")
    with op.batch_alter_table("jobs") as batch:
        batch.drop_index("ix_jobs_batch_id")
        batch.drop_column("batch_mailed")
        batch.drop_column("batch_id")
