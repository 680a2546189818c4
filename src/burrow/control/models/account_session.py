from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, String
from sqlalchemy.orm import Mapped, mapped_column

from burrow.control.models.base import Base, BigId, CreatedMixin, IdMixin


class AccountSession(IdMixin, CreatedMixin, Base):
    """A signed-in session of the website or API. Only the token's hash is stored."""

    __tablename__ = "account_sessions"

    account_id: Mapped[int] = mapped_column(
        BigId, ForeignKey("accounts.id", ondelete="CASCADE"), index=True
    )
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    expires_at: Mapped[datetime]
    # A session that still needs its second factor cannot do anything else.
    needs_second_factor: Mapped[bool] = mapped_column(default=False)
    # When this session proved the second factor (a TOTP code at sign-in); None: the password
    # alone (two-factor was off). The admin panel admits only sessions that proved it.
    second_factor_at: Mapped[datetime | None] = mapped_column(default=None)
    # When the session was last used (written at most once a minute); it ends after
    # ``session_idle_hours`` without use. None: not used since it was opened.
    last_used_at: Mapped[datetime | None] = mapped_column(default=None)
    # The browser and system it was opened from, summarised from the User-Agent ("Firefox on
    # Linux"), so that its owner can tell their sessions apart. Never an address.
    device: Mapped[str | None] = mapped_column(String(120), default=None)
