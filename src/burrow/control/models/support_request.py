from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from sqlalchemy import Enum, ForeignKey, String
from sqlalchemy.orm import Mapped, mapped_column

from burrow.control.models.base import Base, BigId, IdMixin, utcnow


class SupportTopic(StrEnum):
    connection = "connection"
    billing = "billing"
    refund = "refund"
    privacy = "privacy"
    cancellation = "cancellation"
    other = "other"


class SupportStatus(StrEnum):
    open = "open"
    waiting_on_customer = "waiting_on_customer"
    resolved = "resolved"


class SupportRequest(IdMixin, Base):
    """A customer's conversation with support: its topic, state, owner and deadline.

    No column holds connection data (addresses, connection times, byte counts): whatever the
    privacy mode, a request is only what the two sides wrote.
    """

    __tablename__ = "support_requests"

    # The signed-in customer's account; None for a request opened signed out (or by email
    # from an address no account has), which ``email`` then answers.
    account_id: Mapped[int | None] = mapped_column(
        BigId, ForeignKey("accounts.id", ondelete="CASCADE"), default=None, index=True
    )
    email: Mapped[str | None] = mapped_column(String(320), default=None, index=True)
    topic: Mapped[SupportTopic] = mapped_column(Enum(SupportTopic, native_enum=False, length=20))
    subject: Mapped[str] = mapped_column(String(200))
    status: Mapped[SupportStatus] = mapped_column(
        Enum(SupportStatus, native_enum=False, length=24), default=SupportStatus.open, index=True
    )
    owner_id: Mapped[int | None] = mapped_column(
        BigId, ForeignKey("accounts.id", ondelete="SET NULL"), default=None
    )
    opened_at: Mapped[datetime] = mapped_column(default=utcnow)
    # opened_at + the policy's hours for the topic (support.deadline_hours).
    due_at: Mapped[datetime] = mapped_column(index=True)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)
    resolved_at: Mapped[datetime | None] = mapped_column(default=None)
    # A refund request made after (or from) this conversation (refunds.support_first).
    refund_request_id: Mapped[int | None] = mapped_column(
        BigId, ForeignKey("refund_requests.id", ondelete="SET NULL"), default=None
    )
    # A cancellation asked for by email: the account its username names, and when an
    # administrator carried it out (once: a compare-and-set on this column).
    cancel_account_id: Mapped[int | None] = mapped_column(
        BigId, ForeignKey("accounts.id", ondelete="SET NULL"), default=None
    )
    cancelled_at: Mapped[datetime | None] = mapped_column(default=None)
