"""Two-factor sign-in (TOTP): enrolment, confirmation, turning it off, and checking a code."""

from __future__ import annotations

import hmac
import io
from enum import StrEnum

import pyotp
import segno
from sqlalchemy.ext.asyncio import AsyncSession

from burrow.control.accounts.repository import AccountRepository
from burrow.control.accounts.schemas import TotpEnrolment
from burrow.control.accounts.service.errors import TotpStateConflict, WrongTotpCode
from burrow.control.accounts.service.notifications import OwnerNotice, notify_owner
from burrow.control.accounts.service.recovery import accept_recovery_code, recovery_service
from burrow.control.accounts.service.throttling import LoginThrottle
from burrow.control.models import Account, utcnow
from burrow.control.runtime import Runtime
from burrow.control.security import hash_token


def _qr_svg(data: str) -> str:
    buffer = io.BytesIO()
    segno.make(data, error="m").save(buffer, kind="svg", scale=4, xmldecl=False)
    return buffer.getvalue().decode()


async def accept_totp(repo: AccountRepository, account: Account, code: str) -> bool:
    """A code of the previous, current or next 30 s step, each step usable once."""
    if account.totp_secret is None:
        return False
    totp = pyotp.TOTP(account.totp_secret)
    current = totp.timecode(utcnow())
    for step in (current - 1, current, current + 1):
        if hmac.compare_digest(totp.generate_otp(step), code):
            return await repo.claim_totp_step(account, step)
    return False


def looks_like_totp(code: str) -> bool:
    digits = code.replace(" ", "")
    return digits.isdigit() and len(digits) == 6


async def accept_second_factor(
    repo: AccountRepository, runtime: Runtime, account: Account, code: str
) -> bool:
    """A TOTP code (6 digits) or, failing that shape, one of the account's recovery codes."""
    if looks_like_totp(code):
        return await accept_totp(repo, account, code.replace(" ", ""))
    return await accept_recovery_code(repo, runtime, account, code)


class AdminSecondFactor(StrEnum):
    """Whether an administrator's session may administer: the one check the admin panel and
    the admin API share."""

    proved = "proved"
    # Two-factor sign-in is off for the account: turn it on, then sign in again.
    not_enrolled = "not_enrolled"
    # On, but this session was opened without a code (before it was turned on).
    not_proved = "not_proved"


class TwoFactorService:
    async def admin_second_factor(
        self, session: AsyncSession, account: Account, token: str
    ) -> AdminSecondFactor:
        if not account.totp_enabled:
            return AdminSecondFactor.not_enrolled
        found = await AccountRepository(session).get_session(hash_token(token))
        if found is None or found[0].second_factor_at is None:
            return AdminSecondFactor.not_proved
        return AdminSecondFactor.proved

    async def start_totp(
        self, session: AsyncSession, runtime: Runtime, account: Account
    ) -> TotpEnrolment:
        if account.totp_enabled:
            raise TotpStateConflict(
                "Two-factor sign-in is already on; turn it off first to enrol a new app."
            )
        secret = pyotp.random_base32()
        account.totp_secret = secret
        account.totp_last_step = None
        uri = pyotp.TOTP(secret).provisioning_uri(
            name=account.email, issuer_name=runtime.policy.provider.name
        )
        await session.flush()
        return TotpEnrolment(secret=secret, otpauth_uri=uri, qr_svg=_qr_svg(uri))

    def pending_enrolment(self, runtime: Runtime, account: Account) -> TotpEnrolment | None:
        """An enrolment started and not yet confirmed, to show its QR code again (the web)."""
        if account.totp_enabled or account.totp_secret is None:
            return None
        uri = pyotp.TOTP(account.totp_secret).provisioning_uri(
            name=account.email, issuer_name=runtime.policy.provider.name
        )
        return TotpEnrolment(secret=account.totp_secret, otpauth_uri=uri, qr_svg=_qr_svg(uri))

    async def confirm_totp(
        self, session: AsyncSession, runtime: Runtime, account: Account, code: str
    ) -> list[str]:
        if account.totp_enabled:
            raise TotpStateConflict("Two-factor sign-in is already on.")
        if account.totp_secret is None:
            raise TotpStateConflict(
                "Start the enrolment first (POST /api/v1/accounts/me/totp), then confirm with "
                "a code."
            )
        await self._require_code(session, runtime, account, code)
        account.totp_enabled = True
        notify_owner(session, runtime, account.email, OwnerNotice.two_factor_on)
        return await recovery_service.new_recovery_codes(session, account)

    async def disable_totp(
        self, session: AsyncSession, runtime: Runtime, account: Account, code: str
    ) -> None:
        if not account.totp_enabled:
            raise TotpStateConflict("Two-factor sign-in is not on.")
        await self._require_code(session, runtime, account, code)
        account.totp_enabled = False
        account.totp_secret = None
        account.totp_last_step = None
        notify_owner(session, runtime, account.email, OwnerNotice.two_factor_off)
        await AccountRepository(session).delete_recovery_codes(account.id)

    async def regenerate_recovery_codes(
        self, session: AsyncSession, runtime: Runtime, account: Account, code: str
    ) -> list[str]:
        """A new set on request, proven with a current TOTP code; the old set stops working."""
        if not account.totp_enabled:
            raise TotpStateConflict(
                "Recovery codes come with two-factor sign-in; turn it on first."
            )
        await self._require_code(session, runtime, account, code)
        return await recovery_service.new_recovery_codes(session, account)

    async def recovery_codes_left(self, session: AsyncSession, account_id: int) -> int:
        return await recovery_service.recovery_codes_left(session, account_id)

    async def _require_code(
        self, session: AsyncSession, runtime: Runtime, account: Account, code: str
    ) -> None:
        throttle = LoginThrottle(runtime)
        await throttle.attempt_signed_in(account.email)
        if not await accept_totp(AccountRepository(session), account, code):
            await throttle.failed(account.email, account.email)
            raise WrongTotpCode()


two_factor_service = TwoFactorService()
