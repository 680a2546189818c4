"""Request and response bodies of the accounts, sessions and admin-account APIs.

Shapes and size limits only; rules that need the policy or the database live in the service.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, ClassVar

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    EmailStr,
    Field,
    computed_field,
)

from burrow.control.models import AccountStatus, AgeAttestation

EMAIL_MAX = 320
PASSWORD_MIN = 10
PASSWORD_MAX = 1024


def normalise_email(value: object) -> object:
    """Addresses are compared as typed, ignoring surrounding spaces and case."""
    if isinstance(value, str):
        return value.strip().lower()
    return value


def _not_too_long(value: str) -> str:
    if len(value) > EMAIL_MAX:
        raise ValueError(f"an email address has at most {EMAIL_MAX} characters")
    return value


def plain_text(value: str) -> str:
    """Refuse what the database or the hashers cannot take: NUL and lone surrogates."""
    if "\x00" in value:
        raise ValueError("must not contain NUL characters")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("must be valid Unicode text") from None
    return value


Email = Annotated[
    EmailStr,
    BeforeValidator(normalise_email),
    AfterValidator(_not_too_long),
    Field(max_length=EMAIL_MAX, examples=["you@example.com"]),
]
NewPassword = Annotated[
    str,
    AfterValidator(plain_text),
    Field(
        min_length=PASSWORD_MIN,
        max_length=PASSWORD_MAX,
        description=f"{PASSWORD_MIN} to {PASSWORD_MAX} characters, not the email address.",
    ),
]
# A sign-in password is checked, not judged: any length up to the maximum.
GivenPassword = Annotated[
    str, AfterValidator(plain_text), Field(min_length=1, max_length=PASSWORD_MAX)
]


def _without_spaces(value: object) -> object:
    # Apps show codes as "123 456"; people paste them that way.
    return value.replace(" ", "") if isinstance(value, str) else value


TotpCode = Annotated[
    str,
    BeforeValidator(_without_spaces),
    Field(pattern=r"^[0-9]{6}$", description="The 6-digit code of your authenticator app."),
]
RecoveryCodeText = Annotated[
    str,
    BeforeValidator(_without_spaces),
    Field(
        pattern=r"^[A-Za-z0-9]{5}-?[A-Za-z0-9]{5}$",
        description="One of your ten recovery codes (such as abcde-23456); each works once.",
    ),
]
OneTimeToken = Annotated[str, AfterValidator(plain_text), Field(min_length=1, max_length=200)]
Reason = Annotated[str, AfterValidator(plain_text), Field(min_length=1, max_length=2000)]
SearchText = Annotated[str, AfterValidator(plain_text), Field(max_length=EMAIL_MAX)]


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class AccountCreate(_Body):
    field_messages: ClassVar[dict[str, str]] = {
        "password": "Choose a password of at least 10 characters; a few words in a row work well.",
    }

    email: Email
    password: NewPassword
    age_attestation: AgeAttestation | None = Field(
        None,
        description="Required when the provider's policy asks for it: 'adult' (you are of the "
        "policy's minimum age), 'emancipated_minor' or 'guardian_consent'.",
    )
    accept_terms_version: str = Field(
        min_length=1, max_length=64, description="The version of the terms you accept."
    )
    referral_code: str | None = Field(
        None,
        max_length=32,
        description="An affiliate's referral code, if someone referred you (a referral link "
        "sets it by itself).",
    )


class AccountRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    email: str
    status: AccountStatus
    status_reason: str | None
    email_verified_at: datetime | None
    is_admin: bool
    totp_enabled: bool
    age_attestation: AgeAttestation | None
    terms_version_accepted: str | None
    created_at: datetime

    @computed_field  # type: ignore[prop-decorator]
    @property
    def email_verified(self) -> bool:
        return self.email_verified_at is not None


class AdminAccountRead(AccountRead):
    status_changed_at: datetime | None
    terms_accepted_at: datetime | None
    terminated_clause: str | None = Field(
        None, description="The clause of the terms the account was terminated for breaking."
    )


class AccountPage(BaseModel):
    items: list[AdminAccountRead]
    total: int
    limit: int
    offset: int


class VerifyEmail(_Body):
    token: OneTimeToken


class Message(BaseModel):
    detail: str


class SessionCreate(_Body):
    email: Email
    password: GivenPassword
    totp_code: TotpCode | None = None
    recovery_code: RecoveryCodeText | None = Field(
        None, description="Instead of totp_code, when you have lost your authenticator app."
    )


class PasswordResetRequest(_Body):
    email: Email


class PasswordResetConfirm(_Body):
    token: OneTimeToken = Field(description="From the emailed link (its token parameter).")
    new_password: NewPassword


class RecoveryCodes(BaseModel):
    codes: list[str] = Field(
        description="Shown once: keep them somewhere safe. Each works once instead of a code."
    )


class RecoveryCodesLeft(BaseModel):
    remaining: int


class TotpConfirmed(AccountRead):
    recovery_codes: list[str] = Field(
        description="Ten recovery codes, shown once: each works once instead of a code from "
        "the app, if you lose it."
    )


class SessionCreated(BaseModel):
    token: str = Field(description="Send it as 'Authorization: Bearer <token>'; shown once.")
    expires_at: datetime


class PasswordChange(_Body):
    current_password: GivenPassword
    new_password: NewPassword


class TotpEnrolment(BaseModel):
    secret: str = Field(description="The shared secret, for apps that cannot scan a QR code.")
    otpauth_uri: str
    qr_svg: str = Field(description="The otpauth URI as an SVG QR code.")


class TotpCodeBody(_Body):
    code: TotpCode


class StatusChange(_Body):
    reason: Reason | None = None


class StatusReason(_Body):
    reason: Reason


class SessionRead(BaseModel):
    """One of your sessions. No address is kept, so none is shown."""

    id: int
    device: str = Field(
        description='Summarised from the browser\'s User-Agent: "Firefox on Linux".'
    )
    created_at: datetime
    last_used_at: datetime
    expires_at: datetime = Field(description="When it ends unless used again (idle or maximum).")
    current: bool = Field(description="The session this request was made with.")
