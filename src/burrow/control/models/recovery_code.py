from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from burrow.control.models.base import Base, BigId, CreatedMixin, IdMixin


class RecoveryCode(IdMixin, CreatedMixin, Base):
    """One of an account's two-factor recovery codes, usable once instead of a TOTP code.

    Only the code's hash is stored; the codes are shown once, when they are made.
    """

    __tablename__ = "recovery_codes"
    __table_args__ = (UniqueConstraint("account_id", "code_hash"),)

    account_id: Mapped[int] = mapped_column(
        BigId, ForeignKey("accounts.id", ondelete="CASCADE"), index=True
    )
    code_hash: Mapped[str] = mapped_column(String(64))
    used_at: Mapped[datetime | None] = mapped_column(default=None)
