from __future__ import annotations

from enum import StrEnum

from sqlalchemy import Enum, ForeignKey
from sqlalchemy.orm import Mapped, mapped_column

from burrow.control.models.base import Base, BigId, CreatedMixin, IdMixin


class ReferralHow(StrEnum):
    link = "link"  # the referral link's cookie at sign-up
    code = "code"  # typed at sign-up or at checkout


class Referral(IdMixin, CreatedMixin, Base):
    """A referred account and its affiliate: set once, so renewals attribute without cookies."""

    __tablename__ = "referrals"

    account_id: Mapped[int] = mapped_column(
        BigId, ForeignKey("accounts.id", ondelete="CASCADE"), unique=True
    )
    affiliate_id: Mapped[int] = mapped_column(
        BigId, ForeignKey("affiliates.id", ondelete="CASCADE"), index=True
    )
    how: Mapped[ReferralHow] = mapped_column(Enum(ReferralHow, native_enum=False, length=10))
