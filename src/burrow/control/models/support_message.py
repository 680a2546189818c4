from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from sqlalchemy import Enum, ForeignKey, Text
from sqlalchemy.orm import Mapped, mapped_column

from burrow.control.models.base import Base, BigId, IdMixin, utcnow


class SupportAuthor(StrEnum):
    customer = "customer"
    support = "support"


class SupportVia(StrEnum):
    web = "web"
    api = "api"
    email = "email"


class SupportMessage(IdMixin, Base):
    """One message of a support conversation, from either side. Text only: no attachments."""

    __tablename__ = "support_messages"

    request_id: Mapped[int] = mapped_column(
        BigId, ForeignKey("support_requests.id", ondelete="CASCADE"), index=True
    )
    author: Mapped[SupportAuthor] = mapped_column(Enum(SupportAuthor, native_enum=False, length=12))
    # The administrator who wrote a support message; None for the customer's.
    admin_id: Mapped[int | None] = mapped_column(
        BigId, ForeignKey("accounts.id", ondelete="SET NULL"), default=None
    )
    body: Mapped[str] = mapped_column(Text)
    via: Mapped[SupportVia] = mapped_column(Enum(SupportVia, native_enum=False, length=8))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
