from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from sqlalchemy import BigInteger, Boolean, Enum, ForeignKey, Index, String, Text, text
from sqlalchemy.orm import Mapped, mapped_column

from burrow.control.models.base import Base, BigId, IdMixin, utcnow


class RefundStatus(StrEnum):
    evaluating = "evaluating"
    approved = "approved"
    refused = "refused"
    queued = "queued"
    executed = "executed"
    failed = "failed"


# A request in one of these states is still open; an order has at most one open request at a
# time (a partial unique index, so two requests at the same moment cannot both be stored).
OPEN_REFUND_STATUSES = ("evaluating", "queued", "approved")
_OPEN = text("status IN ('evaluating', 'queued', 'approved')")


class RefundRequest(IdMixin, Base):
    """A customer's request for their money back on one order, and what was decided."""

    __tablename__ = "refund_requests"
    __table_args__ = (
        Index(
            "ux_refund_requests_open_order",
            "order_id",
            unique=True,
            sqlite_where=_OPEN,
            postgresql_where=_OPEN,
        ),
    )

    order_id: Mapped[int] = mapped_column(
        BigId, ForeignKey("orders.id", ondelete="CASCADE"), index=True
    )
    account_id: Mapped[int] = mapped_column(
        BigId, ForeignKey("accounts.id", ondelete="CASCADE"), index=True
    )
    reason: Mapped[str] = mapped_column(Text, default="")
    status: Mapped[RefundStatus] = mapped_column(
        Enum(RefundStatus, native_enum=False, length=20), index=True
    )
    requested_at: Mapped[datetime] = mapped_column(default=utcnow)
    # requested_at + the policy's service level; None when the policy names none.
    due_at: Mapped[datetime | None] = mapped_column(default=None, index=True)
    decided_at: Mapped[datetime | None] = mapped_column(default=None)
    decided_by: Mapped[int | None] = mapped_column(
        BigId, ForeignKey("accounts.id", ondelete="SET NULL"), default=None
    )
    # The amount approved (or, while queued, proposed), in the order's currency.
    amount_minor: Mapped[int | None] = mapped_column(BigInteger, default=None)
    decision_reason: Mapped[str | None] = mapped_column(Text, default=None)
    terms_version: Mapped[str] = mapped_column(String(64))
    # An administrator's finding that an unsupported device, OS or site was used.
    unsupported_device: Mapped[bool] = mapped_column(Boolean, default=False)
    executed_at: Mapped[datetime | None] = mapped_column(default=None)
    provider_refund_id: Mapped[str | None] = mapped_column(String(200), default=None)
    # Set at the first attempt: a random reference the provider keeps with the refund (so an
    # unclear answer can be looked up there), and the idempotency key of the latest attempt.
    # Random, so no two deployments (or a restored database) ever send the same key.
    provider_reference: Mapped[str | None] = mapped_column(String(64), default=None)
    idempotency_key: Mapped[str | None] = mapped_column(String(100), default=None)
    # Under the one-refund-per-person rule only: a keyed digest of the customer's normalised
    # email when the request was made, so a later change of address does not free the old
    # one for another account.
    email_digest: Mapped[str | None] = mapped_column(String(64), default=None, index=True)
