"""Issue 16, domain-wide moves: the customers' admin credentials (a Google service
account key, a Microsoft 365 application), their secret part encrypted.

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "domain_credentials",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("provider", sa.String(length=32), nullable=False),
        sa.Column("label", sa.String(length=200), nullable=False),
        sa.Column("principal", sa.String(length=320), nullable=False),
        sa.Column("tenant", sa.String(length=200), nullable=True),
        sa.Column("domain", sa.String(length=253), nullable=False),
        sa.Column("secret", sa.LargeBinary(), nullable=False),
        sa.Column("created", sa.Float(), nullable=False),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(
        "ix_domain_credentials_user_id", "domain_credentials", ["user_id"], unique=False
    )


def downgrade() -> None:
    op.drop_index("ix_domain_credentials_user_id", table_name="domain_credentials")
    op.drop_table("domain_credentials")
