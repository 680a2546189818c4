"""affiliates: applications, referrals, commissions, PayPal payout batches and items

Revision ID: 0011
Revises: 0013
Create Date: 2026-12-07
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0011"
down_revision: str | None = "0013"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def _id() -> sa.Column[int]:
    return sa.Column("id", _ID, autoincrement=True, nullable=False)


def _created() -> sa.Column[object]:
    return sa.Column("created_at", sa.DateTime(timezone=True), nullable=False)


def _enum(name: str, length: int, *values: str) -> sa.Enum:
    return sa.Enum(*values, name=name, native_enum=False, length=length)


def upgrade() -> None:
    op.create_table(
        "affiliates",
        sa.Column("account_id", _ID, nullable=True),
        sa.Column("code", sa.String(length=32), nullable=False),
        sa.Column(
            "status",
            _enum(
                "affiliatestatus", 20, "applied", "approved", "denied", "suspended", "terminated"
            ),
            nullable=False,
        ),
        sa.Column("status_reason", sa.Text(), nullable=True),
        sa.Column("decided_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("contact_name", sa.String(length=200), nullable=True),
        sa.Column("website", sa.String(length=300), nullable=True),
        sa.Column("paypal_email", sa.String(length=320), nullable=True),
        sa.Column("email_digest", sa.String(length=64), nullable=True),
        sa.Column("paypal_digest", sa.String(length=64), nullable=True),
        sa.Column("clicks", sa.BigInteger(), nullable=False),
        sa.Column("last_active_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("inactivity_notice_at", sa.DateTime(timezone=True), nullable=True),
        _id(),
        _created(),
        sa.ForeignKeyConstraint(
            ["account_id"],
            ["accounts.id"],
            name=op.f("fk_affiliates_account_id_accounts"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_affiliates")),
        sa.UniqueConstraint("account_id", name=op.f("uq_affiliates_account_id")),
        sa.UniqueConstraint("code", name=op.f("uq_affiliates_code")),
    )
    with op.batch_alter_table("affiliates") as batch:
        batch.create_index(batch.f("ix_affiliates_status"), ["status"], unique=False)
        batch.create_index(batch.f("ix_affiliates_email_digest"), ["email_digest"], unique=False)
        batch.create_index(batch.f("ix_affiliates_paypal_digest"), ["paypal_digest"], unique=False)

    op.create_table(
        "referrals",
        sa.Column("account_id", _ID, nullable=False),
        sa.Column("affiliate_id", _ID, nullable=False),
        sa.Column("how", _enum("referralhow", 10, "link", "code"), nullable=False),
        _id(),
        _created(),
        sa.ForeignKeyConstraint(
            ["account_id"],
            ["accounts.id"],
            name=op.f("fk_referrals_account_id_accounts"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["affiliate_id"],
            ["affiliates.id"],
            name=op.f("fk_referrals_affiliate_id_affiliates"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_referrals")),
        sa.UniqueConstraint("account_id", name=op.f("uq_referrals_account_id")),
    )
    with op.batch_alter_table("referrals") as batch:
        batch.create_index(batch.f("ix_referrals_affiliate_id"), ["affiliate_id"], unique=False)

    op.create_table(
        "payout_batches",
        sa.Column("sender_batch_id", sa.String(length=64), nullable=False),
        sa.Column(
            "status",
            _enum("payoutbatchstatus", 20, "created", "pending", "done", "denied"),
            nullable=False,
        ),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("total_minor", sa.BigInteger(), nullable=False),
        sa.Column("provider_batch_id", sa.String(length=64), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("sent_at", sa.DateTime(timezone=True), nullable=True),
        _id(),
        _created(),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_payout_batches")),
        sa.UniqueConstraint("sender_batch_id", name=op.f("uq_payout_batches_sender_batch_id")),
    )
    with op.batch_alter_table("payout_batches") as batch:
        batch.create_index(batch.f("ix_payout_batches_status"), ["status"], unique=False)

    op.create_table(
        "payout_items",
        sa.Column("batch_id", _ID, nullable=False),
        sa.Column("affiliate_id", _ID, nullable=False),
        sa.Column("sender_item_id", sa.String(length=64), nullable=False),
        sa.Column("amount_minor", sa.BigInteger(), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("receiver", sa.String(length=320), nullable=True),
        sa.Column(
            "status",
            _enum(
                "payoutitemstatus",
                20,
                "pending",
                "success",
                "unclaimed",
                "returned",
                "failed",
                "credited_back",
            ),
            nullable=False,
        ),
        sa.Column("provider_item_id", sa.String(length=64), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        _id(),
        _created(),
        sa.ForeignKeyConstraint(
            ["affiliate_id"],
            ["affiliates.id"],
            name=op.f("fk_payout_items_affiliate_id_affiliates"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["batch_id"],
            ["payout_batches.id"],
            name=op.f("fk_payout_items_batch_id_payout_batches"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_payout_items")),
        sa.UniqueConstraint("sender_item_id", name=op.f("uq_payout_items_sender_item_id")),
    )
    with op.batch_alter_table("payout_items") as batch:
        batch.create_index(batch.f("ix_payout_items_batch_id"), ["batch_id"], unique=False)
        batch.create_index(batch.f("ix_payout_items_affiliate_id"), ["affiliate_id"], unique=False)
        batch.create_index(batch.f("ix_payout_items_status"), ["status"], unique=False)

    op.create_table(
        "commissions",
        sa.Column("affiliate_id", _ID, nullable=False),
        sa.Column("order_id", _ID, nullable=True),
        sa.Column("earned_order_id", _ID, nullable=True),
        sa.Column("kind", _enum("commissionkind", 20, "earned", "clawback"), nullable=False),
        sa.Column(
            "status",
            _enum("commissionstatus", 20, "held", "pending", "payable", "paid", "cancelled"),
            nullable=False,
        ),
        sa.Column("amount_minor", sa.BigInteger(), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("payout_minor", sa.BigInteger(), nullable=False),
        sa.Column("reversed_minor", sa.BigInteger(), nullable=False),
        sa.Column("available_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("payout_item_id", _ID, nullable=True),
        _id(),
        _created(),
        sa.ForeignKeyConstraint(
            ["affiliate_id"],
            ["affiliates.id"],
            name=op.f("fk_commissions_affiliate_id_affiliates"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["order_id"],
            ["orders.id"],
            name=op.f("fk_commissions_order_id_orders"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["payout_item_id"],
            ["payout_items.id"],
            name=op.f("fk_commissions_payout_item_id_payout_items"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_commissions")),
        sa.UniqueConstraint("earned_order_id", name=op.f("uq_commissions_earned_order_id")),
    )
    with op.batch_alter_table("commissions") as batch:
        batch.create_index(batch.f("ix_commissions_affiliate_id"), ["affiliate_id"], unique=False)
        batch.create_index(batch.f("ix_commissions_order_id"), ["order_id"], unique=False)
        batch.create_index(batch.f("ix_commissions_status"), ["status"], unique=False)
        batch.create_index(
            batch.f("ix_commissions_payout_item_id"), ["payout_item_id"], unique=False
        )


def downgrade() -> None:
    op.drop_table("commissions")
    op.drop_table("payout_items")
    op.drop_table("payout_batches")
    op.drop_table("referrals")
    op.drop_table("affiliates")
