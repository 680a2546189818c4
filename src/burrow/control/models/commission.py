from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from sqlalchemy import BigInteger, Enum, ForeignKey, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from burrow.control.models.base import Base, BigId, CreatedMixin, IdMixin


class CommissionKind(StrEnum):
    earned = "earned"  # on a referred paid order
    clawback = "clawback"  # negative: the order was refunded after its commission was paid


class CommissionStatus(StrEnum):
    held = "held"  # held for review (a self-referral, say)
    pending = "pending"  # inside the holding period
    payable = "payable"
    paid = "paid"  # in a payout item (returned money makes it payable again)
    cancelled = "cancelled"


class Commission(IdMixin, CreatedMixin, Base):
    __tablename__ = "commissions"

    affiliate_id: Mapped[int] = mapped_column(
        BigId, ForeignKey("affiliates.id", ondelete="CASCADE"), index=True
    )
    order_id: Mapped[int | None] = mapped_column(
        BigId, ForeignKey("orders.id", ondelete="SET NULL"), index=True, default=None
    )
    # Set only on an order's earned commission: one per order, on both databases.
    earned_order_id: Mapped[int | None] = mapped_column(BigId, unique=True, default=None)
    kind: Mapped[CommissionKind] = mapped_column(Enum(CommissionKind, native_enum=False, length=20))
    status: Mapped[CommissionStatus] = mapped_column(
        Enum(CommissionStatus, native_enum=False, length=20), index=True
    )
    # In the order's currency, and in the payout currency at the policy's rate. A clawback is
    # negative.
    amount_minor: Mapped[int] = mapped_column(BigInteger)
    currency: Mapped[str] = mapped_column(String(3))
    payout_minor: Mapped[int] = mapped_column(BigInteger)
    # What of the order's refunds this commission has already given back (earned rows).
    reversed_minor: Mapped[int] = mapped_column(BigInteger, default=0)
    available_at: Mapped[datetime]
    reason: Mapped[str | None] = mapped_column(Text, default=None)
    payout_item_id: Mapped[int | None] = mapped_column(
        BigId, ForeignKey("payout_items.id", ondelete="SET NULL"), index=True, default=None
    )
