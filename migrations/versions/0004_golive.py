"""Nodes remember when a change made customers' configurations out of date.

Revision ID: 0004
Revises: 0005
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("nodes") as batch:
        batch.add_column(sa.Column("config_changed_at", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("config_change", sa.String(length=40), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("nodes") as batch:
        batch.drop_column("config_change")
        batch.drop_column("config_changed_at")
