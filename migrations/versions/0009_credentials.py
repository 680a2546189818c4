"""devices get credentials for other protocols; the desired state carries them

Revision ID: 0009
Revises: 0002
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "device_credentials",
        sa.Column(
            "device_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("protocol", sa.String(length=16), nullable=False),
        sa.Column("username", sa.String(length=64), nullable=False),
        sa.Column("verifier", sa.String(length=200), nullable=False),
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["device_id"],
            ["devices.id"],
            name=op.f("fk_device_credentials_device_id_devices"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_device_credentials")),
        sa.UniqueConstraint(
            "device_id", "protocol", name=op.f("uq_device_credentials_device_id_protocol")
        ),
        sa.UniqueConstraint(
            "protocol", "username", name=op.f("uq_device_credentials_protocol_username")
        ),
    )
    with op.batch_alter_table("served_peers") as batch:
        batch.add_column(sa.Column("access", sa.Text(), server_default="", nullable=False))
    with op.batch_alter_table("peer_changes") as batch:
        batch.add_column(sa.Column("access", sa.Text(), nullable=True))
    with op.batch_alter_table("nodes") as batch:
        batch.add_column(sa.Column("openvpn_ca", sa.Text(), nullable=True))
        batch.add_column(sa.Column("openvpn_tls_crypt", sa.Text(), nullable=True))
        batch.add_column(
            sa.Column(
                "openvpn_transports", sa.String(length=100), server_default="", nullable=False
            )
        )


def downgrade() -> None:
    with op.batch_alter_table("nodes") as batch:
        batch.drop_column("openvpn_transports")
        batch.drop_column("openvpn_tls_crypt")
        batch.drop_column("openvpn_ca")
    with op.batch_alter_table("peer_changes") as batch:
        batch.drop_column("access")
    with op.batch_alter_table("served_peers") as batch:
        batch.drop_column("access")
    op.drop_table("device_credentials")
