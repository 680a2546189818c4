from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from sqlalchemy import BigInteger, Enum, ForeignKey, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from burrow.control.models.base import Base, BigId, CreatedMixin, IdMixin


class PayoutBatchStatus(StrEnum):
    # Made here, not known to PayPal yet (or its answer was lost): sent again under the same
    # sender_batch_id, which PayPal pays at most once.
    created = "created"
    pending = "pending"  # PayPal took it; items are being paid
    done = "done"  # every item reached a final state
    denied = "denied"


class PayoutItemStatus(StrEnum):
    pending = "pending"
    success = "success"
    unclaimed = "unclaimed"
    returned = "returned"
    failed = "failed"
    # Returned, failed or denied and credited back to the affiliate's balance.
    credited_back = "credited_back"


class PayoutBatch(IdMixin, CreatedMixin, Base):
    __tablename__ = "payout_batches"

    sender_batch_id: Mapped[str] = mapped_column(String(64), unique=True)
    status: Mapped[PayoutBatchStatus] = mapped_column(
        Enum(PayoutBatchStatus, native_enum=False, length=20), index=True
    )
    currency: Mapped[str] = mapped_column(String(3))
    total_minor: Mapped[int] = mapped_column(BigInteger)
    provider_batch_id: Mapped[str | None] = mapped_column(String(64), default=None)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    error: Mapped[str | None] = mapped_column(Text, default=None)
    sent_at: Mapped[datetime | None] = mapped_column(default=None)


class PayoutItem(IdMixin, CreatedMixin, Base):
    __tablename__ = "payout_items"

    batch_id: Mapped[int] = mapped_column(
        BigId, ForeignKey("payout_batches.id", ondelete="CASCADE"), index=True
    )
    affiliate_id: Mapped[int] = mapped_column(
        BigId, ForeignKey("affiliates.id", ondelete="CASCADE"), index=True
    )
    sender_item_id: Mapped[str] = mapped_column(String(64), unique=True)
    amount_minor: Mapped[int] = mapped_column(BigInteger)
    currency: Mapped[str] = mapped_column(String(3))
    # The PayPal account paid; cleared when the affiliate's account is erased.
    receiver: Mapped[str | None] = mapped_column(String(320), default=None)
    status: Mapped[PayoutItemStatus] = mapped_column(
        Enum(PayoutItemStatus, native_enum=False, length=20), index=True
    )
    provider_item_id: Mapped[str | None] = mapped_column(String(64), default=None)
    error: Mapped[str | None] = mapped_column(Text, default=None)
