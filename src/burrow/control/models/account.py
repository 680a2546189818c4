from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from sqlalchemy import BigInteger, Boolean, Enum, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from burrow.control.models.base import Base, CreatedMixin, IdMixin


class AccountStatus(StrEnum):
    active = "active"
    suspended = "suspended"
    terminated = "terminated"
    # The customer deleted the account: personal data erased, the row kept anonymised so the
    # invoices that the law requires to be kept still have an owner.
    erased = "erased"


class AgeAttestation(StrEnum):
    adult = "adult"
    emancipated_minor = "emancipated_minor"
    guardian_consent = "guardian_consent"


class Account(IdMixin, CreatedMixin, Base):
    __tablename__ = "accounts"

    email: Mapped[str] = mapped_column(String(320), unique=True)
    password_hash: Mapped[str] = mapped_column(String(200))
    status: Mapped[AccountStatus] = mapped_column(
        Enum(AccountStatus, native_enum=False, length=20), default=AccountStatus.active
    )
    status_reason: Mapped[str | None] = mapped_column(Text, default=None)
    status_changed_at: Mapped[datetime | None] = mapped_column(default=None)
    is_admin: Mapped[bool] = mapped_column(Boolean, default=False)
    email_verified_at: Mapped[datetime | None] = mapped_column(default=None)
    totp_secret: Mapped[str | None] = mapped_column(String(64), default=None)
    totp_enabled: Mapped[bool] = mapped_column(Boolean, default=False)
    # The last time step whose code was accepted, so that a code cannot be used twice.
    totp_last_step: Mapped[int | None] = mapped_column(BigInteger, default=None)
    age_attestation: Mapped[AgeAttestation | None] = mapped_column(
        Enum(AgeAttestation, native_enum=False, length=30), default=None
    )
    terms_version_accepted: Mapped[str | None] = mapped_column(String(64), default=None)
    terms_accepted_at: Mapped[datetime | None] = mapped_column(default=None)
    # The clause of the terms an account was terminated for violating (admin's finding).
    terminated_clause: Mapped[str | None] = mapped_column(String(200), default=None)
    # The website's last sign-in address, kept only when ``privacy.store_last_login_ip`` is on
    # and only for ``privacy.last_login_ip_retention_days`` (the purge job clears it).
    last_login_ip: Mapped[str | None] = mapped_column(
        String(45), default=None, info={"privacy": "login_ip"}
    )
    last_login_ip_at: Mapped[datetime | None] = mapped_column(
        default=None, info={"privacy": "login_ip"}
    )
    erased_at: Mapped[datetime | None] = mapped_column(default=None)
