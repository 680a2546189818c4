from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from sqlalchemy import Enum, ForeignKey, Text
from sqlalchemy.orm import Mapped, mapped_column

from burrow.control.models.base import Base, BigId, IdMixin, utcnow


class PrivacyRequestKind(StrEnum):
    access = "access"  # a copy of everything held (the export)
    rectification = "rectification"
    erasure = "erasure"
    restriction = "restriction"
    objection = "objection"


class PrivacyRequestStatus(StrEnum):
    done = "done"  # answered at once by burrow
    pending = "pending"  # needs a person; listed in the admin panel with its deadline
    refused = "refused"


class PrivacyRequest(IdMixin, Base):
    """A data-subject request, answered at once where it can be, else queued for a person.

    ``due_at`` is the legal deadline (received + the policy's response days). After an
    erasure the row stays, with ``account_id`` emptied, as the record that it was done.
    """

    __tablename__ = "privacy_requests"

    account_id: Mapped[int | None] = mapped_column(
        BigId, ForeignKey("accounts.id", ondelete="SET NULL"), index=True, default=None
    )
    kind: Mapped[PrivacyRequestKind] = mapped_column(
        Enum(PrivacyRequestKind, native_enum=False, length=20)
    )
    status: Mapped[PrivacyRequestStatus] = mapped_column(
        Enum(PrivacyRequestStatus, native_enum=False, length=20), index=True
    )
    received_at: Mapped[datetime] = mapped_column(default=utcnow)
    due_at: Mapped[datetime]
    completed_at: Mapped[datetime | None] = mapped_column(default=None)
    # What the customer asked, in their words (a pending request), and what was done.
    details: Mapped[str] = mapped_column(Text, default="")
    outcome: Mapped[str | None] = mapped_column(Text, default=None)
    handled_by: Mapped[int | None] = mapped_column(
        BigId, ForeignKey("accounts.id", ondelete="SET NULL"), default=None
    )
