from __future__ import annotations

from datetime import datetime

from sqlalchemy import String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from burrow.control.models.base import Base, IdMixin, utcnow


class WebhookEvent(IdMixin, Base):
    """A provider's event, stored before it is handled; (provider, event_id) is unique.

    A handler claims an event before handling it (``claimed_until``: another handler leaves
    it alone until then, and takes it over after, should the first one have died). An event
    that fails is tried again after ``next_attempt_at`` (a growing backoff); after the
    policy's cap of attempts it is parked (``failed_at``) for an administrator to retry.
    """

    __tablename__ = "webhook_events"
    __table_args__ = (UniqueConstraint("provider", "event_id"),)

    provider: Mapped[str] = mapped_column(String(32))
    event_id: Mapped[str] = mapped_column(String(200))
    type: Mapped[str] = mapped_column(String(100))
    payload: Mapped[str] = mapped_column(Text)
    received_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    processed_at: Mapped[datetime | None] = mapped_column(default=None, index=True)
    error: Mapped[str | None] = mapped_column(Text, default=None)
    attempts: Mapped[int] = mapped_column(default=0)
    claimed_until: Mapped[datetime | None] = mapped_column(default=None)
    next_attempt_at: Mapped[datetime | None] = mapped_column(default=None)
    failed_at: Mapped[datetime | None] = mapped_column(default=None, index=True)
