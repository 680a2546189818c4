from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from sqlalchemy import Boolean, Enum, ForeignKey, String
from sqlalchemy.orm import Mapped, mapped_column

from burrow.control.models.base import Base, BigId, IdMixin, utcnow


class ConsentPurpose(StrEnum):
    """Processing beyond what the service needs; each needs the customer's consent."""

    marketing_email = "marketing_email"
    product_analytics = "product_analytics"


class Consent(IdMixin, Base):
    """One change of a consent: given or withdrawn, when, and from where (panel or API).

    Rows are only ever added, so the history is the record; the newest row per purpose is
    the current state. No row for a purpose means it was never given.
    """

    __tablename__ = "consents"

    account_id: Mapped[int] = mapped_column(
        BigId, ForeignKey("accounts.id", ondelete="CASCADE"), index=True
    )
    purpose: Mapped[ConsentPurpose] = mapped_column(
        Enum(ConsentPurpose, native_enum=False, length=40)
    )
    granted: Mapped[bool] = mapped_column(Boolean)
    at: Mapped[datetime] = mapped_column(default=utcnow)
    source: Mapped[str] = mapped_column(String(20), default="api")
