"""signin: a session's last use and the device it was opened from

Revision ID: 0003
Revises: 0001
Create Date: 2026-12-07

Sessions end after a time without use as well as after their maximum age, and their owner can
list them: each keeps when it was last used and a summary of its browser ("Firefox on Linux").
Sessions that exist already have neither; they count as last used when they were opened.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("account_sessions") as batch:
        batch.add_column(sa.Column("last_used_at", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("device", sa.String(length=120), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("account_sessions") as batch:
        batch.drop_column("device")
        batch.drop_column("last_used_at")
