"""what a node announces about its IKEv2: the host clients dial and its CA

Revision ID: 0018
Revises: 0017
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0018"
down_revision: str | None = "0017"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("nodes") as batch:
        batch.add_column(sa.Column("ikev2_host", sa.String(length=253), nullable=True))
        batch.add_column(sa.Column("ikev2_ca", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("nodes") as batch:
        batch.drop_column("ikev2_ca")
        batch.drop_column("ikev2_host")
