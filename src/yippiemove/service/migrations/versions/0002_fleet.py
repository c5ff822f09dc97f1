"""Issue 15, the fleet: fencing tokens and hosts of jobs, job checkpoints, worker hosts.

``jobs.lease_token`` gets ``server_default 0`` so that existing rows have a token; in
batch mode SQLite adds both columns with a plain ALTER TABLE (no copy of the table).

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch_op:
        batch_op.add_column(
            sa.Column("lease_token", sa.Integer(), server_default="0", nullable=False)
        )
        batch_op.add_column(sa.Column("host", sa.String(length=200), nullable=True))
        batch_op.create_index("ix_jobs_host", ["host"], unique=False)

    op.create_table(
        "job_checkpoints",
        sa.Column("job_id", sa.String(length=32), nullable=False),
        sa.Column("token", sa.Integer(), nullable=False),
        sa.Column("host", sa.String(length=200), nullable=False),
        sa.Column("taken", sa.Float(), nullable=False),
        sa.Column("size", sa.Integer(), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("data", sa.LargeBinary(), nullable=False),
        sa.ForeignKeyConstraint(["job_id"], ["jobs.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("job_id"),
    )

    op.create_table(
        "worker_hosts",
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("address", sa.String(length=100), nullable=False),
        sa.Column("capacity", sa.Integer(), nullable=False),
        sa.Column("version", sa.String(length=50), nullable=False),
        sa.Column("role", sa.String(length=16), nullable=False),
        sa.Column("pid", sa.Integer(), nullable=False),
        sa.Column("started", sa.Float(), nullable=False),
        sa.Column("heartbeat", sa.Float(), nullable=False),
        sa.Column("draining", sa.Boolean(), server_default="0", nullable=False),
        sa.PrimaryKeyConstraint("name"),
    )
    op.create_index("ix_worker_hosts_heartbeat", "worker_hosts", ["heartbeat"], unique=False)


def downgrade() -> None:
    op.drop_table("worker_hosts")
    op.drop_table("job_checkpoints")
    with op.batch_alter_table("jobs") as batch_op:
        batch_op.drop_index("ix_jobs_host")
        batch_op.drop_column("host")
        batch_op.drop_column("lease_token")
