from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from burrow.control.models.base import Base, BigId, IdMixin, utcnow


class AdminAction(IdMixin, Base):
    """The admin audit trail: who did what to what, when, and why. Only added to.

    Customers' own activity is never recorded here (nor anywhere else).
    """

    __tablename__ = "admin_actions"

    admin_id: Mapped[int | None] = mapped_column(
        BigId, ForeignKey("accounts.id", ondelete="SET NULL"), index=True, default=None
    )
    # A dotted verb: ``account.suspend``, ``refund.approve``, ``node.create`` ...
    action: Mapped[str] = mapped_column(String(64), index=True)
    target_type: Mapped[str] = mapped_column(String(32))
    target_id: Mapped[str] = mapped_column(String(64))
    reason: Mapped[str] = mapped_column(Text, default="")
    # A small JSON object of what changed (never a customer's IP or connection data).
    detail: Mapped[str] = mapped_column(Text, default="{}")
    at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
