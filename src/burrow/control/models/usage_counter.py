from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, ForeignKey, Integer
from sqlalchemy.orm import Mapped, mapped_column

from burrow.control.models.base import Base, BigId, CreatedMixin, IdMixin, utcnow


class UsageCounter(IdMixin, CreatedMixin, Base):
    """Traffic and session counts of an account's first order, for refund rules only.

    Kept only under ``privacy.mode = "metered"`` with ``privacy.first_order_usage_counters``
    and a refund rule that needs them (``refunds.max_data_bytes`` / ``max_sessions``).
    ``order_id`` is the account's first paid order once there is one; the counts before it
    (a trial) are part of that order's usage.
    """

    __tablename__ = "usage_counters"
    __table_args__ = {"info": {"privacy": "usage_counters"}}

    account_id: Mapped[int] = mapped_column(
        BigId, ForeignKey("accounts.id", ondelete="CASCADE"), unique=True
    )
    order_id: Mapped[int | None] = mapped_column(
        BigId, ForeignKey("orders.id", ondelete="SET NULL"), default=None
    )
    bytes_total: Mapped[int] = mapped_column(BigInteger, default=0)
    sessions: Mapped[int] = mapped_column(Integer, default=0)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)
