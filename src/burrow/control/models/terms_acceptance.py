from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from sqlalchemy import Enum, ForeignKey, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from burrow.control.models.base import Base, BigId, IdMixin


class TermsAcceptanceHow(StrEnum):
    signup = "signup"  # accepted explicitly when the account was made
    # Used the service after the effective date, where the policy says that accepts it.
    continued_use = "continued_use"
    explicit = "explicit"  # accepted a newer version from the account


class TermsAcceptance(IdMixin, Base):
    """That an account accepted a version of the terms, when, and how."""

    __tablename__ = "terms_acceptances"
    __table_args__ = (UniqueConstraint("account_id", "terms_version_id"),)

    account_id: Mapped[int] = mapped_column(
        BigId, ForeignKey("accounts.id", ondelete="CASCADE"), index=True
    )
    terms_version_id: Mapped[int] = mapped_column(
        BigId, ForeignKey("terms_versions.id", ondelete="RESTRICT"), index=True
    )
    accepted_at: Mapped[datetime]
    how: Mapped[TermsAcceptanceHow] = mapped_column(
        Enum(TermsAcceptanceHow, native_enum=False, length=20)
    )
