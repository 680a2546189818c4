from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from sqlalchemy import BigInteger, Enum, ForeignKey, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from burrow.control.models.base import Base, BigId, CreatedMixin, IdMixin


class AffiliateStatus(StrEnum):
    applied = "applied"
    approved = "approved"
    denied = "denied"
    suspended = "suspended"
    # Ended for good (inactivity, a high refund rate, a violation); never approved again.
    terminated = "terminated"


class Affiliate(IdMixin, CreatedMixin, Base):
    """An account's membership of the affiliate program, from its application on.

    Contact details are the affiliate's own; an erased account keeps the row without them
    (its payouts stay, anonymised, as invoices do).
    """

    __tablename__ = "affiliates"

    account_id: Mapped[int | None] = mapped_column(
        BigId, ForeignKey("accounts.id", ondelete="SET NULL"), unique=True, default=None
    )
    code: Mapped[str] = mapped_column(String(32), unique=True)
    status: Mapped[AffiliateStatus] = mapped_column(
        Enum(AffiliateStatus, native_enum=False, length=20), index=True
    )
    status_reason: Mapped[str | None] = mapped_column(Text, default=None)
    decided_at: Mapped[datetime | None] = mapped_column(default=None)
    contact_name: Mapped[str | None] = mapped_column(String(200), default=None)
    website: Mapped[str | None] = mapped_column(String(300), default=None)
    paypal_email: Mapped[str | None] = mapped_column(String(320), default=None)
    # Keyed digests (never the values) to recognise the affiliate's own purchases.
    email_digest: Mapped[str | None] = mapped_column(String(64), default=None, index=True)
    paypal_digest: Mapped[str | None] = mapped_column(String(64), default=None, index=True)
    # A count only: no click log, no visitor's address, under any policy.
    clicks: Mapped[int] = mapped_column(BigInteger, default=0)
    # The last referred paid order or sign-in; inactivity is measured from here.
    last_active_at: Mapped[datetime | None] = mapped_column(default=None)
    inactivity_notice_at: Mapped[datetime | None] = mapped_column(default=None)
