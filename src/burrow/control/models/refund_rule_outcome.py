from __future__ import annotations

from sqlalchemy import Boolean, ForeignKey, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from burrow.control.models.base import Base, BigId, IdMixin


class RefundRuleOutcome(IdMixin, Base):
    """One rule of the policy's [refunds] section, checked for one request, with its evidence."""

    __tablename__ = "refund_rule_outcomes"

    refund_request_id: Mapped[int] = mapped_column(
        BigId, ForeignKey("refund_requests.id", ondelete="CASCADE"), index=True
    )
    rule: Mapped[str] = mapped_column(String(64))
    passed: Mapped[bool] = mapped_column(Boolean)
    # JSON text of the facts the rule used.
    evidence: Mapped[str] = mapped_column(Text)
    message: Mapped[str] = mapped_column(Text)
    # Passed the checks software can make, but a person must judge it.
    needs_judgement: Mapped[bool] = mapped_column(Boolean, default=False)
