"""Issue 17, account lifecycle: the links mailed for an account (password resets and
new e-mail addresses), stored as hashes, single use, expiring.

Revision ID: 0009
Revises: 0007 (batches; the lead re-chains the revisions of issue 17 at merge)
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "account_tokens",
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("purpose", sa.String(length=16), nullable=False),
        sa.Column("new_email", sa.String(length=320), nullable=True),
        sa.Column("created", sa.Float(), nullable=False),
        sa.Column("expires", sa.Float(), nullable=False),
        sa.Column("used", sa.Float(), nullable=True),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("token_hash"),
    )
    with op.batch_alter_table("account_tokens") as batch:
        batch.create_index("ix_account_tokens_user_id", ["user_id"], unique=False)
        batch.create_index("ix_account_tokens_expires", ["expires"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("account_tokens") as batch:
        batch.drop_index("ix_account_tokens_expires")
        batch.drop_index("ix_account_tokens_user_id")
    op.drop_table("account_tokens")
