"""abuse complaints and the history of which device held which tunnel address

Revision ID: 0013
Revises: 0009
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0013"
down_revision: str | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "abuse_complaints",
        sa.Column("clause", sa.String(length=200), nullable=False),
        sa.Column("source", sa.String(length=200), nullable=False),
        sa.Column("egress_ip", sa.String(length=39), nullable=False),
        sa.Column("port", sa.Integer(), nullable=False),
        sa.Column("seen_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("evidence", sa.Text(), nullable=False),
        sa.Column(
            "status",
            sa.Enum(
                "open",
                "traced",
                "not_found",
                "untraceable",
                "actioned",
                name="complaintstatus",
                native_enum=False,
                length=20,
            ),
            nullable=False,
        ),
        sa.Column("finding", sa.String(length=1000), nullable=True),
        sa.Column(
            "account_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True
        ),
        sa.Column("device_id", sa.BigInteger(), nullable=True),
        sa.Column(
            "action",
            sa.Enum(
                "warn", "suspend", "terminate", name="complaintaction", native_enum=False, length=20
            ),
            nullable=True,
        ),
        sa.Column("actioned_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["account_id"],
            ["accounts.id"],
            name=op.f("fk_abuse_complaints_account_id_accounts"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_abuse_complaints")),
    )
    with op.batch_alter_table("abuse_complaints", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_abuse_complaints_account_id"), ["account_id"], unique=False
        )
        batch_op.create_index(batch_op.f("ix_abuse_complaints_seen_at"), ["seen_at"], unique=False)
        batch_op.create_index(batch_op.f("ix_abuse_complaints_status"), ["status"], unique=False)

    op.create_table(
        "address_holdings",
        sa.Column(
            "account_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("device_id", sa.BigInteger(), nullable=False),
        sa.Column("device_name", sa.String(length=64), nullable=False),
        sa.Column("ipv4", sa.String(length=15), nullable=False),
        sa.Column("ipv6", sa.String(length=39), nullable=False),
        sa.Column("held_from", sa.DateTime(timezone=True), nullable=False),
        sa.Column("held_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.ForeignKeyConstraint(
            ["account_id"],
            ["accounts.id"],
            name=op.f("fk_address_holdings_account_id_accounts"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_address_holdings")),
    )
    with op.batch_alter_table("address_holdings", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_address_holdings_account_id"), ["account_id"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_address_holdings_device_id"), ["device_id"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_address_holdings_held_until"), ["held_until"], unique=False
        )
        batch_op.create_index(
            "ix_address_holdings_ipv4_held_from", ["ipv4", "held_from"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("address_holdings", schema=None) as batch_op:
        batch_op.drop_index("ix_address_holdings_ipv4_held_from")
        batch_op.drop_index(batch_op.f("ix_address_holdings_held_until"))
        batch_op.drop_index(batch_op.f("ix_address_holdings_device_id"))
        batch_op.drop_index(batch_op.f("ix_address_holdings_account_id"))

    op.drop_table("address_holdings")
    with op.batch_alter_table("abuse_complaints", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_abuse_complaints_status"))
        batch_op.drop_index(batch_op.f("ix_abuse_complaints_seen_at"))
        batch_op.drop_index(batch_op.f("ix_abuse_complaints_account_id"))

    op.drop_table("abuse_complaints")
