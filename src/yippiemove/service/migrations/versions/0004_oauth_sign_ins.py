"""Issue 16, sign in with Google / Microsoft: the sign-ins of the web order and the REST
API, from the provider's ``state`` to the order that uses the grant (secret encrypted).

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "oauth_sign_ins",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("state_hash", sa.String(length=64), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("provider", sa.String(length=32), nullable=False),
        sa.Column("purpose", sa.String(length=16), nullable=False),
        sa.Column("side", sa.String(length=8), nullable=False),
        sa.Column("job_id", sa.String(length=32), nullable=True),
        sa.Column("binding", sa.String(length=64), nullable=True),
        sa.Column("redirect_uri", sa.Text(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("address", sa.String(length=320), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("secret", sa.LargeBinary(), nullable=True),
        sa.Column("created", sa.Float(), nullable=False),
        sa.Column("expires", sa.Float(), nullable=False),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(
        "ix_oauth_sign_ins_state_hash", "oauth_sign_ins", ["state_hash"], unique=True
    )
    op.create_index("ix_oauth_sign_ins_user_id", "oauth_sign_ins", ["user_id"], unique=False)
    op.create_index("ix_oauth_sign_ins_expires", "oauth_sign_ins", ["expires"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_oauth_sign_ins_expires", table_name="oauth_sign_ins")
    op.drop_index("ix_oauth_sign_ins_user_id", table_name="oauth_sign_ins")
    op.drop_index("ix_oauth_sign_ins_state_hash", table_name="oauth_sign_ins")
    op.drop_table("oauth_sign_ins")
