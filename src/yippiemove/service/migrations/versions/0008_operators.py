"""Issue 17, operators: a customer's role and suspension, and the audit log of operator
actions (service/operator.py).

Revision ID: 0008
Revises: 0009
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Plain ADD COLUMNs (SQLite can): a batch copy of ``users`` would drop the table,
    # and its ON DELETE CASCADE would take every job with it.
    op.add_column(
        "users", sa.Column("role", sa.String(length=16), nullable=False, server_default="customer")
    )
    op.add_column(
        "users", sa.Column("suspended", sa.Boolean(), nullable=False, server_default=sa.false())
    )
    op.add_column("users", sa.Column("suspended_reason", sa.Text(), nullable=True))
    op.add_column("users", sa.Column("suspended_at", sa.Float(), nullable=True))
    op.create_table(
        "audit_log",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("when", sa.Float(), nullable=False),
        sa.Column("operator_id", sa.Integer(), nullable=True),
        sa.Column("operator_email", sa.String(length=320), nullable=False),
        sa.Column("action", sa.String(length=32), nullable=False),
        sa.Column("target_kind", sa.String(length=16), nullable=False),
        sa.Column("target_id", sa.String(length=64), nullable=False),
        sa.Column("detail", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_audit_log_when", "audit_log", ["when"], unique=False)
    op.create_index("ix_audit_log_operator_id", "audit_log", ["operator_id"], unique=False)
    op.create_index("ix_audit_log_target_id", "audit_log", ["target_id"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_audit_log_target_id", table_name="audit_log")
    op.drop_index("ix_audit_log_operator_id", table_name="audit_log")
    op.drop_index("ix_audit_log_when", table_name="audit_log")
    op.drop_table("audit_log")
    with op.batch_alter_table("users") as batch:
        batch.drop_column("suspended_at")
        batch.drop_column("suspended_reason")
        batch.drop_column("suspended")
        batch.drop_column("role")
